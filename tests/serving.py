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


class _Server(uvicorn.Server):
    """A uvicorn server that says when it has started or given up."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: Any = None) -> None:
        try:
            await super().startup(sockets=sockets)
        finally:
            self.ready.set()

    def run(self, sockets: Any = None) -> None:
        try:
            super().run(sockets=sockets)
        finally:
            self.ready.set()  # a server that failed before its startup ends the wait too


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """``app`` on a real uvicorn on a free port of 127.0.0.1; its URL while it runs."""
    server = _Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    # No deadline: a server that never starts is pytest-timeout's to catch.
    server.ready.wait()
    if not server.started:
        pytest.fail("uvicorn did not start")
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
