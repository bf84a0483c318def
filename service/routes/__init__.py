"""HTTP routes: thin functions from a schema, through the store, to a schema."""
