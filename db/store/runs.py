"""Runs of the history: validated, idempotent ingestion (all or nothing), lookups,
pages, the training frame and counts.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    DateTime,
    Row,
    String,
    Text,
    and_,
    cast,
    func,
    or_,
    select,
    type_coerce,
    update,
)

from hyperprior.db.entities import DatasetSpec, IngestResult, NewRun, Run, RunsPage, Stats, Timeline
from hyperprior.db.errors import (
    ConflictError,
    InvalidArgumentError,
    NotFoundError,
    UnknownDatasetError,
)
from hyperprior.db.store.base import (
    _chunks,
    _datasets,
    _decode_cursor,
    _encode_cursor,
    _is_number,
    _runs,
    _uuid,
)
from hyperprior.db.store.datasets import DatasetsMixin
from hyperprior.vocabulary import DIRECTIONS, RUN_SOURCES, RUN_STATUSES, canonical_json

if TYPE_CHECKING:
    import pandas as pd

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


class _PreparedRun:
    """A validated run, with everything that needs no database already computed."""

    __slots__ = ("body_digest", "dataset_id", "dataset_key", "index", "row")

    def __init__(
        self,
        index: int,
        row: dict[str, Any],
        body_digest: bytes,
        dataset_key: str | None,
        dataset_id: int | None,
    ) -> None:
        self.index = index
        self.row = row
        self.body_digest = body_digest
        # The ``key`` of the inline dataset description (see `_dataset_row`).
        self.dataset_key = dataset_key
        self.dataset_id = dataset_id


class RunsMixin(DatasetsMixin):
    """Runs: idempotent ingestion, lookups, pages, the training frame and counts."""

    # ------------------------------------------------------------------ runs

    def _prepare_runs(
        self, runs: Sequence[NewRun]
    ) -> tuple[list[_PreparedRun], dict[str, dict[str, Any]]]:
        """Validate runs and compute what needs no database (outside any lock).

        Returns:
            The prepared runs and the rows of their inline datasets by description key.
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
        dataset_rows = {row["key"]: row for row in spec_cache.values()}
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
        dataset_key = None
        if run.dataset is not None:
            dataset_key = self._cached_dataset_row(run.dataset, spec_cache)["key"]
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
        return _PreparedRun(index, row, body_digest, dataset_key, run.dataset_id)

    def _cached_dataset_row(
        self, spec: DatasetSpec, cache: dict[Any, dict[str, Any]]
    ) -> dict[str, Any]:
        """`_dataset_row`, computed once per distinct description in a batch."""
        row = cache.get(id(spec))
        if row is not None:
            return row
        try:
            key: Any = (
                spec.name,
                spec.task,
                spec.version,
                spec.data_sha256,
                tuple(sorted(spec.meta_features.items())),
            )
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
        fails with `ConflictError`. Inline datasets resolve to the stored record of the
        same data (filling in the meta-features it lacks) or are created on first use
        (see `DatasetsMixin`).

        Args:
            runs: The runs to insert (a batch of up to a few thousand is efficient).

        Returns:
            How many runs were inserted and how many were already there, and the ids
            of their datasets.

        Raises:
            InvalidArgumentError: A run is malformed (message names the run).
            UnknownDatasetError: A run's ``dataset_id`` does not exist.
            ConflictError: A run id exists with different content (message names it).
            DatasetConflictError: An inline dataset names a stored one with other data.
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
    ) -> tuple[dict[str, dict[str, Any]], dict[int, str]]:
        """Resolve inline descriptions to records (creating or filling them) and check
        referenced ids; return records by description key, fingerprints by id."""
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
        records: dict[str, dict[str, Any]] = {}
        if dataset_rows:
            records = self._resolve_dataset_rows(conn, dataset_rows.values(), now)
        return records, fingerprint_of

    def _ingest(
        self,
        conn: Connection,
        prepared: Sequence[_PreparedRun],
        dataset_rows: Mapping[str, dict[str, Any]],
    ) -> IngestResult:
        now = self._clock()
        records, fingerprint_of = self._resolve_datasets(conn, prepared, dataset_rows, now)
        dataset_ids: dict[int, None] = {}  # first appearance order
        unique: dict[str, dict[str, Any]] = {}
        for run in prepared:
            if run.dataset_key is not None:
                record = records[run.dataset_key]
                dataset_id, fingerprint = record["id"], record["fingerprint"]
            else:
                assert run.dataset_id is not None
                dataset_id = run.dataset_id
                fingerprint = fingerprint_of[dataset_id]
            dataset_ids.setdefault(dataset_id)
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
        return IngestResult(
            inserted=n_inserted,
            duplicates=len(prepared) - n_inserted,
            dataset_ids=tuple(dataset_ids),
        )

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
