"""The store: every read and write of the run history goes through `Store`.

The store takes and returns the frozen value objects of `hyperprior.db.entities` (re-exported
here), never ORM rows. All statements are SQLAlchemy Core on a connection obtained
through one transaction helper (`Store._transaction`), which commits or rolls back
and maps driver errors to `hyperprior.db.errors`; `Store._run` adds a bounded retry for lock,
deadlock and serialization failures.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import logging
import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Connection,
    DateTime,
    Engine,
    Row,
    String,
    Table,
    Text,
    and_,
    cast,
    delete,
    exc,
    func,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from hyperprior.db.engine import SQLITE_BEGIN_OPTION, translate_error
from hyperprior.db.entities import (
    ApiKey,
    Dataset,
    DatasetsPage,
    DatasetSpec,
    IngestResult,
    Job,
    NewRun,
    Run,
    RunsPage,
    Stats,
    Surrogate,
    Timeline,
    surrogate_key,
)
from hyperprior.db.errors import (
    AlreadyExistsError,
    ConflictError,
    DatabaseBusyError,
    InvalidArgumentError,
    InvalidStateError,
    NotFoundError,
    UnknownDatasetError,
)
from hyperprior.db.models import (
    DIRECTIONS,
    JOB_KINDS,
    JOB_STATUSES,
    RUN_SOURCES,
    RUN_STATUSES,
    SURROGATE_STATUSES,
    TASKS,
    SqlApiKey,
    SqlDataset,
    SqlJob,
    SqlLock,
    SqlRun,
    SqlSurrogate,
    utcnow,
)
from hyperprior.vocabulary import canonical_json

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ApiKey",
    "Dataset",
    "DatasetSpec",
    "DatasetsPage",
    "IngestResult",
    "Job",
    "NewRun",
    "Run",
    "RunsPage",
    "Stats",
    "Store",
    "Surrogate",
    "Timeline",
]

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
_PG_ARRAY_COLUMNS = {
    "id": "text",
    "dataset_id": "int4",
    "family": "text",
    "metric": "text",
    "direction": "text",
    "score": "float8",
    "fidelity": "float8",
    "cost_seconds": "float8",
    "status": "text",
    "error": "text",
    "source": "text",
    "content_sha": "text",
}
_PG_INSERT_RUNS = (
    "INSERT INTO runs ("
    + ", ".join([*_PG_ARRAY_COLUMNS, "config", "metrics", "created_at"])
    + ") SELECT "
    + ", ".join(f"u.{name}" for name in _PG_ARRAY_COLUMNS)
    + ", u.config_json::jsonb, u.metrics_json::jsonb, %(created_at)s FROM unnest("
    + ", ".join(f"%({name})b::{kind}[]" for name, kind in _PG_ARRAY_COLUMNS.items())
    + ", %(config_json)b::text[], %(metrics_json)b::text[]) AS u("
    + ", ".join([*_PG_ARRAY_COLUMNS, "config_json", "metrics_json"])
    + ") ORDER BY u.id ON CONFLICT (id) DO NOTHING RETURNING id"
)
_SQLITE_INSERT_COLUMNS = (*_PG_ARRAY_COLUMNS, "config_json", "metrics_json", "created_at")
_SQLITE_INSERT_RUNS = (
    "INSERT INTO runs ("
    + ", ".join([*_PG_ARRAY_COLUMNS, "config", "metrics", "created_at"])
    + ") VALUES ("
    + ", ".join("?" for _ in _SQLITE_INSERT_COLUMNS)
    + ")"
)
_JOB_TRANSITIONS = {
    "queued": {"queued", "running", "succeeded", "failed", "cancelled"},
    "running": {"running", "succeeded", "failed", "cancelled"},
    "succeeded": set(),
    "failed": set(),
    "cancelled": set(),
}
# Final statuses are those a job cannot leave.
_FINAL_JOB_STATUSES = tuple(s for s, allowed in _JOB_TRANSITIONS.items() if not allowed)




def _chunks(items: Sequence[T], size: int = _IN_CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _as_count(name: str, value: Any, *, minimum: int) -> int:
    if not _is_number(value) or not math.isfinite(value) or value != int(value):
        raise InvalidArgumentError(f"meta_features.{name} must be an integer, got {value!r}")
    if value < minimum:
        raise InvalidArgumentError(f"meta_features.{name} must be >= {minimum}, got {value!r}")
    return int(value)


#: At most this many metrics per run (every metric of a task is about ten).
MAX_RUN_METRICS = 64


def _check_metrics(metrics: Any) -> dict[str, float] | None:
    """A run's metrics map, validated: string names, finite numbers."""
    if metrics is None:
        return None
    if not isinstance(metrics, Mapping):
        raise InvalidArgumentError("metrics must be a mapping of metric name to number")
    if len(metrics) > MAX_RUN_METRICS:
        raise InvalidArgumentError(
            f"metrics may hold at most {MAX_RUN_METRICS} entries, got {len(metrics)}"
        )
    checked: dict[str, float] = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or not 1 <= len(name) <= 64:
            raise InvalidArgumentError(f"metric names must be 1-64 characters, got {name!r}")
        if not _is_number(value) or not math.isfinite(value):
            raise InvalidArgumentError(f"metrics[{name!r}] must be a finite number, got {value!r}")
        checked[name] = float(value)
    return checked


def _fingerprint_value(value: float | int | None) -> float | None:
    # Ints and floats alike become floats rounded to 10 significant digits, so that
    # 150 and 150.0 (or values that went through float32) give the same fingerprint.
    if value is None:
        return None
    return float(f"{float(value):.10g}")


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


def _to_dataset(row: Row[Any] | Mapping[str, Any]) -> Dataset:
    m = row._mapping if isinstance(row, Row) else row
    return Dataset(
        id=m["id"],
        name=m["name"],
        fingerprint=m["fingerprint"],
        task=m["task"],
        n_rows=m["n_rows"],
        n_features=m["n_features"],
        n_classes=m["n_classes"],
        meta_features=dict(m["meta_features"]),
        created_at=m["created_at"],
    )


def _to_run(row: Row[Any]) -> Run:
    m = row._mapping
    return Run(
        id=uuid.UUID(m["id"]),
        dataset_id=m["dataset_id"],
        family=m["family"],
        config=m["config"],
        metric=m["metric"],
        direction=m["direction"],
        score=m["score"],
        fidelity=m["fidelity"],
        cost_seconds=m["cost_seconds"],
        status=m["status"],
        error=m["error"],
        source=m["source"],
        content_sha=m["content_sha"],
        created_at=m["created_at"],
        metrics=None if m["metrics"] is None else dict(m["metrics"]),
    )


def _to_surrogate(row: Row[Any]) -> Surrogate:
    m = row._mapping
    return Surrogate(
        id=m["id"],
        family=m["family"],
        created_at=m["created_at"],
        n_runs=m["n_runs"],
        metrics=dict(m["metrics"]),
        status=m["status"],
        meta=dict(m["meta"]),
        sha256=m["sha256"],
        model_text=m.get("model_text"),
        target=m["target"],
    )


