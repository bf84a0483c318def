"""Waiting for something that real processes (servers, workers, job runners) do.

There is no deadline here: a slow machine only waits longer. A wait that would never
end is caught by the test's own hang guard, pytest-timeout (``timeout`` in
pyproject.toml, or a test's ``@pytest.mark.timeout``), whose traceback shows the
``wait_until`` call and what it waited for. Imported as ``from waiting import
wait_until`` (``tests/`` is on ``sys.path``).
"""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(condition: Callable[[], object], what: str) -> None:
    """Poll ``condition()`` until it is true; ``what`` names the wait in a hang's traceback."""
    pause = 0.01
    while not condition():
        time.sleep(pause)  # the pause between two polls, not a budget: nothing is timed
        pause = min(pause * 2, 0.5)
