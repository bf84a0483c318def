"""Where trials run: a local process pool by default, a Dask cluster when given its address.

Every executor takes a top-level (picklable) function and an iterable of items and
yields ``(item, result)`` pairs as they complete, so callers can record results as they
arrive and a crash loses at most the trials still in flight.

``map_unordered(fn, items, shared=obj)`` calls ``fn(item, obj)`` instead: ``obj`` (a
dataset, typically) travels to each worker once rather than with every item.

:class:`IsolatedPoolExecutor` is the one to use for configs nobody has tried before: each
trial runs in a long-lived worker process under a time limit and a memory limit, and a
trial that blows either (or crashes its process) is killed with its worker, reported as a
:class:`WorkerFailure`, and the worker is replaced. The parent never dies with a trial.

The package's modules: :mod:`.base` (the protocol, failures, limits), :mod:`.local`
(inline and a plain pool), :mod:`.isolated` and :mod:`.dask_executor`; callers import
from here, and :func:`make_executor` picks one.
"""

from __future__ import annotations

from collections.abc import Callable

from hyperprior.training.executor.base import (
    FailureHandler,
    TrialCancelledError,
    TrialExecutor,
    TrialTimeoutError,
    WorkerFailure,
    item_time_limit,
    time_limit,
)
from hyperprior.training.executor.dask_executor import GUARD_POLL_SECONDS, DaskExecutor
from hyperprior.training.executor.isolated import IsolatedPoolExecutor, WorkerStartError
from hyperprior.training.executor.local import InlineExecutor, LocalPoolExecutor

__all__ = [
    "GUARD_POLL_SECONDS",
    "DaskExecutor",
    "FailureHandler",
    "InlineExecutor",
    "IsolatedPoolExecutor",
    "LocalPoolExecutor",
    "TrialCancelledError",
    "TrialExecutor",
    "TrialTimeoutError",
    "WorkerFailure",
    "WorkerStartError",
    "item_time_limit",
    "make_executor",
    "time_limit",
]


def make_executor(
    *,
    workers: int | None = None,
    dask_scheduler: str | None = None,
    memory_limit_mb: float | None = None,
    time_limit_seconds: float | None = None,
    on_failure: FailureHandler | None = None,
    warmup: Callable[[], None] | None = None,
) -> TrialExecutor:
    """The executor for the given settings: Dask when a scheduler address is set.

    With a memory or time limit (or ``on_failure``), local trials run in an
    :class:`IsolatedPoolExecutor`; ``workers=0`` runs them inline (no memory limit).
    """
    if dask_scheduler:
        return DaskExecutor(
            dask_scheduler, time_limit_seconds=time_limit_seconds, on_failure=on_failure
        )
    if workers == 0:
        return InlineExecutor(time_limit_seconds=time_limit_seconds, on_failure=on_failure)
    if memory_limit_mb is not None or time_limit_seconds is not None or on_failure is not None:
        return IsolatedPoolExecutor(
            workers,
            memory_limit_mb=memory_limit_mb,
            time_limit_seconds=time_limit_seconds,
            on_failure=on_failure,
            warmup=warmup,
        )
    return LocalPoolExecutor(workers)
