"""Functions for the isolated pool's tests: a module of its own, so that spawned workers
import only this and not the test module's dependencies."""

from __future__ import annotations

import os
import signal
import time


def sleep_ignoring_alarms(seconds: float) -> str:
    """Like a C++ fit that never returns to the interpreter: the soft limit cannot stop it."""
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    time.sleep(seconds)
    return "finished"


def crash(_: int) -> None:
    """Die the way a segfaulting extension does."""
    os.kill(os.getpid(), signal.SIGSEGV)


def times(x: int, shared: int) -> int:
    """``x * shared``, with ``shared`` sent once per worker."""
    return x * shared
