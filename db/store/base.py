"""The store's plumbing: one transaction helper, its retry, and the helpers every part
shares (tables, chunked IN lists, ids, page cursors).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Table, exc
from sqlalchemy.dialects import postgresql, sqlite

from hyperprior.db.engine import SQLITE_BEGIN_OPTION, translate_error
from hyperprior.db.errors import DatabaseBusyError, InvalidArgumentError
from hyperprior.db.models import (
    SqlApiKey,
    SqlDataset,
    SqlJob,
    SqlLock,
    SqlRun,
    SqlSurrogate,
    utcnow,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

_datasets: Table = SqlDataset.__table__  # type: ignore[assignment]
_runs: Table = SqlRun.__table__  # type: ignore[assignment]
_surrogates: Table = SqlSurrogate.__table__  # type: ignore[assignment]
_jobs: Table = SqlJob.__table__  # type: ignore[assignment]
_api_keys: Table = SqlApiKey.__table__  # type: ignore[assignment]
_locks: Table = SqlLock.__table__  # type: ignore[assignment]

# Bound parameters per IN (...) list; well below SQLite's and PostgreSQL's limits.
_IN_CHUNK = 2000
_MAX_PAGE = 1000


def _chunks(items: Sequence[T], size: int = _IN_CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _uuid(value: uuid.UUID | str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InvalidArgumentError(f"invalid id {value!r}: not a UUID") from None


def _encode_cursor(created_at: dt.datetime, key: str | int) -> str:
    raw = json.dumps([created_at.isoformat(), key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[dt.datetime, Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        stamp, key = json.loads(raw)
        created_at = dt.datetime.fromisoformat(stamp)
    except (ValueError, TypeError, binascii.Error):
        raise InvalidArgumentError(f"invalid cursor {cursor!r}") from None
    return created_at, key


class StoreBase:
    """The plumbing every part of :class:`hyperprior.db.store.Store` runs on: the engine,
    the clock, and one transaction helper with a bounded retry."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], dt.datetime] = utcnow,
        max_attempts: int = 8,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._max_attempts = max(1, max_attempts)
        self._backend = engine.dialect.name
        self._is_sqlite = self._backend == "sqlite"
        # SQLite has one writer at a time; queueing this process's writers on a lock
        # is cheaper and fairer than having them poll the database's busy handler.
        self._sqlite_write_lock = threading.Lock() if self._is_sqlite else None

    # ------------------------------------------------------------------ plumbing

    @property
    def engine(self) -> Engine:
        """The engine this store runs on."""
        return self._engine

    @property
    def backend(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._backend

    def _insert(self, table: Table) -> Any:
        """A dialect-specific INSERT supporting ``on_conflict_do_*``."""
        if self._is_sqlite:
            return sqlite.insert(table)
        return postgresql.insert(table)

    @contextmanager
    def _transaction(self, *, write: bool = False) -> Iterator[Connection]:
        """Run the body in one transaction: commit on success, roll back on error.

        Driver errors are translated to `hyperprior.db.errors` (unknown ones propagate as is).

        Args:
            write: The transaction writes. On SQLite it then takes the write lock at
                BEGIN (``BEGIN IMMEDIATE``), so it waits for other writers instead of
                failing when it upgrades from reading to writing.
        """
        lock = self._sqlite_write_lock if write else None
        if lock is not None:
            lock.acquire()
        try:
            with self._engine.connect() as conn:
                if write and self._is_sqlite:
                    conn.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
                with conn.begin():
                    yield conn
        except (exc.DBAPIError, exc.TimeoutError) as error:
            translated = translate_error(error)
            if translated is None:
                raise
            raise translated from error
        finally:
            if lock is not None:
                lock.release()

    def _run(self, fn: Callable[[Connection], T], *, write: bool = False) -> T:
        """Call ``fn`` in a transaction, retrying on lock/deadlock/serialization errors."""
        for attempt in range(1, self._max_attempts + 1):
            try:
                with self._transaction(write=write) as conn:
                    return fn(conn)
            except DatabaseBusyError as error:
                if attempt == self._max_attempts:
                    raise DatabaseBusyError(
                        f"{error.message} (gave up after {attempt} attempts)"
                    ) from error
                delay = min(1.0, 0.02 * 2**attempt) * (0.5 + random.random())
                logger.debug("retrying transaction after %s (attempt %d)", error, attempt)
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def ping(self) -> None:
        """Check that the database answers.

        Raises:
            DatabaseUnavailableError: When it does not.
        """
        with self._transaction() as conn:
            conn.exec_driver_sql("SELECT 1")

    @staticmethod
    def _check_limit(limit: int) -> int:
        if not 1 <= limit <= _MAX_PAGE:
            raise InvalidArgumentError(f"limit must be between 1 and {_MAX_PAGE}, got {limit}")
        return limit
