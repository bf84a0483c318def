"""Frozen value objects handed out (and taken in) by the store.

These are plain dataclasses, independent of SQLAlchemy: callers can keep them,
pass them between threads and compare them. Mappings inside are fresh copies, so
mutating one never changes the database or another caller's result.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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
    "Surrogate",
    "Timeline",
    "split_surrogate_key",
    "surrogate_key",
]


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset as described by a client: its name, task and meta-features.

    The store keeps one record per (name, task, version). A description is the same
    dataset as a record when n_rows and n_features are equal, and n_classes and
    ``data_sha256`` are equal where both sides know them; its other meta-features fill
    the ones the record lacks. Other data under a stored name is refused
    (`DatasetConflictError`) unless it asks for a version of its own.

    Attributes:
        name: Human-readable name.
        task: ``"binary"``, ``"multiclass"`` or ``"regression"``.
        meta_features: Meta-features; ``n_rows`` and ``n_features`` are required,
            ``n_classes`` is expected for classification.
        version: The record of this name and task to use or create (1, 2 ...); None:
            whichever stored version holds the same data, else version 1.
        data_sha256: A hash of the data itself (the SDK's ``describe`` computes one);
            when both sides have one, it decides whether the data is the same.
    """

    name: str
    task: str
    meta_features: Mapping[str, float | int | None]
    version: int | None = None
    data_sha256: str | None = None


@dataclass(frozen=True)
class Dataset:
    """A stored dataset."""

    id: int
    name: str
    fingerprint: str
    task: str
    n_rows: int
    n_features: int
    n_classes: int | None
    meta_features: dict[str, float | int | None]
    created_at: dt.datetime
    version: int = 1
    data_sha256: str | None = None


@dataclass(frozen=True)
class NewRun:
    """A run to ingest. ``id`` is the client's idempotency key.

    Exactly one of ``dataset`` (described inline; created on first use) and
    ``dataset_id`` (an existing dataset) must be given. ``metrics`` holds every
    metric measured besides ``score`` (``log_loss``, ``rmse``, ``fit_seconds`` ...);
    it is not part of the run's identity: re-sending a stored run with other
    metrics is a duplicate, and :meth:`hyperprior.db.store.Store.add_run_metrics` fills in
    metrics a stored run lacks.
    """

    id: uuid.UUID
    family: str
    config: Mapping[str, Any]
    metric: str
    direction: str
    score: float | None
    fidelity: float
    cost_seconds: float
    source: str
    status: str = "ok"
    error: str | None = None
    dataset: DatasetSpec | None = None
    dataset_id: int | None = None
    metrics: Mapping[str, float] | None = None


@dataclass(frozen=True)
class Run:
    """A stored run."""

    id: uuid.UUID
    dataset_id: int
    family: str
    config: dict[str, Any]
    metric: str
    direction: str
    score: float | None
    fidelity: float
    cost_seconds: float
    status: str
    error: str | None
    source: str
    content_sha: str
    created_at: dt.datetime
    metrics: dict[str, float] | None = None


@dataclass(frozen=True)
class IngestResult:
    """Outcome of one ingest call: new rows and harmless repeats.

    Attributes:
        inserted: Runs stored for the first time.
        duplicates: Runs already stored with the same content.
        dataset_ids: The id of every dataset the runs belong to, in order of first
            appearance (inline descriptions resolved), for the caller to reuse.
    """

    inserted: int
    duplicates: int
    dataset_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class RunsPage:
    """One page of runs.

    Attributes:
        data: The runs on this page, oldest first.
        count: Number of runs matching the filters (all pages).
        next_cursor: Opaque cursor for the next page, None on the last page.
    """

    data: list[Run]
    count: int
    next_cursor: str | None


@dataclass(frozen=True)
class DatasetsPage:
    """One page of datasets (same conventions as `RunsPage`)."""

    data: list[Dataset]
    count: int
    next_cursor: str | None


@dataclass(frozen=True)
class Stats:
    """Counts over the whole history."""

    runs: int
    datasets: int
    by_family: dict[str, int]
    by_task: dict[str, int]
    by_source: dict[str, int]
    by_status: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Timeline:
    """The history by UTC day: run counts per family and source, new datasets.

    Attributes:
        runs: ``(day, family, source, count)`` rows, ``day`` as ``YYYY-MM-DD`` (or
            ``YYYY-MM-DDTHH`` per hour), sorted by day, family, source; days without
            runs are absent.
        datasets: ``(day, count)`` of datasets first seen that day, sorted by day.
    """

    runs: list[tuple[str, str, str, int]]
    datasets: list[tuple[str, int]]


@dataclass(frozen=True)
class Surrogate:
    """A registered surrogate model.

    ``model_text`` is None in listings (it can be megabytes); `Store.get_surrogate`
    and `Store.find_active_surrogate` fill it in. ``target`` is ``""`` for a model of
    the family's primary metric, else the metric it ranks by (``log_loss`` ...).
    """

    id: int
    family: str
    created_at: dt.datetime
    n_runs: int
    metrics: dict[str, Any]
    status: str
    meta: dict[str, Any]
    sha256: str
    model_text: str | None = None
    target: str = ""

    @property
    def key(self) -> str:
        """Its slot in the registry: see :func:`surrogate_key`."""
        return surrogate_key(self.family, self.target)


def surrogate_key(family: str, target: str = "") -> str:
    """``family`` for a primary-metric surrogate, ``family@target`` for another target."""
    return f"{family}@{target}" if target else family


def split_surrogate_key(key: str) -> tuple[str, str]:
    """``(family, target)`` of a :func:`surrogate_key`."""
    family, _, target = key.partition("@")
    return family, target


@dataclass(frozen=True)
class Job:
    """A background job and its progress."""

    id: uuid.UUID
    kind: str
    status: str
    progress: dict[str, Any]
    request: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    owner: int | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    heartbeat_at: dt.datetime | None

    @property
    def finished(self) -> bool:
        """Whether the job reached a final status."""
        return self.status in ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class ApiKey:
    """An API key record (the secret itself is never stored, only its hash)."""

    id: int
    name: str
    key_hash: str
    scopes: tuple[str, ...]
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None

    @property
    def active(self) -> bool:
        """Whether the key has not been revoked."""
        return self.revoked_at is None
