"""A real uvicorn process serving the app, for tests and benchmarks.

One place to start, wait for and stop a server process, so that tests and benchmarks
measure the same thing ``hyperprior serve`` runs.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO


class ServerStartError(RuntimeError):
    """The server process exited or did not become ready in time."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ready(port: int) -> bool:
    with contextlib.suppress(OSError, http.client.HTTPException):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/readyz")
            return conn.getresponse().status == 200
        finally:
            conn.close()
    return False


@contextlib.contextmanager
def serve_subprocess(
    database_url: str,
    *,
    workers: int = 1,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    ready_timeout_s: float = 90.0,
    cwd: Path | None = None,
    launcher: Path | None = None,
) -> Iterator[str]:
    """Run ``uvicorn service.app:app_factory`` on a free port until the block ends.

    Args:
        database_url: the database the server uses (migrated to head).
        workers: uvicorn worker processes.
        env: extra ``HYPERPRIOR_*`` settings for the server.
        log_path: where the server's output goes (default: inherited).
        ready_timeout_s: how long to wait for ``/readyz`` to answer 200.
        cwd: the server's working directory.
        launcher: a script run instead of ``python -m uvicorn`` (with uvicorn's arguments),
            e.g. one that imports the app from another checkout.

    Yields:
        The base URL, ``http://127.0.0.1:PORT``.

    Raises:
        ServerStartError: the process exited or was not ready in time (with its log).
    """
    port = free_port()
    full_env = {
        **os.environ,
        "HYPERPRIOR_DATABASE_URL": database_url,
        "HYPERPRIOR_RETRAIN_IN_PROCESS": "false",
        **(env or {}),
    }
    cmd = [
        sys.executable,
        *(["-m", "uvicorn"] if launcher is None else [str(launcher)]),
        "hyperprior.service.app:app_factory",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    log: IO[str] | None = log_path.open("w") if log_path is not None else None
    proc = subprocess.Popen(
        cmd, env=full_env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT if log else None
    )

    def output() -> str:
        return log_path.read_text() if log_path is not None else "(see stderr)"

    try:
        deadline = time.monotonic() + ready_timeout_s
        while not _ready(port):
            if proc.poll() is not None:
                raise ServerStartError(f"server exited with status {proc.returncode}: {output()}")
            if time.monotonic() > deadline:
                raise ServerStartError(f"server not ready after {ready_timeout_s:g} s: {output()}")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log is not None:
            log.close()
