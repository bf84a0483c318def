"""A FastAPI app on a real uvicorn, in a thread, for tests that need a real server.

Imported as ``from serving import serve`` (``tests/`` is on ``sys.path``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn
from waiting import wait_until


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """``app`` on a real uvicorn on a free port of 127.0.0.1; its URL while it runs."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    # A guard against a server that never starts, not a bound on how fast it does.
    wait_until(lambda: server.started or not thread.is_alive(), "uvicorn to start")
    if not server.started:
        pytest.fail("uvicorn did not start")
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
