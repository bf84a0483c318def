"""Waiting for something that real processes (servers, workers, job runners) do.

The timeout is a guard that turns a hang into a failure, never a bound on how fast the
machine must be: give it minutes, and assert on the outcome, not on the time taken.
Imported as ``from waiting import wait_until`` (``tests/`` is on ``sys.path``).
"""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``condition()`` until it is true; fail after ``timeout`` seconds (a guard)."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting after {timeout:g} s for: {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
