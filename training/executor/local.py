"""Executors without isolation: inline (in this process) and a plain process pool."""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Literal

from hyperprior.training.executor.base import (
    FailureHandler,
    R,
    T,
    TrialTimeoutError,
    WorkerFailure,
    _apply_shared,
    _call,
    _init_worker,
    item_time_limit,
    time_limit,
)


class InlineExecutor:
    """Runs trials one after another in this process (tests, debugging).

    Args:
        time_limit_seconds: Soft limit per item (``SIGALRM``, main thread only); an
            item's own ``time_limit_seconds`` attribute takes precedence.
        on_failure: Turns an exception raised by ``fn`` into a result; without it the
            exception propagates.
    """

    workers = 1

    def __init__(
        self,
        *,
        time_limit_seconds: float | None = None,
        on_failure: FailureHandler | None = None,
    ) -> None:
        self.time_limit_seconds = time_limit_seconds
        self.on_failure = on_failure

    def map_unordered(
        self, fn: Callable[..., R], items: Iterable[T], *, shared: Any = None
    ) -> Iterator[tuple[T, R]]:
        for item in items:
            started = time.perf_counter()
            try:
                with time_limit(item_time_limit(item, self.time_limit_seconds)):
                    result = _call(fn, item, shared, shared is not None)
            except Exception as exc:
                if self.on_failure is None:
                    raise
                reason: Literal["timeout", "error"] = (
                    "timeout" if isinstance(exc, TrialTimeoutError) else "error"
                )
                failure = WorkerFailure(
                    reason, f"{type(exc).__name__}: {exc}", time.perf_counter() - started
                )
                result = self.on_failure(item, failure)
            yield item, result

    def close(self) -> None:
        return None


class LocalPoolExecutor:
    """A pool of ``workers`` spawned processes.

    At most ``2 * workers`` trials are queued at once, so a long plan does not pickle
    every item up front and results stream back in completion order. ``shared`` is
    pickled with every item here; use :class:`IsolatedPoolExecutor` for large objects.
    """

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)
        # spawn: workers must not inherit OpenMP/TensorFlow state from the parent.
        self._pool = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=mp.get_context("spawn"),
            initializer=_init_worker,
        )

    def map_unordered(
        self, fn: Callable[..., R], items: Iterable[T], *, shared: Any = None
    ) -> Iterator[tuple[T, R]]:
        if shared is not None:
            fn = functools.partial(_apply_shared, fn=fn, shared=shared)
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
        """Stop the workers; trials still running are killed (their results are lost).

        As :meth:`IsolatedPoolExecutor.close`: waiting for them instead could take a
        whole trial time limit when a bootstrap is interrupted. Idle workers exit on the
        shutdown sentinel within the grace period.
        """
        # Before Python 3.14 there is no public way to reach the workers.
        processes = list((getattr(self._pool, "_processes", None) or {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + 2.0
        for process in processes:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()
