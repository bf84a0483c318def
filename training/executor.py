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
"""

from __future__ import annotations

import functools
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for_ready
from typing import Any, Literal, Protocol, TypeVar

log = logging.getLogger(__name__)

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


# ------------------------------------------------------------------ isolated pool


def _set_parent_death_signal() -> None:
    # Linux: if the process that started us dies (even by SIGKILL), so do we, instead
    # of finishing a trial nobody will read. Best effort elsewhere.
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _isolated_worker(
    conn: Connection, data_limit_bytes: int | None, warmup: Callable[[], None] | None
) -> None:
    """Main loop of an :class:`IsolatedPoolExecutor` worker."""
    _init_worker()
    _set_parent_death_signal()
    if data_limit_bytes is not None:
        import resource

        try:
            _, hard = resource.getrlimit(resource.RLIMIT_DATA)
            soft = (
                data_limit_bytes if hard == resource.RLIM_INFINITY else min(data_limit_bytes, hard)
            )
            resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
        except (ValueError, OSError):
            pass
    if warmup is not None:
        try:
            warmup()
        except Exception as exc:  # noqa: BLE001 - a failed warm-up shows in the first trial
            log.debug("worker warm-up failed: %s", exc)
    # Items are handed out only after this, so time limits start with the item.
    try:
        conn.send(("ready", os.getpid()))
    except (OSError, ValueError):
        return  # the pool was closed while this worker warmed up
    shared: Any = None
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        kind = message[0]
        if kind == "stop":
            return
        if kind == "shared":
            shared = message[1]
            continue
        _, fn, item, limit, with_shared = message
        try:
            with time_limit(limit):
                reply: tuple[str, Any] = ("ok", _call(fn, item, shared, with_shared))
        except BaseException as exc:  # noqa: BLE001 - the parent decides what a failure is
            reason = "timeout" if isinstance(exc, TrialTimeoutError) else "error"
            reply = (reason, f"{type(exc).__name__}: {exc}")
        try:
            conn.send(reply)
        except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable result
            conn.send(("error", f"cannot send the result back: {type(exc).__name__}: {exc}"))


class WorkerStartError(RuntimeError):
    """Worker processes keep dying before they can take an item (a broken install,
    a script without an ``if __name__ == "__main__":`` guard...): no item is to blame."""


class _Slot:
    """One worker process of an :class:`IsolatedPoolExecutor` and what it is running."""

    def __init__(self, process: Any, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.ready = False
        self.shared_id: int | None = None
        self.item: Any = None
        self.busy = False
        self.started = 0.0
        self.limit: float | None = None
        self.peak_rss = 0

    def rss(self) -> int | None:
        try:
            import psutil

            return int(psutil.Process(self.process.pid).memory_info().rss)
        except Exception:  # noqa: BLE001 - the process may be gone already
            return None


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "was lost"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"was killed by {name}"
    return f"exited with status {exitcode}"


class IsolatedPoolExecutor:
    """Worker processes that run one item at a time under a time and a memory limit.

    Limits, per item:

    * time: ``SIGALRM`` in the worker raises :class:`TrialTimeoutError` at the limit
      (the family turns it into a failed result); code that does not return to the
      interpreter (a long C++ fit) is killed by the parent ``kill_grace_seconds``
      later, together with its worker;
    * memory: the parent polls each busy worker's resident set size every
      ``poll_seconds`` and kills the worker above ``memory_limit_mb``. RSS is what the
      kernel's OOM killer weighs; ``RLIMIT_AS`` is useless here because TensorFlow and
      LightGBM reserve gigabytes of address space they never touch. As a backstop
      against an allocation faster than the poll, the worker also runs under
      ``RLIMIT_DATA`` at ``data_limit_factor`` times the limit (measured: TensorFlow's
      and LightGBM's committed data segments run 2-5x their RSS, so a tighter cap fails
      healthy trials).

    Workers start at construction and report ready after ``warmup``; items go only to
    ready, idle workers, pulled from ``items`` one at a time (so a lazy iterable can
    decide about each item as late as possible, e.g. against a time budget), and a
    time limit starts when its item does. A killed or crashed worker is replaced, so
    one bad config costs one failed item and a process start. A worker that dies
    before taking its item is no item's fault: the item goes to another worker, and
    :class:`WorkerStartError` is raised when workers keep dying at startup.

    Results come back as they complete; a failure comes back as
    ``on_failure(item, WorkerFailure)``, or as the :class:`WorkerFailure` itself
    without a handler.

    Args:
        workers: Worker processes (default: the CPU count).
        memory_limit_mb: Resident memory allowed per worker, baseline included
            (None: unlimited).
        time_limit_seconds: Default time limit per item; an item's own
            ``time_limit_seconds`` attribute takes precedence (None: unlimited).
        on_failure: Turns a failure into a result of the same type as ``fn``'s.
        warmup: Called once in every new worker (e.g. heavy imports) before it
            reports ready.
        kill_grace_seconds: How long past its time limit an item may run before its
            worker is killed.
        poll_seconds: How often busy workers are checked.
        data_limit_factor: ``RLIMIT_DATA`` as a multiple of ``memory_limit_mb``.
        max_start_failures: Workers that may die at startup in a row before
            :class:`WorkerStartError`.
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        memory_limit_mb: float | None = None,
        time_limit_seconds: float | None = None,
        on_failure: FailureHandler | None = None,
        warmup: Callable[[], None] | None = None,
        kill_grace_seconds: float = 2.0,
        poll_seconds: float = 0.05,
        data_limit_factor: float = 4.0,
        max_start_failures: int = 3,
    ) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.memory_limit_mb = memory_limit_mb
        self.time_limit_seconds = time_limit_seconds
        self.on_failure = on_failure
        self.warmup = warmup
        self.kill_grace_seconds = kill_grace_seconds
        self.poll_seconds = poll_seconds
        self.max_start_failures = max_start_failures
        self._data_limit = (
            None
            if memory_limit_mb is None
            else int(max(memory_limit_mb * data_limit_factor, memory_limit_mb + 1024) * 2**20)
        )
        self._ctx = mp.get_context("spawn")
        self._start_failures = 0
        self._slots: list[_Slot | None] = [self._spawn() for _ in range(self.workers)]
        self._closed = False

    @property
    def pids(self) -> list[int]:
        """Process ids of the live workers (for tests and diagnostics)."""
        return [s.process.pid for s in self._slots if s is not None and s.process.is_alive()]

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until every worker has warmed up (or ``timeout``); True if all did."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            waiting = [s for s in self._slots if s is not None and not s.ready]
            if not waiting:
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            ready = wait_for_ready(
                [s.conn for s in waiting] + [s.process.sentinel for s in waiting],
                timeout=self.poll_seconds if left is None else min(left, self.poll_seconds),
            )
            self._check_starting(ready)

    def _spawn(self) -> _Slot:
        parent, child = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_isolated_worker,
            args=(child, self._data_limit, self.warmup),
            daemon=True,
            name="hyperprior-trial",
        )
        process.start()
        child.close()
        return _Slot(process, parent)

    def _kill(self, slot: _Slot) -> None:
        if slot.process.is_alive():
            slot.process.kill()
        slot.process.join(timeout=5)
        slot.conn.close()

    def _replace(self, slot: _Slot) -> None:
        index = self._slots.index(slot)
        self._kill(slot)
        self._slots[index] = self._spawn()

    def _start_failed(self, slot: _Slot, why: str) -> None:
        self._start_failures += 1
        log.warning("a trial worker %s before taking an item", why)
        if self._start_failures >= self.max_start_failures:
            self._kill(slot)
            self._slots[self._slots.index(slot)] = None
            raise WorkerStartError(
                f"{self._start_failures} trial worker processes in a row {why} before "
                "taking an item; see the log of the worker (stderr) for the cause"
            )
        self._replace(slot)

    def _check_starting(self, ready: list[Any]) -> None:
        """Mark warmed-up workers ready; replace those that died on the way."""
        for slot in list(self._slots):
            if slot is None or slot.ready:
                continue
            if slot.conn in ready or slot.conn.poll():
                try:
                    message = slot.conn.recv()
                except (EOFError, OSError):
                    message = None
                if message is not None and message[0] == "ready":
                    slot.ready = True
                    self._start_failures = 0
                    continue
            if not slot.process.is_alive():
                slot.process.join(timeout=1)
                self._start_failed(slot, _describe_exit(slot.process.exitcode))

    def map_unordered(
        self, fn: Callable[..., R], items: Iterable[T], *, shared: Any = None
    ) -> Iterator[tuple[T, R]]:
        if self._closed:
            raise RuntimeError("the executor is closed")
        it = iter(items)
        retry: list[Any] = []
        exhausted = False
        shared_id = id(shared) if shared is not None else None
        try:
            while True:
                for index, slot in enumerate(self._slots):
                    if slot is None:
                        self._slots[index] = self._spawn()
                        continue
                    if not slot.ready or slot.busy:
                        continue
                    if retry:
                        item = retry.pop()
                    elif exhausted:
                        break
                    else:
                        try:
                            item = next(it)
                        except StopIteration:
                            exhausted = True
                            break
                    if not self._dispatch(slot, fn, item, shared, shared_id):
                        # The worker died while idle: not this item's fault.
                        retry.append(item)
                        self._start_failed(slot, _describe_exit(slot.process.exitcode))
                busy = [s for s in self._slots if s is not None and s.busy]
                starting = [s for s in self._slots if s is not None and not s.ready]
                if not busy and exhausted and not retry:
                    return
                watched = busy + starting
                ready = wait_for_ready(
                    [s.conn for s in watched] + [s.process.sentinel for s in watched],
                    timeout=self.poll_seconds,
                )
                self._check_starting(ready)
                for slot in busy:
                    outcome = self._check(slot, ready)
                    if outcome is None:
                        continue
                    item, result, broken = outcome
                    if broken:
                        self._replace(slot)
                    yield item, result
        finally:
            # A consumer that stops early leaves items in flight: their workers are
            # killed so that the next call starts clean.
            for slot in self._slots:
                if slot is not None and slot.busy:
                    self._replace(slot)

    def _dispatch(
        self, slot: _Slot, fn: Callable[..., Any], item: Any, shared: Any, shared_id: int | None
    ) -> bool:
        limit = item_time_limit(item, self.time_limit_seconds)
        try:
            if shared_id is not None and slot.shared_id != shared_id:
                slot.conn.send(("shared", shared))
                slot.shared_id = shared_id
            slot.conn.send(("run", fn, item, limit, shared_id is not None))
        except (OSError, ValueError):
            return False
        slot.item, slot.busy, slot.started, slot.limit = item, True, time.monotonic(), limit
        slot.peak_rss = 0
        return True

    def _failed(self, item: Any, failure: WorkerFailure) -> Any:
        log.info("trial failed (%s): %s", failure.reason, failure.message)
        return failure if self.on_failure is None else self.on_failure(item, failure)

    def _check(self, slot: _Slot, ready: list[Any]) -> tuple[Any, Any, bool] | None:
        """The finished (item, result, worker_broken) of a busy slot, or None."""
        elapsed = time.monotonic() - slot.started
        peak = slot.peak_rss / 2**20 if slot.peak_rss else None
        item = slot.item
        if slot.conn in ready or slot.conn.poll():
            try:
                kind, payload = slot.conn.recv()
            except (EOFError, OSError):
                kind, payload = "lost", None
            if kind != "lost":
                slot.busy = False
                if kind == "ok":
                    return item, payload, False
                reason: Literal["timeout", "error"] = "timeout" if kind == "timeout" else "error"
                failure = WorkerFailure(reason, payload, elapsed, peak)
                return item, self._failed(item, failure), False
        if not slot.process.is_alive() or slot.process.sentinel in ready:
            slot.process.join(timeout=1)
            slot.busy = False
            message = f"the trial's worker process {_describe_exit(slot.process.exitcode)}"
            if peak is not None:
                message += f" (peak resident memory {peak:.0f} MiB)"
            if self.memory_limit_mb is not None and slot.process.exitcode in (
                -signal.SIGSEGV,
                -signal.SIGABRT,
                -signal.SIGKILL,
            ):
                # A failed allocation under RLIMIT_DATA often ends in a segfault or an
                # abort of C++ code rather than a MemoryError, with RSS still low.
                message += (
                    f"; possibly out of memory (limits: {self.memory_limit_mb:g} MiB "
                    f"resident, {(self._data_limit or 0) / 2**20:.0f} MiB data segment)"
                )
            failure = WorkerFailure("crashed", message, elapsed, peak)
            return item, self._failed(item, failure), True
        if self.memory_limit_mb is not None:
            rss = slot.rss()
            if rss is not None:
                slot.peak_rss = max(slot.peak_rss, rss)
                if rss > self.memory_limit_mb * 2**20:
                    slot.busy = False
                    message = (
                        f"killed: resident memory {rss / 2**20:.0f} MiB exceeded the "
                        f"limit of {self.memory_limit_mb:g} MiB"
                    )
                    failure = WorkerFailure("memory", message, elapsed, rss / 2**20)
                    return item, self._failed(item, failure), True
        if slot.limit is not None and elapsed > slot.limit + self.kill_grace_seconds:
            slot.busy = False
            message = (
                f"killed: still running {elapsed:.1f} s after the start, past its time "
                f"limit of {slot.limit:g} s"
            )
            failure = WorkerFailure("timeout", message, elapsed, peak)
            return item, self._failed(item, failure), True
        return None

    def close(self) -> None:
        """Stop the workers (those still busy are killed)."""
        if self._closed:
            return
        self._closed = True
        for slot in self._slots:
            if slot is None:
                continue
            if not slot.busy and slot.process.is_alive():
                try:
                    slot.conn.send(("stop",))
                except (OSError, ValueError):
                    pass
                slot.process.join(timeout=2)
            self._kill(slot)
        self._slots = []

    def __enter__(self) -> IsolatedPoolExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------ Dask

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
