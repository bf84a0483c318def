"""Schema migrations: Alembic driven from code, with the scripts shipped in the package.

No ``alembic.ini`` is needed at run time. For developers, a new revision is made with
`revision` (autogenerate against a database at head), then reviewed by hand.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Connection, Engine, exc

from hyperprior.db.engine import make_engine, translate_error
from hyperprior.db.errors import SchemaOutOfDateError

__all__ = [
    "alembic_config",
    "current_revision",
    "head_revision",
    "is_at_head",
    "revision",
    "upgrade",
    "verify_schema",
]

SCRIPT_LOCATION = "hyperprior.db:migrations"
UPGRADE_HINT = "run `hyperprior db upgrade`"


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """Build the Alembic configuration in code.

    Args:
        connection: Connection the migrations run on.
        url: Database URL, used when no connection is given (offline SQL, tools).

    Returns:
        An Alembic `Config` pointing at the packaged scripts.
    """
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


@functools.cache
def head_revision() -> str:
    """Return the revision id of the newest migration shipped with this code."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships migrations
        raise RuntimeError("no migrations found in db/migrations")
    return head


@contextmanager
def _engine(engine_or_url: Engine | str | URL) -> Iterator[Engine]:
    if isinstance(engine_or_url, Engine):
        yield engine_or_url
        return
    engine = make_engine(engine_or_url)
    try:
        yield engine
    finally:
        engine.dispose()


def _raise_translated(error: Exception) -> None:
    translated = translate_error(error)
    if translated is not None:
        raise translated from error


def upgrade(engine_or_url: Engine | str | URL, revision: str = "head") -> None:
    """Migrate the database schema to ``revision`` (default: head), in one transaction.

    Args:
        engine_or_url: The database (an engine is used as is, a URL gets a
            temporary engine).
        revision: Target revision.

    Raises:
        DatabaseUnavailableError: When the database cannot be reached.
    """
    with _engine(engine_or_url) as engine:
        try:
            with engine.begin() as connection:
                command.upgrade(alembic_config(connection), revision)
        except exc.SQLAlchemyError as error:
            _raise_translated(error)
            raise


def current_revision(engine_or_url: Engine | str | URL) -> str | None:
    """Return the schema revision the database is at (None for an empty database).

    Raises:
        DatabaseUnavailableError: When the database cannot be reached.
    """
    with _engine(engine_or_url) as engine:
        try:
            with engine.connect() as connection:
                return MigrationContext.configure(connection).get_current_revision()
        except exc.SQLAlchemyError as error:
            _raise_translated(error)
            raise


def is_at_head(engine_or_url: Engine | str | URL) -> bool:
    """Return whether the database schema is at the newest shipped revision."""
    return current_revision(engine_or_url) == head_revision()


def verify_schema(engine_or_url: Engine | str | URL) -> None:
    """Raise unless the schema is at head, naming the command that fixes it.

    Raises:
        SchemaOutOfDateError: When the schema is missing, older or newer than the code.
        DatabaseUnavailableError: When the database cannot be reached.
    """
    current = current_revision(engine_or_url)
    head = head_revision()
    if current == head:
        return
    if current is None:
        raise SchemaOutOfDateError(
            f"the database has no hyperprior schema (expected revision {head}): {UPGRADE_HINT}"
        )
    script = ScriptDirectory.from_config(alembic_config())
    try:
        known = script.get_revision(current) is not None
    except Exception:  # alembic raises several types for unknown ids
        known = False
    if not known:
        raise SchemaOutOfDateError(
            f"the database schema is at revision {current}, which this version of hyperprior "
            f"does not know (expected {head}); was it upgraded by a newer version?"
        )
    raise SchemaOutOfDateError(
        f"the database schema is at revision {current}, expected {head}: {UPGRADE_HINT}"
    )


def revision(engine_or_url: Engine | str | URL, message: str) -> None:
    """Autogenerate a new migration script against a database at head (developers only).

    Args:
        engine_or_url: A database already upgraded to head.
        message: The revision message.
    """
    with _engine(engine_or_url) as engine, engine.begin() as connection:
        command.revision(alembic_config(connection), message=message, autogenerate=True)
