"""Trials on a Dask cluster, each guarded in its worker thread against its time limit
and against the cancellation of its future."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

from hyperprior.training.executor.base import (
    _INJECTED,
    FailureHandler,
    R,
    T,
    TrialCancelledError,
    TrialTimeoutError,
    WorkerFailure,
    _call,
    item_time_limit,
)

log = logging.getLogger(__name__)

#: Seconds between a Dask trial guard's checks (of local state: cheap).
GUARD_POLL_SECONDS = 0.25


def _raise_in_thread(thread_id: int, exc_type: type[BaseException] | None) -> None:
    """Make ``exc_type`` raise in another thread at its next bytecode (None: take back a
    pending one). CPython's only way to stop a thread it does not own."""
    import ctypes

    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc_type) if exc_type else None
    )


class _WorkerGuard:
    """Stops the trial running in this Dask worker thread when its future is cancelled
    or when it runs past its time limit.

    Dask has no way to stop a running task: cancelling its future only marks it
    ``cancelled`` on the worker, and its thread runs on. A watcher thread checks that
    mark (local state, no round trip) and the deadline every :data:`GUARD_POLL_SECONDS`
    and then raises :class:`TrialCancelledError` or :class:`TrialTimeoutError` inside the
    trial's thread, again every second while the trial goes on. Python delivers it at
    the next bytecode of that thread: between LightGBM's boosting rounds, a forest's
    trees, Keras batches, a solver's iterations, the folds. A single long call into C
    (one boosting round on a huge table) finishes first; a call that never returns is
    not interruptible at all (restart the worker; its nanny does so above its memory
    limit).

    Args:
        limit: Seconds the trial may run (None: no limit).
        frame: The frame of the guarded call: the watcher raises only while the
            thread is still inside it, never into Dask's own code around it.
    """

    def __init__(self, limit: float | None, frame: Any) -> None:
        self.thread_id = threading.get_ident()
        self.frame = frame
        self.deadline = None if limit is None else time.monotonic() + float(limit)
        self.limit = limit
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._fired = False
        self._task: Any = None
        try:
            from distributed import get_worker

            worker = get_worker()
            self._task = worker.state.tasks.get(worker.get_current_task())
        except Exception:  # noqa: BLE001 - not on a worker, or another distributed: limit only
            self._task = None
        self._thread = threading.Thread(target=self._watch, name="trial-guard", daemon=True)

    def _cancelled(self) -> bool:
        return self._task is not None and getattr(self._task, "state", None) == "cancelled"

    def _inside(self) -> bool:
        frame = sys._current_frames().get(self.thread_id)
        while frame is not None:
            if frame is self.frame:
                return True
            frame = frame.f_back
        return False

    def _watch(self) -> None:
        while not self._done.wait(GUARD_POLL_SECONDS):
            if self._cancelled():
                exc_type: type[BaseException] = TrialCancelledError
                message = "cancelled: the trial's future was cancelled on its Dask worker"
            elif self.deadline is not None and time.monotonic() > self.deadline:
                exc_type = TrialTimeoutError
                message = f"trial exceeded its time limit of {self.limit:g} s"
            else:
                continue
            while True:
                with self._lock:
                    if self._done.is_set() or not self._inside():
                        return
                    _INJECTED[self.thread_id] = message
                    _raise_in_thread(self.thread_id, exc_type)
                    self._fired = True
                # A trial may catch it and go on (a library's broad except): insist.
                if self._done.wait(1.0):
                    return

    def __enter__(self) -> _WorkerGuard:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._done.set()
            if self._fired:
                # One still pending must not go off in Dask's code after we return.
                _raise_in_thread(self.thread_id, None)
                _INJECTED.pop(self.thread_id, None)


def _run_guarded(
    item: Any,
    *,
    fn: Callable[..., Any],
    shared: Any = None,
    with_shared: bool = False,
    limit: float | None = None,
) -> Any:
    """Worker side of :class:`DaskExecutor`: ``fn`` under a :class:`_WorkerGuard`."""
    with _WorkerGuard(limit, sys._getframe()):
        return _call(fn, item, shared, with_shared)


