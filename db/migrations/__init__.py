"""Alembic migrations of the hyperprior schema (run through `db.migrate`)."""