def _to_job(row: Row[Any]) -> Job:
    m = row._mapping
    return Job(
        id=uuid.UUID(m["id"]),
        kind=m["kind"],
        status=m["status"],
        progress=dict(m["progress"]),
        request=dict(m["request"]),
        result=None if m["result"] is None else dict(m["result"]),
        error=m["error"],
        owner=m["owner_key_id"],
        created_at=m["created_at"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        heartbeat_at=m["heartbeat_at"],
    )


def _to_api_key(row: Row[Any]) -> ApiKey:
    m = row._mapping
    return ApiKey(
        id=m["id"],
        name=m["name"],
        key_hash=m["key_hash"],
        scopes=tuple(m["scopes"]),
        created_at=m["created_at"],
        revoked_at=m["revoked_at"],
        last_used_at=m["last_used_at"],
    )


class _PreparedRun:
    """A validated run, with everything that needs no database already computed."""

    __slots__ = ("body_digest", "dataset_id", "fingerprint", "index", "row")

    def __init__(
        self,
        index: int,
        row: dict[str, Any],
        body_digest: bytes,
        fingerprint: str | None,
        dataset_id: int | None,
    ) -> None:
        self.index = index
        self.row = row
        self.body_digest = body_digest
        self.fingerprint = fingerprint
        self.dataset_id = dataset_id


class Store:
    """Run-history store on SQLite or PostgreSQL.

    Contract:

    * Thread safe: one instance may be shared by all threads of a process (each
      call checks a connection out of the engine's pool). Several processes may use
      the same database concurrently.
    * Every call is one transaction: it fully happens or not at all. Lock, deadlock
      and serialization failures are retried a bounded number of times, then raised
      as `DatabaseBusyError`.
    * Results are frozen dataclasses holding copies: mutating one never changes the
      database or another caller's result.
    * ``get_*`` raises `NotFoundError` when the object is missing, ``find_*`` returns
      None. Driver errors never escape: they become `hyperprior.db.errors` exceptions.
    * Timestamps are aware UTC datetimes.

    Args:
        engine: Engine from `hyperprior.db.engine.make_engine` (its schema at head).
        clock: Source of "now" (tests inject a fake one to age locks and jobs).
        max_attempts: Attempts per transaction on retryable conflicts.
    """

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

    # ------------------------------------------------------------------ datasets

    @staticmethod
    def dataset_fingerprint(spec: DatasetSpec) -> str:
        """Return the stable identity of a dataset description.

        It is the sha256 of the canonical JSON of name, task and the meta-features
        sorted by name, numbers as floats rounded to 10 significant digits.

        Raises:
            InvalidArgumentError: When a meta-feature is not a finite number or None.
        """
        return Store._dataset_row(spec, now=None)["fingerprint"]

    @staticmethod
    def _dataset_row(spec: DatasetSpec, *, now: dt.datetime | None) -> dict[str, Any]:
        """Validate a dataset description and build its row (with fingerprint)."""
        name, task, meta = spec.name, spec.task, spec.meta_features
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise InvalidArgumentError(f"dataset name must be 1-200 characters, got {name!r}")
        if task not in TASKS:
            raise InvalidArgumentError(
                f"dataset {name!r}: task must be one of {', '.join(TASKS)}, got {task!r}"
            )
        if not isinstance(meta, Mapping):
            raise InvalidArgumentError(f"dataset {name!r}: meta_features must be a mapping")
        canonical: dict[str, float | None] = {}
        for key in sorted(meta):
            value = meta[key]
            if not isinstance(key, str):
                raise InvalidArgumentError(f"dataset {name!r}: meta-feature names must be strings")
            if value is not None and (not _is_number(value) or not math.isfinite(value)):
                raise InvalidArgumentError(
                    f"dataset {name!r}: meta_features.{key} must be a finite number or null, "
                    f"got {value!r}"
                )
            canonical[key] = _fingerprint_value(value)
        for required in ("n_rows", "n_features"):
            if meta.get(required) is None:
                raise InvalidArgumentError(
                    f"dataset {name!r}: meta_features.{required} is required"
                )
        try:
            n_rows = _as_count("n_rows", meta["n_rows"], minimum=1)
            n_features = _as_count("n_features", meta["n_features"], minimum=1)
            n_classes_raw = meta.get("n_classes")
            n_classes = (
                None if n_classes_raw is None else _as_count("n_classes", n_classes_raw, minimum=2)
            )
        except InvalidArgumentError as error:
            raise InvalidArgumentError(f"dataset {name!r}: {error}") from None
        payload = {"name": name, "task": task, "meta_features": canonical}
        fingerprint = hashlib.sha256(canonical_json(payload).encode()).hexdigest()
        return {
            "name": name,
            "fingerprint": fingerprint,
            "task": task,
            "n_rows": n_rows,
            "n_features": n_features,
            "n_classes": n_classes,
            "meta_features": dict(meta),
            "created_at": now,
        }

    def _insert_datasets(self, conn: Connection, rows: Iterable[dict[str, Any]]) -> None:
        # Sorted by fingerprint, so that concurrent batches lock the same unique keys
        # in the same order and cannot deadlock.
        ordered = sorted(rows, key=lambda r: r["fingerprint"])
        if ordered:
            stmt = self._insert(_datasets).on_conflict_do_nothing(index_elements=["fingerprint"])
            conn.execute(stmt, ordered)

    def _dataset_ids_by_fingerprint(
        self, conn: Connection, fingerprints: Sequence[str]
    ) -> dict[str, int]:
        found: dict[str, int] = {}
        for chunk in _chunks(fingerprints):
            stmt = select(_datasets.c.fingerprint, _datasets.c.id).where(
                _datasets.c.fingerprint.in_(chunk)
            )
            found.update({fp: id_ for fp, id_ in conn.execute(stmt)})
        return found

    def ensure_dataset(self, spec: DatasetSpec) -> Dataset:
        """Return the dataset with this description, creating it on first use.

        Raises:
            InvalidArgumentError: When the description is invalid.
        """
        row = self._dataset_row(spec, now=self._clock())

        def work(conn: Connection) -> Dataset:
            self._insert_datasets(conn, [row])
            stmt = select(_datasets).where(_datasets.c.fingerprint == row["fingerprint"])
            return _to_dataset(conn.execute(stmt).one())

        return self._run(work, write=True)

    def find_dataset(self, dataset_id: int) -> Dataset | None:
        """Return the dataset with this id, or None."""

        def work(conn: Connection) -> Dataset | None:
            row = conn.execute(select(_datasets).where(_datasets.c.id == dataset_id)).first()
            return None if row is None else _to_dataset(row)

        return self._run(work)

    def get_dataset(self, dataset_id: int) -> Dataset:
        """Return the dataset with this id.

        Raises:
            NotFoundError: When there is none.
        """
        found = self.find_dataset(dataset_id)
        if found is None:
            raise NotFoundError(f"dataset {dataset_id} not found")
        return found

    def find_dataset_by_fingerprint(self, fingerprint: str) -> Dataset | None:
        """Return the dataset with this fingerprint, or None."""

        def work(conn: Connection) -> Dataset | None:
            stmt = select(_datasets).where(_datasets.c.fingerprint == fingerprint)
            row = conn.execute(stmt).first()
            return None if row is None else _to_dataset(row)

        return self._run(work)

    def list_datasets(
        self,
        *,
        task: str | None = None,
        name: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> DatasetsPage:
        """List datasets, oldest first, one page at a time.

        Args:
            task: Only datasets of this task.
            name: Only datasets with exactly this name.
            cursor: ``next_cursor`` of the previous page.
            limit: Page size (1..1000).

        Raises:
            InvalidArgumentError: On a malformed cursor or limit.
        """
        limit = self._check_limit(limit)
        conds: list[ColumnElement[bool]] = []
        if task is not None:
            conds.append(_datasets.c.task == task)
        if name is not None:
            conds.append(_datasets.c.name == name)
        after = None
        if cursor is not None:
            _, last_id = _decode_cursor(cursor)
            if not isinstance(last_id, int):
                raise InvalidArgumentError(f"invalid cursor {cursor!r}")
            after = _datasets.c.id > last_id

        def work(conn: Connection) -> DatasetsPage:
            count = conn.execute(
                select(func.count()).select_from(_datasets).where(*conds)
            ).scalar_one()
            stmt = select(_datasets).where(*conds).order_by(_datasets.c.id).limit(limit + 1)
            if after is not None:
                stmt = stmt.where(after)
            rows = conn.execute(stmt).all()
            data = [_to_dataset(r) for r in rows[:limit]]
            next_cursor = (
                _encode_cursor(data[-1].created_at, data[-1].id) if len(rows) > limit else None
            )
            return DatasetsPage(data=data, count=count, next_cursor=next_cursor)

        return self._run(work)

    # ------------------------------------------------------------------ runs

    def _prepare_runs(
        self, runs: Sequence[NewRun]
    ) -> tuple[list[_PreparedRun], dict[str, dict[str, Any]]]:
        """Validate runs and compute what needs no database (outside any lock).

        Returns:
            The prepared runs and the rows of their inline datasets by fingerprint.
        """
        # Keyed by id() of the spec objects (alive in ``runs`` meanwhile) and by value.
        spec_cache: dict[Any, dict[str, Any]] = {}
        prepared: list[_PreparedRun] = []
        for index, run in enumerate(runs):
            run_id = run.id
            try:
                run_key = str(_uuid(run_id))
                prepared.append(self._prepare_run(index, run_key, run, spec_cache))
            except InvalidArgumentError as error:
                raise InvalidArgumentError(f"runs[{index}] (id {run_id}): {error}") from None
        dataset_rows = {row["fingerprint"]: row for row in spec_cache.values()}
        return prepared, dataset_rows

    def _prepare_run(
        self, index: int, run_key: str, run: NewRun, spec_cache: dict[Any, dict[str, Any]]
    ) -> _PreparedRun:
        if (run.dataset is None) == (run.dataset_id is None):
            raise InvalidArgumentError("exactly one of dataset and dataset_id must be given")
        if run.direction not in DIRECTIONS:
            raise InvalidArgumentError(
                f"direction must be one of {DIRECTIONS}, got {run.direction!r}"
            )
        if run.status not in RUN_STATUSES:
            raise InvalidArgumentError(f"status must be one of {RUN_STATUSES}, got {run.status!r}")
        if run.source not in RUN_SOURCES:
            raise InvalidArgumentError(f"source must be one of {RUN_SOURCES}, got {run.source!r}")
        if not run.family or not isinstance(run.family, str) or len(run.family) > 64:
            raise InvalidArgumentError(f"family must be 1-64 characters, got {run.family!r}")
        if not run.metric or not isinstance(run.metric, str) or len(run.metric) > 64:
            raise InvalidArgumentError(f"metric must be 1-64 characters, got {run.metric!r}")
        score = run.score
        if score is None:
            if run.status != "failed":
                raise InvalidArgumentError("score may be null only when status is 'failed'")
        elif not _is_number(score) or not math.isfinite(score):
            raise InvalidArgumentError(f"score must be a finite number, got {score!r}")
        else:
            score = float(score)
        fidelity = run.fidelity
        if not _is_number(fidelity) or not 0 < fidelity <= 1:
            raise InvalidArgumentError(f"fidelity must be in (0, 1], got {fidelity!r}")
        cost = run.cost_seconds
        if not _is_number(cost) or not math.isfinite(cost) or cost < 0:
            raise InvalidArgumentError(f"cost_seconds must be a finite number >= 0, got {cost!r}")
        if not isinstance(run.config, Mapping):
            raise InvalidArgumentError("config must be a mapping")
        config = dict(run.config)
        try:
            config_json = canonical_json(config)
        except (TypeError, ValueError) as error:
            raise InvalidArgumentError(
                f"config must be JSON with string keys and finite numbers: {error}"
            ) from None
        metrics = _check_metrics(run.metrics)
        # repr of a tuple of str/float/None is canonical and cheaper than JSON.
        body = repr(
            (
                run.family,
                run.metric,
                run.direction,
                score,
                float(fidelity),
                float(cost),
                run.status,
                run.error,
                run.source,
            )
        )
        body_digest = hashlib.sha256(f"{body}\x00{config_json}".encode()).digest()
        fingerprint = None
        if run.dataset is not None:
            fingerprint = self._cached_dataset_row(run.dataset, spec_cache)["fingerprint"]
        row = {
            "id": run_key,
            "family": run.family,
            "config": config,
            "config_json": config_json,
            "metrics_json": None if metrics is None else canonical_json(metrics),
            "metric": run.metric,
            "direction": run.direction,
            "score": score,
            "fidelity": float(fidelity),
            "cost_seconds": float(cost),
            "status": run.status,
            "error": run.error,
            "source": run.source,
        }
        return _PreparedRun(index, row, body_digest, fingerprint, run.dataset_id)

    def _cached_dataset_row(
        self, spec: DatasetSpec, cache: dict[Any, dict[str, Any]]
    ) -> dict[str, Any]:
        """`_dataset_row`, computed once per distinct description in a batch."""
        row = cache.get(id(spec))
        if row is not None:
            return row
        try:
            key: Any = (spec.name, spec.task, tuple(sorted(spec.meta_features.items())))
            row = cache.get(key)
        except (TypeError, AttributeError):  # unhashable or malformed: validate below
            key = None
        if row is None:
            row = self._dataset_row(spec, now=None)
            if key is not None:
                cache[key] = row
        cache[id(spec)] = row
        return row

    def ingest_runs(self, runs: Sequence[NewRun]) -> IngestResult:
        """Insert runs, idempotently and all-or-nothing.

        A run whose id is already stored with the same content (dataset, family,
        config, metric, direction, score, fidelity, cost, status, error, source) is
        counted as a duplicate and left alone; with different content the whole call
        fails with `ConflictError`. Inline datasets are created on first use.

        Args:
            runs: The runs to insert (a batch of up to a few thousand is efficient).

        Returns:
            How many runs were inserted and how many were already there.

        Raises:
            InvalidArgumentError: A run is malformed (message names the run).
            UnknownDatasetError: A run's ``dataset_id`` does not exist.
            ConflictError: A run id exists with different content (message names it).
        """
        if not runs:
            return IngestResult(inserted=0, duplicates=0)
        prepared, dataset_rows = self._prepare_runs(runs)
        return self._run(lambda conn: self._ingest(conn, prepared, dataset_rows), write=True)

    def _resolve_datasets(
        self,
        conn: Connection,
        prepared: Sequence[_PreparedRun],
        dataset_rows: Mapping[str, dict[str, Any]],
        now: dt.datetime,
    ) -> tuple[dict[str, int], dict[int, str]]:
        """Map fingerprints to ids (creating datasets) and check referenced ids."""
        referenced: dict[int, _PreparedRun] = {}
        for run in prepared:
            if run.dataset_id is not None and run.dataset_id not in referenced:
                referenced[run.dataset_id] = run
        fingerprint_of: dict[int, str] = {}
        if referenced:
            ids = list(referenced)
            for chunk in _chunks(ids):
                stmt = select(_datasets.c.id, _datasets.c.fingerprint).where(
                    _datasets.c.id.in_(chunk)
                )
                fingerprint_of.update({id_: fp for id_, fp in conn.execute(stmt)})
            for dataset_id, run in referenced.items():
                if dataset_id not in fingerprint_of:
                    raise UnknownDatasetError(
                        run_index=run.index, run_id=run.row["id"], dataset_id=dataset_id
                    )
        id_of: dict[str, int] = {}
        if dataset_rows:
            wanted = list(dataset_rows)
            id_of = self._dataset_ids_by_fingerprint(conn, wanted)
            missing = [fp for fp in wanted if fp not in id_of]
            if missing:
                self._insert_datasets(
                    conn, [{**dataset_rows[fp], "created_at": now} for fp in missing]
                )
                id_of.update(self._dataset_ids_by_fingerprint(conn, missing))
        return id_of, fingerprint_of

    def _ingest(
        self,
        conn: Connection,
        prepared: Sequence[_PreparedRun],
        dataset_rows: Mapping[str, dict[str, Any]],
    ) -> IngestResult:
        now = self._clock()
        id_of, fingerprint_of = self._resolve_datasets(conn, prepared, dataset_rows, now)
        unique: dict[str, dict[str, Any]] = {}
        for run in prepared:
            if run.fingerprint is not None:
                fingerprint = run.fingerprint
                dataset_id = id_of[fingerprint]
            else:
                assert run.dataset_id is not None
                dataset_id = run.dataset_id
                fingerprint = fingerprint_of[dataset_id]
            content_sha = hashlib.sha256(fingerprint.encode() + run.body_digest).hexdigest()
            run_id = run.row["id"]
            seen = unique.get(run_id)
            if seen is not None:
                if seen["content_sha"] != content_sha:
                    raise ConflictError(
                        f"run {run_id} appears twice in the batch with different content "
                        f"(runs[{run.index}])",
                        run_id=run_id,
                    )
                continue
            unique[run_id] = {
                **run.row,
                "dataset_id": dataset_id,
                "content_sha": content_sha,
                "created_at": now,
            }
        # Sorted by id so concurrent batches take row locks in the same order.
        rows = [unique[key] for key in sorted(unique)]
        if self._is_sqlite:
            stored = self._stored_shas(conn, [row["id"] for row in rows])
            self._check_conflicts(stored, unique)
            new_rows = [row for row in rows if row["id"] not in stored]
            self._insert_new_runs_sqlite(conn, new_rows, now)
            n_inserted = len(new_rows)
        else:
            # Concurrent transactions may insert the same ids: let the unique index
            # decide, then compare the content of the runs that were already there.
            inserted_ids = self._insert_runs_postgres(conn, rows, now)
            rest = [row["id"] for row in rows if row["id"] not in inserted_ids]
            self._check_conflicts(self._stored_shas(conn, rest), unique)
            n_inserted = len(inserted_ids)
        return IngestResult(inserted=n_inserted, duplicates=len(prepared) - n_inserted)

    def _stored_shas(self, conn: Connection, run_ids: Sequence[str]) -> dict[str, str]:
        stored: dict[str, str] = {}
        for chunk in _chunks(run_ids):
            stmt = select(_runs.c.id, _runs.c.content_sha).where(_runs.c.id.in_(chunk))
            stored.update({run_id: sha for run_id, sha in conn.execute(stmt)})
        return stored

    @staticmethod
    def _check_conflicts(stored: Mapping[str, str], rows: Mapping[str, dict[str, Any]]) -> None:
        for run_id in sorted(stored):
            if stored[run_id] != rows[run_id]["content_sha"]:
                raise ConflictError(
                    f"run {run_id} already exists with different content", run_id=run_id
                )

    def _insert_new_runs_sqlite(
        self, conn: Connection, rows: Sequence[dict[str, Any]], now: dt.datetime
    ) -> None:
        # The transaction holds SQLite's write lock (BEGIN IMMEDIATE), so ids checked
        # absent stay absent. The driver's own executemany over pre-serialised values
        # keeps the time spent holding that lock short.
        stamp = now.astimezone(dt.UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
        params = [
            tuple(row[name] for name in _SQLITE_INSERT_COLUMNS[:-1]) + (stamp,) for row in rows
        ]
        if params:
            conn.exec_driver_sql(_SQLITE_INSERT_RUNS, params)

    def _insert_runs_postgres(
        self, conn: Connection, rows: Sequence[dict[str, Any]], now: dt.datetime
    ) -> set[str]:
        # One short statement with one array per column. A multi-row VALUES statement
        # has ~14 parameters per run, and psycopg re-parses such a long query on every
        # call; this form is parsed once and is several times faster.
        params: dict[str, Any] = {name: [row[name] for row in rows] for name in _PG_ARRAY_COLUMNS}
        params["config_json"] = [row["config_json"] for row in rows]
        params["metrics_json"] = [row["metrics_json"] for row in rows]
        params["created_at"] = now
        result = conn.exec_driver_sql(_PG_INSERT_RUNS, params)
        return {r[0] for r in result}

    def existing_run_ids(self, ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
        """Return those of ``ids`` that are stored."""
        keys = sorted({str(_uuid(i)) for i in ids})

        def work(conn: Connection) -> set[uuid.UUID]:
            found: set[uuid.UUID] = set()
            for chunk in _chunks(keys):
                stmt = select(_runs.c.id).where(_runs.c.id.in_(chunk))
                found.update(uuid.UUID(r) for r in conn.execute(stmt).scalars())
            return found

        return self._run(work) if keys else set()

    def runs_without_metrics(self, ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
        """Those of ``ids`` that are stored, succeeded, and have no metrics map."""
        keys = sorted({str(_uuid(i)) for i in ids})

        def work(conn: Connection) -> set[uuid.UUID]:
            found: set[uuid.UUID] = set()
            for chunk in _chunks(keys):
                stmt = select(_runs.c.id).where(
                    _runs.c.id.in_(chunk),
                    _runs.c.status == "ok",
                    # SQL NULL, or a JSON null written through the ORM.
                    or_(_runs.c.metrics.is_(None), cast(_runs.c.metrics, Text()) == "null"),
                )
                found.update(uuid.UUID(r) for r in conn.execute(stmt).scalars())
            return found

        return self._run(work) if keys else set()

    def add_run_metrics(self, updates: Mapping[uuid.UUID | str, Mapping[str, float]]) -> int:
        """Fill in metrics that stored runs lack; metrics already stored are kept.

        This is how a run measured before every metric was recorded gets the rest
        (the bootstrap re-measures such runs under their own ids).

        Args:
            updates: Metrics by run id.

        Returns:
            How many runs gained at least one metric.

        Raises:
            InvalidArgumentError: A metrics map is malformed.
            NotFoundError: A run id is not stored (nothing is changed).
        """
        checked: dict[str, dict[str, float]] = {}
        for run_id, metrics in updates.items():
            key = str(_uuid(run_id))
            try:
                checked[key] = _check_metrics(metrics) or {}
            except InvalidArgumentError as error:
                raise InvalidArgumentError(f"run {key}: {error}") from None
        keys = sorted(key for key, metrics in checked.items() if metrics)

        def work(conn: Connection) -> int:
            stored: dict[str, dict[str, float] | None] = {}
            for chunk in _chunks(keys):
                stmt = select(_runs.c.id, _runs.c.metrics).where(_runs.c.id.in_(chunk))
                stored.update({run_id: metrics for run_id, metrics in conn.execute(stmt)})
            missing = [key for key in keys if key not in stored]
            if missing:
                raise NotFoundError(f"{len(missing)} runs are not stored, e.g. {missing[0]}")
            changed = 0
            for key in keys:
                old = dict(stored[key] or {})
                merged = {**checked[key], **old}
                if merged != old:
                    conn.execute(update(_runs).where(_runs.c.id == key).values(metrics=merged))
                    changed += 1
            return changed

        return self._run(work, write=True) if keys else 0

    def find_run(self, run_id: uuid.UUID | str) -> Run | None:
        """Return the run with this id, or None."""
        key = str(_uuid(run_id))

        def work(conn: Connection) -> Run | None:
            row = conn.execute(select(_runs).where(_runs.c.id == key)).first()
            return None if row is None else _to_run(row)

        return self._run(work)

    def get_run(self, run_id: uuid.UUID | str) -> Run:
        """Return the run with this id.

        Raises:
            NotFoundError: When there is none.
        """
        found = self.find_run(run_id)
        if found is None:
            raise NotFoundError(f"run {run_id} not found")
        return found

    @staticmethod
    def _check_limit(limit: int) -> int:
        if not 1 <= limit <= _MAX_PAGE:
            raise InvalidArgumentError(f"limit must be between 1 and {_MAX_PAGE}, got {limit}")
        return limit

    @staticmethod
    def _run_filters(
        *,
        dataset_id: int | None,
        family: str | None,
        source: str | None,
        status: str | None,
        since: dt.datetime | None,
    ) -> list[ColumnElement[bool]]:
        conds: list[ColumnElement[bool]] = []
        if dataset_id is not None:
            conds.append(_runs.c.dataset_id == dataset_id)
        if family is not None:
            conds.append(_runs.c.family == family)
        if source is not None:
            conds.append(_runs.c.source == source)
        if status is not None:
            conds.append(_runs.c.status == status)
        if since is not None:
            conds.append(_runs.c.created_at >= since)
        return conds

    def list_runs(
        self,
        *,
        dataset_id: int | None = None,
        family: str | None = None,
        source: str | None = None,
        status: str | None = None,
        since: dt.datetime | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> RunsPage:
        """List runs, oldest first (by creation time, then id), one page at a time.

        Pagination is keyset-based, so pages stay consistent while runs are added.

        Args:
            dataset_id: Only runs on this dataset.
            family: Only runs of this model family.
            source: Only runs from this source.
            status: Only runs with this status.
            since: Only runs created at or after this time (naive means UTC).
            cursor: ``next_cursor`` of the previous page.
            limit: Page size (1..1000).

        Returns:
            The page, the number of matching runs and the cursor of the next page.

        Raises:
            InvalidArgumentError: On a malformed cursor or limit.
        """
        limit = self._check_limit(limit)
        conds = self._run_filters(
            dataset_id=dataset_id, family=family, source=source, status=status, since=since
        )
        after = None
        if cursor is not None:
            last_at, last_id = _decode_cursor(cursor)
            if not isinstance(last_id, str):
                raise InvalidArgumentError(f"invalid cursor {cursor!r}")
            after = or_(
                _runs.c.created_at > last_at,
                and_(_runs.c.created_at == last_at, _runs.c.id > last_id),
            )

        def work(conn: Connection) -> RunsPage:
            count = conn.execute(select(func.count()).select_from(_runs).where(*conds)).scalar_one()
            stmt = (
                select(_runs)
                .where(*conds)
                .order_by(_runs.c.created_at, _runs.c.id)
                .limit(limit + 1)
            )
            if after is not None:
                stmt = stmt.where(after)
            rows = conn.execute(stmt).all()
            data = [_to_run(r) for r in rows[:limit]]
            next_cursor = None
            if len(rows) > limit:
                next_cursor = _encode_cursor(data[-1].created_at, str(data[-1].id))
            return RunsPage(data=data, count=count, next_cursor=next_cursor)

        return self._run(work)

    def runs_frame(self, *, family: str | None = None, status: str | None = "ok") -> pd.DataFrame:
        """Return the runs as a DataFrame for training, one row per run.

        Columns: ``id`` (str), ``dataset_id``, ``dataset_name``, ``task``, ``family``,
        ``config`` (dict), ``metric``, ``direction``, ``score``, ``fidelity``,
        ``cost_seconds``, ``status``, ``error``, ``source``, ``metrics`` (dict or
        None), ``created_at`` (UTC), and
        one ``mf_<name>`` column per meta-feature of the datasets (NaN where a dataset
        lacks it). Rows are ordered by creation time, then id.

        Args:
            family: Only runs of this family.
            status: Only runs with this status (default ``"ok"``; None for all).
        """
        import pandas as pd

        conds = self._run_filters(
            dataset_id=None, family=family, source=None, status=status, since=None
        )
        # Raw timestamps: pandas converts a whole column much faster than a Python
        # type processor converts a million values one by one.
        raw_created = (
            type_coerce(_runs.c.created_at, String()).label("created_at")
            if self._is_sqlite
            else type_coerce(_runs.c.created_at, DateTime(timezone=True)).label("created_at")
        )
        run_cols = [
            _runs.c.id,
            _runs.c.dataset_id,
            _runs.c.family,
            # As text, decoded below in one call: a JSON processor per row dominates
            # the time for a million runs.
            cast(_runs.c.config, Text()).label("config"),
            _runs.c.metric,
            _runs.c.direction,
            _runs.c.score,
            _runs.c.fidelity,
            _runs.c.cost_seconds,
            _runs.c.status,
            _runs.c.error,
            _runs.c.source,
            func.coalesce(cast(_runs.c.metrics, Text()), "null").label("metrics"),
            raw_created,
        ]
        names = [c.name for c in run_cols]

        def work(conn: Connection) -> tuple[Sequence[Row[Any]], Sequence[Row[Any]]]:
            stmt = select(*run_cols).where(*conds).order_by(_runs.c.created_at, _runs.c.id)
            rows = conn.execute(stmt).all()
            dataset_rows = conn.execute(select(_datasets)).all()
            return rows, dataset_rows

        rows, dataset_rows = self._run(work)
        columns: list[Sequence[Any]] = list(zip(*rows, strict=True)) if rows else [()] * len(names)
        data = dict(zip(names, columns, strict=True))
        for name in ("config", "metrics"):
            data[name] = json.loads("[" + ",".join(data[name]) + "]") if rows else []
        frame = pd.DataFrame(data)
        for name in ("score", "fidelity", "cost_seconds"):
            frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
        frame["dataset_id"] = frame["dataset_id"].astype("int64")
        frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True, format="ISO8601")

        meta_records = []
        for row in dataset_rows:
            m = row._mapping
            record: dict[str, Any] = {
                "dataset_id": m["id"],
                "dataset_name": m["name"],
                "task": m["task"],
            }
            features = dict(m["meta_features"])
            features.setdefault("n_rows", m["n_rows"])
            features.setdefault("n_features", m["n_features"])
            features.setdefault("n_classes", m["n_classes"])
            record.update({f"mf_{k}": v for k, v in features.items()})
            meta_records.append(record)
        meta = pd.DataFrame.from_records(
            meta_records,
            columns=None
            if meta_records
            else [
                "dataset_id",
                "dataset_name",
                "task",
                "mf_n_rows",
                "mf_n_features",
                "mf_n_classes",
            ],
        )
        mf_columns = sorted(c for c in meta.columns if c.startswith("mf_"))
        for column in mf_columns:
            meta[column] = pd.to_numeric(meta[column], errors="coerce").astype("float64")
        meta = meta[["dataset_id", "dataset_name", "task", *mf_columns]]
        meta["dataset_id"] = meta["dataset_id"].astype("int64")
        merged = frame.merge(meta, on="dataset_id", how="left", validate="many_to_one")
        ordered = ["id", "dataset_id", "dataset_name", "task"] + [
            c for c in names if c not in ("id", "dataset_id")
        ]
        return merged[ordered + mf_columns]

    def stats(self) -> Stats:
        """Count runs and datasets, with run counts by family, task, source and status."""

        def grouped(conn: Connection, column: Any, *, join: bool = False) -> dict[str, int]:
            src = _runs.join(_datasets, _runs.c.dataset_id == _datasets.c.id) if join else _runs
            stmt = select(column, func.count()).select_from(src).group_by(column).order_by(column)
            return {key: count for key, count in conn.execute(stmt)}

        def work(conn: Connection) -> Stats:
            return Stats(
                runs=conn.execute(select(func.count()).select_from(_runs)).scalar_one(),
                datasets=conn.execute(select(func.count()).select_from(_datasets)).scalar_one(),
                by_family=grouped(conn, _runs.c.family),
                by_task=grouped(conn, _datasets.c.task, join=True),
                by_source=grouped(conn, _runs.c.source),
                by_status=grouped(conn, _runs.c.status),
            )

        return self._run(work)

    def timeline(self, *, hourly: bool = False) -> Timeline:
        """Count runs per UTC day, family and source, and new datasets per day.

        One grouped query per table (the dashboard's history chart), so its cost is a
        scan of ``created_at`` rather than a transfer of every run.

        Args:
            hourly: Count per UTC hour instead (``YYYY-MM-DDTHH``), for a history that
                spans a day or two.
        """

        def day(column: Any) -> Any:
            if self._is_sqlite:
                # Stored as naive UTC text "YYYY-MM-DD HH:MM:SS...": the day is a prefix.
                if hourly:
                    return func.replace(func.substr(column, 1, 13), " ", "T")
                return func.substr(column, 1, 10)
            pattern = 'YYYY-MM-DD"T"HH24' if hourly else "YYYY-MM-DD"
            return func.to_char(func.timezone("UTC", column), pattern)

        def work(conn: Connection) -> Timeline:
            run_day = day(_runs.c.created_at).label("day")
            runs = conn.execute(
                select(run_day, _runs.c.family, _runs.c.source, func.count())
                .group_by(run_day, _runs.c.family, _runs.c.source)
                .order_by(run_day, _runs.c.family, _runs.c.source)
            ).all()
            dataset_day = day(_datasets.c.created_at).label("day")
            datasets = conn.execute(
                select(dataset_day, func.count()).group_by(dataset_day).order_by(dataset_day)
            ).all()
            return Timeline(
                runs=[(str(d), str(f), str(s), int(n)) for d, f, s, n in runs],
                datasets=[(str(d), int(n)) for d, n in datasets],
            )

        return self._run(work)

    # ------------------------------------------------------------------ surrogates

    _SURROGATE_INFO = [c for c in _surrogates.c if c.name != "model_text"]

    def add_surrogate(
        self,
        *,
        family: str,
        model_text: str,
        n_runs: int,
        metrics: Mapping[str, Any],
        meta: Mapping[str, Any] | None = None,
        status: str = "candidate",
        target: str = "",
    ) -> Surrogate:
        """Register a fitted surrogate.

        Args:
            family: Model family it predicts for.
            target: What it predicts: ``""`` for the family's primary metric, else a
                metric name; activation is per (family, target).
            model_text: The model in LightGBM text format (never a pickle).
            n_runs: Number of runs it was trained on.
            metrics: Its grouped-CV quality.
            meta: Anything else needed to use it (feature names, encoders, versions).
            status: ``"candidate"`` (default), ``"active"`` (then the previous active
                one of the (family, target) is retired in the same transaction) or
                ``"retired"``.

        Returns:
            The stored surrogate, with ``model_text``.
        """
        if status not in SURROGATE_STATUSES:
            raise InvalidArgumentError(
                f"surrogate status must be one of {SURROGATE_STATUSES}, got {status!r}"
            )
        if not isinstance(target, str) or len(target) > 64:
            raise InvalidArgumentError(f"target must be a metric name, got {target!r}")
        row = {
            "family": family,
            "target": target,
            "created_at": self._clock(),
            "n_runs": int(n_runs),
            "metrics": dict(metrics),
            "status": "candidate" if status == "active" else status,
            "model_text": model_text,
            "meta": dict(meta or {}),
            "sha256": hashlib.sha256(model_text.encode()).hexdigest(),
        }

        def work(conn: Connection) -> Surrogate:
            new_id = conn.execute(
                _surrogates.insert().returning(_surrogates.c.id), row
            ).scalar_one()
            if status == "active":
                self._activate(conn, new_id, family, target)
            return _to_surrogate(
                conn.execute(select(_surrogates).where(_surrogates.c.id == new_id)).one()
            )

        return self._run(work, write=True)

    def list_surrogates(self, family: str | None = None) -> list[Surrogate]:
        """List surrogates (newest first) without their model text."""

        def work(conn: Connection) -> list[Surrogate]:
            stmt = select(*self._SURROGATE_INFO).order_by(_surrogates.c.id.desc())
            if family is not None:
                stmt = stmt.where(_surrogates.c.family == family)
            return [_to_surrogate(r) for r in conn.execute(stmt)]

        return self._run(work)

    def find_surrogate(self, surrogate_id: int) -> Surrogate | None:
        """Return the surrogate (with model text), or None."""

        def work(conn: Connection) -> Surrogate | None:
            row = conn.execute(select(_surrogates).where(_surrogates.c.id == surrogate_id)).first()
            return None if row is None else _to_surrogate(row)

        return self._run(work)

    def get_surrogate(self, surrogate_id: int) -> Surrogate:
        """Return the surrogate (with model text).

        Raises:
            NotFoundError: When there is none.
        """
        found = self.find_surrogate(surrogate_id)
        if found is None:
            raise NotFoundError(f"surrogate {surrogate_id} not found")
        return found

    def find_active_surrogate(self, family: str, target: str = "") -> Surrogate | None:
        """Return the active surrogate of a (family, target) (with model text), or None."""

        def work(conn: Connection) -> Surrogate | None:
            stmt = select(_surrogates).where(
                _surrogates.c.family == family,
                _surrogates.c.target == target,
                _surrogates.c.status == "active",
            )
            row = conn.execute(stmt).first()
            return None if row is None else _to_surrogate(row)

        return self._run(work)

    def active_surrogate_ids(self) -> dict[str, int]:
        """Return key -> id of each active surrogate; a cheap query for pollers.

        The key is the family for a primary-metric surrogate and ``family@target`` for
        another target (:func:`hyperprior.db.entities.surrogate_key`).
        """

        def work(conn: Connection) -> dict[str, int]:
            stmt = select(_surrogates.c.family, _surrogates.c.target, _surrogates.c.id).where(
                _surrogates.c.status == "active"
            )
            return {
                surrogate_key(str(family), str(target)): int(sid)
                for family, target, sid in conn.execute(stmt)
            }

        return self._run(work)

    def _activate(self, conn: Connection, surrogate_id: int, family: str, target: str) -> None:
        # Lock the family's rows so that concurrent activations queue up (PostgreSQL;
        # SQLite writers are serialized anyway). The partial unique index is the backstop.
        conn.execute(
            select(_surrogates.c.id)
            .where(_surrogates.c.family == family)
            .order_by(_surrogates.c.id)
            .with_for_update()
        ).all()
        conn.execute(
            update(_surrogates)
            .where(
                _surrogates.c.family == family,
                _surrogates.c.target == target,
                _surrogates.c.status == "active",
                _surrogates.c.id != surrogate_id,
            )
            .values(status="retired")
        )
        conn.execute(
            update(_surrogates).where(_surrogates.c.id == surrogate_id).values(status="active")
        )

    def activate_surrogate(self, surrogate_id: int) -> Surrogate:
        """Make a surrogate the active one of its (family, target), retiring the previous one.

        Both happen in one transaction: readers see either the old or the new active
        surrogate, never none or two.

        Raises:
            NotFoundError: When there is no such surrogate.
        """

        def work(conn: Connection) -> Surrogate:
            found = conn.execute(
                select(_surrogates.c.family, _surrogates.c.target).where(
                    _surrogates.c.id == surrogate_id
                )
            ).first()
            if found is None:
                raise NotFoundError(f"surrogate {surrogate_id} not found")
            self._activate(conn, surrogate_id, found.family, found.target)
            stmt = select(*self._SURROGATE_INFO).where(_surrogates.c.id == surrogate_id)
            return _to_surrogate(conn.execute(stmt).one())

        for attempt in range(3):
            try:
                return self._run(work, write=True)
            except AlreadyExistsError:
                # Lost a race with another activation on the unique index: redo.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def prune_retired_surrogates(self, family: str, target: str = "", *, keep: int) -> int:
        """Delete the retired surrogates of a (family, target) but the newest ``keep``.

        Newest is by registration (id). Active and candidate surrogates are never
        touched, nor those of other families or targets.

        Args:
            family: The model family.
            target: ``""`` for the primary metric, else the metric name.
            keep: How many retired ones to keep (0: delete them all).

        Returns:
            How many were deleted.

        Raises:
            InvalidArgumentError: When ``keep`` is negative.
        """
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
            raise InvalidArgumentError(f"keep must be a count >= 0, got {keep!r}")

        def work(conn: Connection) -> int:
            retired = (
                (_surrogates.c.family == family)
                & (_surrogates.c.target == target)
                & (_surrogates.c.status == "retired")
            )
            kept = (
                select(_surrogates.c.id)
                .where(retired)
                .order_by(_surrogates.c.id.desc())
                .limit(keep)
                .scalar_subquery()
            )
            doomed = [
                int(i)
                for i in conn.execute(
                    select(_surrogates.c.id).where(retired, _surrogates.c.id.not_in(kept))
                ).scalars()
            ]
            deleted = 0
            for chunk in _chunks(doomed):
                # The status is checked again: a surrogate re-activated meanwhile stays.
                deleted += conn.execute(
                    delete(_surrogates).where(
                        _surrogates.c.id.in_(chunk), _surrogates.c.status == "retired"
                    )
                ).rowcount
            return deleted

        return self._run(work, write=True)

    # ------------------------------------------------------------------ jobs

    def create_job(self, kind: str, request: Mapping[str, Any], owner: int | None = None) -> Job:
        """Queue a job.

        Args:
            kind: ``"refine"``, ``"retrain"`` or ``"bootstrap"``.
            request: What to do (JSON-serialisable).
            owner: Id of the API key that asked for it, if any.

        Returns:
            The queued job.
        """
        if kind not in JOB_KINDS:
            raise InvalidArgumentError(f"job kind must be one of {JOB_KINDS}, got {kind!r}")
        row = {
            "id": str(uuid.uuid4()),
            "kind": kind,
            "status": "queued",
            "progress": {},
            "request": dict(request),
            "result": None,
            "error": None,
            "owner_key_id": owner,
            "created_at": self._clock(),
        }

        def work(conn: Connection) -> Job:
            conn.execute(_jobs.insert(), row)
            return _to_job(conn.execute(select(_jobs).where(_jobs.c.id == row["id"])).one())

        return self._run(work, write=True)

    def find_job(self, job_id: uuid.UUID | str) -> Job | None:
        """Return the job, or None."""
        key = str(_uuid(job_id))

        def work(conn: Connection) -> Job | None:
            row = conn.execute(select(_jobs).where(_jobs.c.id == key)).first()
            return None if row is None else _to_job(row)

        return self._run(work)

    def get_job(self, job_id: uuid.UUID | str) -> Job:
        """Return the job.

        Raises:
            NotFoundError: When there is none.
        """
        found = self.find_job(job_id)
        if found is None:
            raise NotFoundError(f"job {job_id} not found")
        return found

    def list_jobs(
        self, *, kind: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[Job]:
        """List jobs, newest first."""
        limit = self._check_limit(limit)

        def work(conn: Connection) -> list[Job]:
            stmt = select(_jobs).order_by(_jobs.c.created_at.desc(), _jobs.c.id).limit(limit)
            if kind is not None:
                stmt = stmt.where(_jobs.c.kind == kind)
            if status is not None:
                stmt = stmt.where(_jobs.c.status == status)
            return [_to_job(r) for r in conn.execute(stmt)]

        return self._run(work)

    def update_job(
        self,
        job_id: uuid.UUID | str,
        *,
        status: str | None = None,
        progress: Mapping[str, Any] | None = None,
        result: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> Job:
        """Change a job's status, progress, result or error.

        Moving to ``running`` sets ``started_at`` (first time) and the heartbeat;
        moving to ``succeeded``/``failed`` sets ``finished_at``. Any update of a
        running job counts as a heartbeat. ``progress`` replaces the previous one.

        Raises:
            NotFoundError: When there is no such job.
            InvalidStateError: When the job already finished, or the transition is
                not allowed.
        """
        key = str(_uuid(job_id))
        if status is not None and status not in JOB_STATUSES:
            raise InvalidArgumentError(f"job status must be one of {JOB_STATUSES}, got {status!r}")

        def work(conn: Connection) -> Job:
            current = conn.execute(select(_jobs).where(_jobs.c.id == key).with_for_update()).first()
            if current is None:
                raise NotFoundError(f"job {key} not found")
            job = _to_job(current)
            new_status = status or job.status
            if job.finished:
                raise InvalidStateError(f"job {key} already {job.status}")
            if new_status not in _JOB_TRANSITIONS[job.status]:
                raise InvalidStateError(f"job {key} cannot go from {job.status} to {new_status}")
            now = self._clock()
            values: dict[str, Any] = {"status": new_status}
            if progress is not None:
                values["progress"] = dict(progress)
            if result is not None:
                values["result"] = dict(result)
            if error is not None:
                values["error"] = error
            if new_status == "running":
                values["heartbeat_at"] = now
                if job.started_at is None:
                    values["started_at"] = now
            if new_status in _FINAL_JOB_STATUSES:
                values["finished_at"] = now
            conn.execute(update(_jobs).where(_jobs.c.id == key).values(**values))
            return _to_job(conn.execute(select(_jobs).where(_jobs.c.id == key)).one())

        return self._run(work, write=True)

    def heartbeat(self, job_id: uuid.UUID | str) -> None:
        """Record that the worker of a running job is alive.

        Raises:
            NotFoundError: When there is no such job.
            InvalidStateError: When the job is not running (e.g. it was failed as
                stale): the worker should stop.
        """
        key = str(_uuid(job_id))

        def work(conn: Connection) -> None:
            result = conn.execute(
                update(_jobs)
                .where(_jobs.c.id == key, _jobs.c.status == "running")
                .values(heartbeat_at=self._clock())
            )
            if result.rowcount == 1:
                return
            status = conn.execute(
                select(_jobs.c.status).where(_jobs.c.id == key)
            ).scalar_one_or_none()
            if status is None:
                raise NotFoundError(f"job {key} not found")
            raise InvalidStateError(f"job {key} is {status}, not running")

        self._run(work, write=True)

    def fail_stale_jobs(self, grace_seconds: float) -> int:
        """Fail running jobs whose last heartbeat is older than ``grace_seconds``.

        Returns:
            How many jobs were failed.
        """
        now = self._clock()
        cutoff = now - dt.timedelta(seconds=grace_seconds)
        last_sign = func.coalesce(_jobs.c.heartbeat_at, _jobs.c.started_at, _jobs.c.created_at)

        def work(conn: Connection) -> int:
            result = conn.execute(
                update(_jobs)
                .where(_jobs.c.status == "running", last_sign < cutoff)
                .values(
                    status="failed",
                    finished_at=now,
                    error=f"worker lost: no heartbeat for more than {grace_seconds:g} s",
                )
            )
            return int(result.rowcount)

        return self._run(work, write=True)

    # ------------------------------------------------------------------ locks

    def try_acquire_lock(self, name: str, owner: str, ttl_seconds: float) -> bool:
        """Take a named lease unless someone else holds an unexpired one.

        Acquiring a lock one already holds extends it.

        Returns:
            Whether ``owner`` now holds the lock.
        """
        now = self._clock()
        expires = now + dt.timedelta(seconds=ttl_seconds)

        def work(conn: Connection) -> bool:
            stmt = self._insert(_locks).values(name=name, owner=owner, expires_at=expires)
            stmt = stmt.on_conflict_do_update(
                index_elements=["name"],
                set_={"owner": stmt.excluded.owner, "expires_at": stmt.excluded.expires_at},
                where=or_(_locks.c.expires_at <= now, _locks.c.owner == owner),
            ).returning(_locks.c.name)
            return conn.execute(stmt).first() is not None

        return self._run(work, write=True)

    def refresh_lock(self, name: str, owner: str, ttl_seconds: float) -> bool:
        """Extend a lease held by ``owner``.

        Returns:
            False when ``owner`` does not hold the lock (any more).
        """
        now = self._clock()

        def work(conn: Connection) -> bool:
            result = conn.execute(
                update(_locks)
                .where(_locks.c.name == name, _locks.c.owner == owner)
                .values(expires_at=now + dt.timedelta(seconds=ttl_seconds))
            )
            return bool(result.rowcount)

        return self._run(work, write=True)

    def release_lock(self, name: str, owner: str) -> bool:
        """Give a lease up.

        Returns:
            False when ``owner`` did not hold it.
        """

        def work(conn: Connection) -> bool:
            result = conn.execute(
                delete(_locks).where(_locks.c.name == name, _locks.c.owner == owner)
            )
            return bool(result.rowcount)

        return self._run(work, write=True)

    # ------------------------------------------------------------------ API keys

    def create_api_key(self, name: str, key_hash: str, scopes: Iterable[str]) -> ApiKey:
        """Store a new API key (its hash only).

        Raises:
            AlreadyExistsError: When a key with this hash exists.
        """
        row = {
            "name": name,
            "key_hash": key_hash,
            "scopes": sorted(set(scopes)),
            "created_at": self._clock(),
        }

        def work(conn: Connection) -> ApiKey:
            new_id = conn.execute(_api_keys.insert().returning(_api_keys.c.id), row).scalar_one()
            return _to_api_key(
                conn.execute(select(_api_keys).where(_api_keys.c.id == new_id)).one()
            )

        try:
            return self._run(work, write=True)
        except AlreadyExistsError:
            raise AlreadyExistsError("an API key with this hash already exists") from None

    def find_api_key_by_hash(
        self, key_hash: str, *, include_revoked: bool = False
    ) -> ApiKey | None:
        """Return the key with this hash, or None (also for revoked keys, by default)."""

        def work(conn: Connection) -> ApiKey | None:
            stmt = select(_api_keys).where(_api_keys.c.key_hash == key_hash)
            if not include_revoked:
                stmt = stmt.where(_api_keys.c.revoked_at.is_(None))
            row = conn.execute(stmt).first()
            return None if row is None else _to_api_key(row)

        return self._run(work)

    def list_api_keys(self) -> list[ApiKey]:
        """List all keys, revoked ones included, oldest first."""

        def work(conn: Connection) -> list[ApiKey]:
            return [
                _to_api_key(r) for r in conn.execute(select(_api_keys).order_by(_api_keys.c.id))
            ]

        return self._run(work)

    def revoke_api_key(self, key_id: int) -> ApiKey:
        """Revoke a key (idempotent: the first revocation time is kept).

        Raises:
            NotFoundError: When there is no such key.
        """

        def work(conn: Connection) -> ApiKey:
            conn.execute(
                update(_api_keys)
                .where(_api_keys.c.id == key_id, _api_keys.c.revoked_at.is_(None))
                .values(revoked_at=self._clock())
            )
            row = conn.execute(select(_api_keys).where(_api_keys.c.id == key_id)).first()
            if row is None:
                raise NotFoundError(f"API key {key_id} not found")
            return _to_api_key(row)

        return self._run(work, write=True)

    def touch_api_key(self, key_id: int) -> None:
        """Record that a key was just used."""

        def work(conn: Connection) -> None:
            conn.execute(
                update(_api_keys).where(_api_keys.c.id == key_id).values(last_used_at=self._clock())
            )

        self._run(work, write=True)
