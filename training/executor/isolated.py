"""The isolated pool: long-lived worker processes under a time and a memory limit; a
trial that blows either, or crashes its process, is killed with its worker and
reported as a :class:`~hyperprior.training.executor.WorkerFailure`."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for_ready
from typing import Any, Literal

from hyperprior.training.executor.base import (
    FailureHandler,
    R,
    T,
    TrialTimeoutError,
    WorkerFailure,
    _call,
    _init_worker,
    item_time_limit,
    time_limit,
)

log = logging.getLogger(__name__)


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
