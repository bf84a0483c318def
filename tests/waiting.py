"""Waiting for something that real processes (servers, workers, job runners) do.

There is no deadline and no timed pause here: between two polls the waiting thread
yields the CPU to whatever is runnable (the processes it waits for), so a slow machine
only waits longer. Where a thing can be waited on directly (a thread's ``join``, an
event), tests do that instead. A wait that would never
end is caught by the test's own hang guard, pytest-timeout (``timeout`` in
pyproject.toml, or a test's ``@pytest.mark.timeout``), whose traceback shows the
``wait_until`` call and what it waited for. Imported as ``from waiting import
wait_until`` (``tests/`` is on ``sys.path``).
"""

from __future__ import annotations

import os
from collections.abc import Callable


def wait_until(condition: Callable[[], object], what: str) -> None:
    """Poll ``condition()`` until it is true; ``what`` names the wait in a hang's traceback."""
    while not condition():
        os.sched_yield()
