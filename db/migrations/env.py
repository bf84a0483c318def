"""Alembic environment, configured programmatically by `hyperprior.db.migrate` (no alembic.ini).

`hyperprior.db.migrate` passes an open connection in ``config.attributes["connection"]``; the
``sqlalchemy.url`` main option is the fallback (and the only input in offline mode).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from hyperprior.db.engine import make_engine
from hyperprior.db.models import metadata

config = context.config


def _configure_and_run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things: later migrations rebuild tables in batch mode.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    """Emit SQL for the configured URL without connecting."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on the given connection (or a new one from the URL)."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("hyperprior.db.migrate must pass a connection or set sqlalchemy.url")
    engine = make_engine(url)
    try:
        with engine.begin() as new_connection:
            _configure_and_run(new_connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
