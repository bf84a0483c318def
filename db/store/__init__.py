"""The store: every read and write of the run history goes through `Store`.

The store takes and returns the frozen value objects of `hyperprior.db.entities` (re-exported
here), never ORM rows. All statements are SQLAlchemy Core on a connection obtained
through one transaction helper (`Store._transaction`), which commits or rolls back
and maps driver errors to `hyperprior.db.errors`; `Store._run` adds a bounded retry for lock,
deadlock and serialization failures.

`Store` is one class to its users, composed of one part per table group:
:mod:`.datasets` and :mod:`.runs` (the history), :mod:`.registry` (surrogates),
:mod:`.jobs` (jobs and leases) and :mod:`.keys` (API keys), all on :mod:`.base`
(the engine, the transaction helper and shared helpers).
"""

from __future__ import annotations

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
)
from hyperprior.db.store.families import FamiliesMixin
from hyperprior.db.store.jobs import JobsMixin
from hyperprior.db.store.keys import KeysMixin
from hyperprior.db.store.registry import RegistryMixin
from hyperprior.db.store.runs import MAX_RUN_METRICS, RunsMixin

__all__ = [
    "MAX_RUN_METRICS",
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


class Store(RunsMixin, RegistryMixin, JobsMixin, KeysMixin, FamiliesMixin):
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
