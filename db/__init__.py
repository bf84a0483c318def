"""Storage for hyperprior: ORM, engine, migrations and the store API."""
