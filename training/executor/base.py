"""What every executor shares: the protocol, :class:`WorkerFailure`, the trial errors
and the time limit inside a trial."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class TrialTimeoutError(Exception):
    """Raised inside a trial that ran past its time limit."""

    def __init__(self, *args: object) -> None:
        # Raised into a Dask worker's thread by class, without arguments: the guard left
        # the message for that thread.
        super().__init__(*(args or (_injected_message(self),)))


class TrialCancelledError(Exception):
    """Raised inside a trial on a Dask worker whose future was cancelled (its refinement
    was cancelled, its caller stopped early, or its client went away)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(args or (_injected_message(self),)))


# Thread id -> the message of the exception a guard is about to raise in that thread.
_INJECTED: dict[int, str] = {}


def _injected_message(exc: BaseException) -> str:
    return _INJECTED.get(threading.get_ident(), type(exc).__name__)


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`TrialTimeoutError` in the block after ``seconds`` of wall time.

    Uses ``SIGALRM``, so it only works in a process's main thread (where trials run in
    pool workers); elsewhere, or with ``seconds`` None, the block runs unbounded.
    """
    usable = (
        seconds is not None
        and seconds > 0
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        raise TrialTimeoutError(f"trial exceeded its time limit of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))  # type: ignore[arg-type]
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class TrialExecutor(Protocol):
    """Runs ``fn(item)`` for every item and yields ``(item, result)`` as each completes.

    With ``shared`` given, runs ``fn(item, shared)``; the object is shipped to each
    worker once where the executor can (see the implementations).
    """

    def map_unordered(
        self, fn: Callable[..., R], items: Iterable[T], *, shared: Any = None
    ) -> Iterator[tuple[T, R]]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class WorkerFailure:
    """Why an item produced no result: its worker was killed, died or raised.

    Attributes:
        reason: ``"timeout"`` (killed past its time limit), ``"memory"`` (killed over
            its memory limit), ``"crashed"`` (the process died: a segfault, the OOM
            killer, a Dask worker lost) or ``"error"`` (``fn`` raised).
        message: One line for humans and the run's ``error`` column.
        seconds: Wall-clock seconds from dispatch to the failure.
        peak_rss_mb: Largest resident memory seen for the worker, when measured.
    """

    reason: Literal["timeout", "memory", "crashed", "error"]
    message: str
    seconds: float
    peak_rss_mb: float | None = None


FailureHandler = Callable[[Any, WorkerFailure], Any]


def item_time_limit(item: Any, default: float | None) -> float | None:
    """An item's own ``time_limit_seconds`` attribute, else ``default``."""
    limit = getattr(item, "time_limit_seconds", None)
    return default if limit is None else float(limit)


def _apply_shared(item: Any, *, fn: Callable[..., Any], shared: Any) -> Any:
    return fn(item, shared)


def _call(fn: Callable[..., Any], item: Any, shared: Any, with_shared: bool) -> Any:
    return fn(item, shared) if with_shared else fn(item)


def _init_worker() -> None:
    # Trials are single-threaded; parallelism comes from the pool, not from BLAS/OpenMP.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # Ctrl-C is handled by the parent, which shuts the pool down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
