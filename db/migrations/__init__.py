"""Alembic migrations of the hyperprior schema (run through `hyperprior.db.migrate`)."""
