"""Datasets of the run history: validation, fingerprints, lookups and pages."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, func, select

from hyperprior.db.entities import Dataset, DatasetsPage, DatasetSpec
from hyperprior.db.errors import InvalidArgumentError, NotFoundError
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
    # 150 and 150.0 (or values that went through float32) give the same fingerprint.
    if value is None:
        return None
    return float(f"{float(value):.10g}")


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


class DatasetsMixin(StoreBase):
    """Datasets: described once, identified by the fingerprint of their description."""

    # ------------------------------------------------------------------ datasets

    @staticmethod
    def dataset_fingerprint(spec: DatasetSpec) -> str:
        """Return the stable identity of a dataset description.

        It is the sha256 of the canonical JSON of name, task and the meta-features
        sorted by name, numbers as floats rounded to 10 significant digits.

        Raises:
            InvalidArgumentError: When a meta-feature is not a finite number or None.
        """
        return DatasetsMixin._dataset_row(spec, now=None)["fingerprint"]

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
