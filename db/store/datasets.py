"""Datasets of the run history: validation, identity (one record per name, task and
version), lookups and pages."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, func, select, update

from hyperprior.db.entities import Dataset, DatasetsPage, DatasetSpec
from hyperprior.db.errors import DatasetConflictError, InvalidArgumentError, NotFoundError
from hyperprior.db.store.base import (
    StoreBase,
    _chunks,
    _datasets,
    _decode_cursor,
    _encode_cursor,
    _is_number,
)
from hyperprior.vocabulary import TASKS, canonical_json


def _as_count(name: str, value: Any, *, minimum: int) -> int:
    if not _is_number(value) or not math.isfinite(value) or value != int(value):
        raise InvalidArgumentError(f"meta_features.{name} must be an integer, got {value!r}")
    if value < minimum:
        raise InvalidArgumentError(f"meta_features.{name} must be >= {minimum}, got {value!r}")
    return int(value)


def _fingerprint_value(value: float | int | None) -> float | None:
    # Ints and floats alike become floats rounded to 10 significant digits, so that
    # 150 and 150.0 (or values that went through float32) are one description.
    if value is None:
        return None
    return float(f"{float(value):.10g}")


_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def identity_fingerprint(
    *, name: str, task: str, version: int, n_rows: int, n_features: int
) -> str:
    """The fingerprint of a dataset record: sha256 of its identity and core shape.

    Only what never changes for a record goes in (name, task, version, n_rows,
    n_features): n_classes may be filled in later and the other meta-features are
    derived statistics that differ between tools (a CSV import has none, the SDK's
    ``describe`` computes 25). Migration 0005 holds a frozen copy of this formula.
    """
    payload = {
        "name": name,
        "task": task,
        "version": version,
        "n_rows": n_rows,
        "n_features": n_features,
    }
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


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
        version=m["version"],
        data_sha256=m["data_sha256"],
    )


def _differences(record: Mapping[str, Any], row: Mapping[str, Any]) -> list[str]:
    """What makes a description other data than a stored record (empty: the same)."""
    found = []
    for key in ("n_rows", "n_features", "n_classes", "data_sha256"):
        stored, sent = record[key], row[key]
        if stored is not None and sent is not None and stored != sent:
            found.append(f"{key}: stored {stored}, sent {sent}")
    return found


def _fills(record: Mapping[str, Any], row: Mapping[str, Any]) -> dict[str, Any]:
    """The columns a matching description adds to a record (values it lacks)."""
    stored_meta = record["meta_features"]
    added = {
        key: value
        for key, value in row["meta_features"].items()
        if value is not None and stored_meta.get(key) is None
    }
    changes: dict[str, Any] = {}
    if added:
        changes["meta_features"] = {**stored_meta, **added}
    for key in ("n_classes", "data_sha256"):
        if record[key] is None and row[key] is not None:
            changes[key] = row[key]
    return changes


def _conflict(
    row: Mapping[str, Any],
    candidates: Sequence[Mapping[str, Any]],
    records: Sequence[Mapping[str, Any]],
) -> DatasetConflictError:
    """The error for a description that matches none of ``candidates`` (the records of
    its name, task and version), ``records`` being every version of its name and task."""
    label = f"dataset {row['name']!r} ({row['task']})"
    free = max(int(r["version"]) for r in records) + 1
    stored = "; ".join(
        f"id {c['id']} (version {c['version']}): {', '.join(_differences(c, row))}"
        for c in candidates
    )
    if row["version"] is not None:
        label = f"dataset {row['name']!r} version {row['version']} ({row['task']})"
    advice = (
        "send the data of a stored version or its dataset_id, or record this data under "
        f'another name or as a new version ("version": {free} in the API\'s dataset; '
        f"--dataset-version {free} or a dataset_version column in the CLI)"
    )
    first = candidates[0]
    return DatasetConflictError(
        f"{label} is already stored with other data: {stored}; {advice}",
        dataset_id=int(first["id"]),
        differences=_differences(first, row),
    )


class DatasetsMixin(StoreBase):
    """Datasets: one record per (name, task, version), matched by their core shape.

    A description resolves to the stored record of its name and task (and version,
    when given) whose n_rows and n_features are equal and whose n_classes and
    ``data_sha256`` agree where both are known; the meta-features the record lacks are
    filled in from it. With no such record it creates version 1 (or the version it
    asks for); when the name and task hold other data, it is refused with
    `DatasetConflictError`, which names the stored ids and what differs.
    """

    # ------------------------------------------------------------------ datasets

    @staticmethod
    def dataset_fingerprint(spec: DatasetSpec) -> str:
        """Return the fingerprint the record of this description has (or would have).

        It is the sha256 of the canonical JSON of name, task, version (1 unless the
        description names one), n_rows and n_features.

        Raises:
            InvalidArgumentError: When the description is invalid.
        """
        row = DatasetsMixin._dataset_row(spec, now=None)
        return identity_fingerprint(
            name=row["name"],
            task=row["task"],
            version=row["version"] or 1,
            n_rows=row["n_rows"],
            n_features=row["n_features"],
        )

    @staticmethod
    def _dataset_row(spec: DatasetSpec, *, now: dt.datetime | None) -> dict[str, Any]:
        """Validate a dataset description and build its row.

        ``key`` identifies the description itself (everything it says), so that one
        batch resolves each distinct description once; ``version`` is None when the
        description does not ask for one.
        """
        name, task, meta = spec.name, spec.task, spec.meta_features
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise InvalidArgumentError(f"dataset name must be 1-200 characters, got {name!r}")
        if task not in TASKS:
            raise InvalidArgumentError(
                f"dataset {name!r}: task must be one of {', '.join(TASKS)}, got {task!r}"
            )
        if not isinstance(meta, Mapping):
            raise InvalidArgumentError(f"dataset {name!r}: meta_features must be a mapping")
        version = spec.version
        if version is not None and (
            isinstance(version, bool) or not isinstance(version, int) or version < 1
        ):
            raise InvalidArgumentError(
                f"dataset {name!r}: version must be an integer >= 1, got {version!r}"
            )
        data_sha256 = spec.data_sha256
        if data_sha256 is not None and (
            not isinstance(data_sha256, str) or not _SHA256_HEX.fullmatch(data_sha256)
        ):
            raise InvalidArgumentError(
                f"dataset {name!r}: data_sha256 must be 64 lowercase hex digits, "
                f"got {data_sha256!r}"
            )
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
        payload = {
            "name": name,
            "task": task,
            "version": version,
            "data_sha256": data_sha256,
            "meta_features": canonical,
        }
        return {
            "key": hashlib.sha256(canonical_json(payload).encode()).hexdigest(),
            "name": name,
            "task": task,
            "version": version,
            "data_sha256": data_sha256,
            "n_rows": n_rows,
            "n_features": n_features,
            "n_classes": n_classes,
            "meta_features": dict(meta),
            "created_at": now,
        }

    def _resolve_dataset_rows(
        self, conn: Connection, rows: Iterable[dict[str, Any]], now: dt.datetime
    ) -> dict[str, dict[str, Any]]:
        """Map each description's ``key`` to its stored record, creating or filling it.

        Raises:
            DatasetConflictError: A description names a stored dataset with other data.
        """
        # One order for every transaction (name, task, version), so that concurrent
        # batches insert and lock the same keys in the same order and cannot deadlock.
        ordered = sorted(rows, key=lambda r: (r["name"], r["task"], r["version"] or 0, r["key"]))
        names = sorted({r["name"] for r in ordered})
        stored: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for chunk in _chunks(names):
            stmt = select(_datasets).where(_datasets.c.name.in_(chunk)).order_by(_datasets.c.id)
            for found in conn.execute(stmt):
                record = dict(found._mapping)
                stored.setdefault((record["name"], record["task"]), []).append(record)
        return {
            row["key"]: self._resolve_dataset_row(
                conn, row, stored.setdefault((row["name"], row["task"]), []), now
            )
            for row in ordered
        }

    def _resolve_dataset_row(
        self,
        conn: Connection,
        row: dict[str, Any],
        records: list[dict[str, Any]],
        now: dt.datetime,
    ) -> dict[str, Any]:
        candidates = [r for r in records if row["version"] in (None, r["version"])]
        match = next((r for r in candidates if not _differences(r, row)), None)
        if match is None:
            if candidates:
                raise _conflict(row, candidates, records)
            match = self._insert_dataset(conn, row, now)
            records.append(match)
            if _differences(match, row):  # another transaction created it meanwhile
                raise _conflict(row, [match], records)
        if _fills(match, row):
            # Read again under a row lock, so that a concurrent fill is not overwritten.
            locked = conn.execute(
                select(_datasets).where(_datasets.c.id == match["id"]).with_for_update()
            ).one()
            match.update(locked._mapping)
            changes = _fills(match, row)
            if changes:
                conn.execute(
                    update(_datasets).where(_datasets.c.id == match["id"]).values(**changes)
                )
                match.update(changes)
        return match

    def _insert_dataset(
        self, conn: Connection, row: Mapping[str, Any], now: dt.datetime
    ) -> dict[str, Any]:
        """Insert version ``row['version'] or 1`` unless it exists; return the stored row."""
        version = row["version"] or 1
        values = {
            "name": row["name"],
            "task": row["task"],
            "version": version,
            "fingerprint": identity_fingerprint(
                name=row["name"],
                task=row["task"],
                version=version,
                n_rows=row["n_rows"],
                n_features=row["n_features"],
            ),
            "data_sha256": row["data_sha256"],
            "n_rows": row["n_rows"],
            "n_features": row["n_features"],
            "n_classes": row["n_classes"],
            "meta_features": row["meta_features"],
            "created_at": now,
        }
        conn.execute(self._insert(_datasets).on_conflict_do_nothing(), [values])
        stmt = select(_datasets).where(
            _datasets.c.name == row["name"],
            _datasets.c.task == row["task"],
            _datasets.c.version == version,
        )
        return dict(conn.execute(stmt).one()._mapping)

    def ensure_dataset(self, spec: DatasetSpec) -> Dataset:
        """Return the stored dataset of this description, creating it on first use.

        A matching record gains the meta-features it lacked (see the class docstring).

        Raises:
            InvalidArgumentError: When the description is invalid.
            DatasetConflictError: When its name and task hold other data.
        """
        row = self._dataset_row(spec, now=None)

        def work(conn: Connection) -> Dataset:
            resolved = self._resolve_dataset_rows(conn, [row], self._clock())
            return _to_dataset(resolved[row["key"]])

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
