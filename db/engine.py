"""Engine construction and the mapping of driver errors to the store's errors.

SQLite gets WAL, a busy timeout, foreign keys and ``synchronous=NORMAL`` on every
connection, and SQLAlchemy (not the sqlite3 module) emits ``BEGIN`` so that write
transactions can take the write lock up front (``BEGIN IMMEDIATE``): a deferred
transaction that reads and then writes can fail with "database is locked" without
waiting, while an immediate one waits for the busy timeout. PostgreSQL uses
psycopg 3 with a pre-pinged connection pool.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from sqlalchemy import URL, Engine, create_engine, event, exc, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry

from hyperprior.db.errors import (
    AlreadyExistsError,
    DatabaseBusyError,
    DatabaseUnavailableError,
    InvalidArgumentError,
    NotFoundError,
    SchemaOutOfDateError,
    StoreError,
)

__all__ = ["SQLITE_BEGIN_OPTION", "make_engine", "normalize_url", "translate_error"]

#: Connection execution option read by the SQLite ``begin`` hook: "DEFERRED" or "IMMEDIATE".
SQLITE_BEGIN_OPTION = "hyperprior_sqlite_begin"

_json_dumps = functools.partial(json.dumps, allow_nan=False, separators=(",", ":"))


def normalize_url(url: str | URL) -> URL:
    """Parse a database URL and pick the supported driver.

    ``postgres://`` and ``postgresql://`` become ``postgresql+psycopg://`` (psycopg 3
    is the only PostgreSQL driver installed).

    Args:
        url: A SQLAlchemy database URL.

    Returns:
        The parsed URL.

    Raises:
        InvalidArgumentError: When the URL cannot be parsed or names another backend.
    """
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except exc.ArgumentError as error:
        raise InvalidArgumentError(f"invalid database URL {str(url)!r}: {error}") from None
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise InvalidArgumentError(
            f"unsupported database {parsed.get_backend_name()!r}: use sqlite:/// or postgresql://"
        )
    return parsed


def make_engine(
    url: str | URL,
    *,
    echo: bool = False,
    pool_size: int = 10,
    max_overflow: int = 20,
    pool_timeout: float = 30.0,
    busy_timeout_ms: int = 30_000,
    connect_timeout_s: int = 10,
) -> Engine:
    """Create an engine configured for hyperprior.

    Args:
        url: Database URL, e.g. ``sqlite:///./hyperprior.db`` or
            ``postgresql+psycopg://user@host/db``. Query parameters are passed to the
            driver (``?options=-csearch_path%3Dmy_schema`` selects a schema on PostgreSQL).
        echo: Log every statement.
        pool_size: Connections kept open in the pool.
        max_overflow: Extra connections allowed above ``pool_size``.
        pool_timeout: Seconds to wait for a free connection before giving up.
        busy_timeout_ms: SQLite only: how long a writer waits for the write lock.
        connect_timeout_s: PostgreSQL only: how long to wait when connecting.

    Returns:
        A new engine. Nothing is connected until first use.
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _make_sqlite_engine(parsed, echo=echo, busy_timeout_ms=busy_timeout_ms)
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in parsed.query:
        connect_args["connect_timeout"] = connect_timeout_s
    return create_engine(
        parsed,
        echo=echo,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        pool_pre_ping=True,
        json_serializer=_json_dumps,
        connect_args=connect_args,
    )


def _make_sqlite_engine(url: URL, *, echo: bool, busy_timeout_ms: int) -> Engine:
    in_memory = url.database in (None, "", ":memory:")
    engine = create_engine(
        url,
        echo=echo,
        json_serializer=_json_dumps,
        connect_args={"timeout": busy_timeout_ms / 1000},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        # Take transaction control away from the sqlite3 module (see the begin hook).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if not in_memory:
                cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


# SQLite result codes that mean "somebody else holds the lock: try again".
_SQLITE_BUSY = ("SQLITE_BUSY", "SQLITE_LOCKED")
# PostgreSQL SQLSTATEs for serialization failure, deadlock, lock not available.
_PG_RETRYABLE = {"40001", "40P01", "55P03"}


def translate_error(error: BaseException) -> StoreError | None:
    """Map a SQLAlchemy/driver exception to the store's own error.

    Args:
        error: The exception raised by SQLAlchemy.

    Returns:
        The store error to raise instead, or None when the error is not one the store
        knows how to explain (a bug: let it propagate).
    """
    if isinstance(error, StoreError):
        return error
    if isinstance(error, exc.TimeoutError):
        return DatabaseUnavailableError(f"database connection pool exhausted: {error}")
    if not isinstance(error, exc.DBAPIError):
        return None
    orig = error.orig
    sqlstate: str | None = getattr(orig, "sqlstate", None)
    sqlite_name: str | None = getattr(orig, "sqlite_errorname", None)
    text = str(orig)
    first_line = text.strip().splitlines()[0] if text.strip() else type(orig).__name__

    if sqlite_name is not None and sqlite_name.startswith(_SQLITE_BUSY):
        return DatabaseBusyError(f"database is busy: {first_line}")
    if sqlite_name is None and "database is locked" in text:
        return DatabaseBusyError(f"database is busy: {first_line}")
    if sqlstate in _PG_RETRYABLE:
        return DatabaseBusyError(f"transaction conflict: {first_line}")

    if isinstance(error, exc.IntegrityError):
        if sqlstate == "23505" or "UNIQUE constraint failed" in text:
            return AlreadyExistsError(f"already exists: {first_line}")
        if sqlstate == "23503" or "FOREIGN KEY constraint failed" in text:
            return NotFoundError(f"referenced object does not exist: {first_line}")
        return InvalidArgumentError(f"constraint violated: {first_line}")

    if sqlstate in ("42P01", "42703") or "no such table" in text or "no such column" in text:
        return SchemaOutOfDateError(
            f"database schema is missing or out of date ({first_line}): run `hyperprior db upgrade`"
        )
    if error.connection_invalidated or isinstance(error, exc.InterfaceError):
        return DatabaseUnavailableError(f"database connection lost: {first_line}")
    if isinstance(error, exc.OperationalError):
        if sqlstate is None or sqlstate.startswith(("08", "53", "57P")):
            if sqlite_name is None or sqlite_name in ("SQLITE_CANTOPEN", "SQLITE_IOERR"):
                return DatabaseUnavailableError(f"database unavailable: {first_line}")
    return None
