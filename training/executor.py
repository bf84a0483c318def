"""Where trials run: a local process pool by default, a Dask cluster when given its address.

Both executors take a top-level (picklable) function and an iterable of items and yield
``(item, result)`` pairs as they complete, so callers can record results as they arrive
and a crash loses at most the trials still in flight.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class TrialTimeoutError(Exception):
    """Raised inside a trial that ran past its time limit."""


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
    """Runs ``fn(item)`` for every item and yields ``(item, result)`` as each completes."""

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, R]]: ...

    def close(self) -> None: ...


def _init_worker() -> None:
    # Trials are single-threaded; parallelism comes from the pool, not from BLAS/OpenMP.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # Ctrl-C is handled by the parent, which shuts the pool down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class InlineExecutor:
    """Runs trials one after another in this process (tests, debugging)."""

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, R]]:
        for item in items:
            yield item, fn(item)

    def close(self) -> None:
        return None


class LocalPoolExecutor:
    """A pool of ``workers`` spawned processes.

    At most ``2 * workers`` trials are queued at once, so a long plan does not pickle
    every item up front and results stream back in completion order.
    """

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)
        # spawn: workers must not inherit OpenMP/TensorFlow state from the parent.
        self._pool = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=mp.get_context("spawn"),
            initializer=_init_worker,
        )

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, R]]:
        it = iter(items)
        pending: dict[Future[R], T] = {}

        def fill() -> None:
            while len(pending) < 2 * self.workers:
                try:
                    item = next(it)
                except StopIteration:
                    return
                pending[self._pool.submit(fn, item)] = item

        fill()
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                item = pending.pop(fut)
                yield item, fut.result()
            fill()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class DaskExecutor:
    """Submits trials to a Dask ``distributed`` scheduler (``tcp://host:port``) or a client."""

    def __init__(self, address: str | None = None, *, client: Any = None) -> None:
        from distributed import Client

        if client is None and not address:
            raise ValueError("DaskExecutor needs a scheduler address or a client")
        self._own_client = client is None
        self.client = client if client is not None else Client(address)

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, R]]:
        from distributed import as_completed

        items = list(items)
        if not items:
            return
        # pure=False: the same trial submitted twice must run twice, not be deduplicated.
        futures = self.client.map(fn, items, pure=False)
        index = {fut.key: i for i, fut in enumerate(futures)}
        for fut in as_completed(futures):
            yield items[index[fut.key]], fut.result()

    def close(self) -> None:
        if self._own_client:
            self.client.close()


def make_executor(
    *, workers: int | None = None, dask_scheduler: str | None = None
) -> TrialExecutor:
    """The executor for the given settings: Dask when a scheduler address is set."""
    if dask_scheduler:
        return DaskExecutor(dask_scheduler)
    if workers == 0:
        return InlineExecutor()
    return LocalPoolExecutor(workers)