class DaskExecutor:
    """Submits trials to a Dask ``distributed`` scheduler (``tcp://host:port``) or a client.

    ``shared`` is scattered to the cluster once per call. Every trial runs under a
    guard on its worker (:class:`_WorkerGuard`) that stops it when its future is
    cancelled or at its time limit (the constructor's or the item's
    ``time_limit_seconds``), by raising :class:`TrialCancelledError` or
    :class:`TrialTimeoutError` in the trial's thread. Futures are cancelled when the
    caller stops consuming results (a refinement stopped or interrupted), on
    :meth:`close`, and by the scheduler when this client goes away (a job worker
    killed), so none of these leaves trials running on the cluster, except inside a
    C call that does not return (see the guard).

    With a time limit or ``on_failure``, at most one item per worker thread is in
    flight, so that a deadline counts from the start of the item; an item still not
    back ``kill_grace_seconds`` past its deadline is cancelled and reported as a
    timeout. Memory is bounded by the Dask workers' own ``memory_limit`` (the nanny
    restarts a worker above it); the item then fails with ``KilledWorker``.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        client: Any = None,
        time_limit_seconds: float | None = None,
        on_failure: FailureHandler | None = None,
        kill_grace_seconds: float = 2.0,
    ) -> None:
        from distributed import Client

        if client is None and not address:
            raise ValueError("DaskExecutor needs a scheduler address or a client")
        self._own_client = client is None
        self.client = client if client is not None else Client(address)
        self.time_limit_seconds = time_limit_seconds
        self.on_failure = on_failure
        self.kill_grace_seconds = kill_grace_seconds
        self._live: set[Any] = set()

    @property
    def workers(self) -> int:
        """Worker threads of the cluster (at least 1)."""
        return max(1, sum(self.client.nthreads().values()))

    def map_unordered(
        self, fn: Callable[..., R], items: Iterable[T], *, shared: Any = None
    ) -> Iterator[tuple[T, R]]:
        kwargs: dict[str, Any] = {"fn": fn}
        if shared is not None:
            # Dask resolves futures passed as arguments (not inside a partial): the
            # data travels to each worker once.
            kwargs.update(shared=self.client.scatter(shared, broadcast=True), with_shared=True)
        if shared is None and self.on_failure is None and self.time_limit_seconds is None:
            materialised = list(items)
            if not any(getattr(i, "time_limit_seconds", None) for i in materialised):
                yield from self._map_all(materialised, kwargs)
                return
            items = materialised
        yield from self._map_paced(items, kwargs)

    def _submit(self, item: Any, kwargs: dict[str, Any], limit: float | None) -> Any:
        # pure=False: the same trial submitted twice must run twice, not be deduplicated.
        fut = self.client.submit(_run_guarded, item, pure=False, retries=0, limit=limit, **kwargs)
        self._live.add(fut)
        return fut

    def _cancel(self, futures: Iterable[Any]) -> None:
        futures = [f for f in futures if not f.done()]
        if futures:
            # One message for all: the workers mark them cancelled, the guards stop them.
            self.client.cancel(futures)
        self._live.difference_update(futures)

    def _map_all(self, items: list[T], kwargs: dict[str, Any]) -> Iterator[tuple[T, R]]:
        from distributed import as_completed

        if not items:
            return
        futures = [self._submit(item, kwargs, None) for item in items]
        index = {fut.key: i for i, fut in enumerate(futures)}
        try:
            for fut in as_completed(futures):
                self._live.discard(fut)
                yield items[index[fut.key]], fut.result()
        finally:
            self._cancel(futures)

    def _failure(self, exc: BaseException, elapsed: float) -> WorkerFailure:
        reason: Literal["timeout", "crashed"] = (
            "timeout" if isinstance(exc, TrialTimeoutError) else "crashed"
        )
        return WorkerFailure(reason, f"{type(exc).__name__}: {exc}", elapsed)

    def _map_paced(self, items: Iterable[T], kwargs: dict[str, Any]) -> Iterator[tuple[T, Any]]:
        it = iter(items)
        capacity = self.workers
        pending: dict[Any, tuple[T, float, float | None]] = {}
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < capacity:
                    try:
                        item = next(it)
                    except StopIteration:
                        exhausted = True
                        break
                    limit = item_time_limit(item, self.time_limit_seconds)
                    pending[self._submit(item, kwargs, limit)] = (item, time.monotonic(), limit)
                if not pending:
                    return
                progressed = False
                for fut, (item, started, limit) in list(pending.items()):
                    elapsed = time.monotonic() - started
                    if fut.done():
                        del pending[fut]
                        self._live.discard(fut)
                        progressed = True
                        try:
                            result = fut.result()
                        except Exception as exc:
                            if self.on_failure is None:
                                raise
                            result = self.on_failure(item, self._failure(exc, elapsed))
                        yield item, result
                    elif limit is not None and elapsed > limit + self.kill_grace_seconds:
                        # The guard raised at the limit and the trial did not return:
                        # it is inside a long C call. Give up on it (cancelled, the
                        # guard stops it when the call returns).
                        del pending[fut]
                        progressed = True
                        self._cancel([fut])
                        failure = WorkerFailure(
                            "timeout",
                            f"abandoned: still running {elapsed:.1f} s after the start, past "
                            f"its time limit of {limit:g} s",
                            elapsed,
                        )
                        if self.on_failure is None:
                            raise TrialTimeoutError(failure.message)
                        yield item, self.on_failure(item, failure)
                if not progressed:
                    time.sleep(0.02)
        finally:
            self._cancel(pending)

    def close(self) -> None:
        """Cancel the trials still on the cluster; close the client if it is ours."""
        try:
            self._cancel(list(self._live))
        except Exception as exc:  # noqa: BLE001 - the scheduler may be gone already
            log.warning("could not cancel the Dask trials in flight: %s", exc)
        if self._own_client:
            self.client.close()
