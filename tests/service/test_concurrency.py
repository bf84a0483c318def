"""Concurrent writers against a real server: exactly N x M runs, no errors, idempotent.

A uvicorn subprocess (two worker processes) serves a fresh database; eight writer
processes post 500 runs each in batches of 50 over the same five datasets, then send
every batch three more times.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from db.engine import make_engine
from db.store import Store
from service.auth import issue_key

WRITERS = 8
RUNS_PER_WRITER = 500
BATCH_SIZE = 50
RESENDS = 3
WRITER_SCRIPT = Path(__file__).with_name("ingest_writer.py")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def write_key(db_url: str) -> str:
    """An API key with scope write (ingest needs one)."""
    engine = make_engine(db_url)
    try:
        return issue_key(Store(engine), "write", name="writers")[1]
    finally:
        engine.dispose()


@pytest.fixture
def live_server(db_url: str, tmp_path: Path) -> Iterator[str]:
    """A real uvicorn server (two workers) on the test database."""
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    env = {**os.environ, "HYPERPRIOR_DATABASE_URL": db_url}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "service.app:app_factory",
            "--factory",
            "--port",
            str(port),
            "--workers",
            "2",
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited: {(tmp_path / 'server.log').read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail("server not ready after 60 s")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.mark.timeout(120)
def test_concurrent_writers_store_every_run_exactly_once(
    live_server: str, db_url: str, write_key: str
) -> None:
    writers = [
        subprocess.Popen(
            [
                sys.executable,
                str(WRITER_SCRIPT),
                live_server,
                str(index),
                str(RUNS_PER_WRITER),
                str(BATCH_SIZE),
                str(RESENDS),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "HYPERPRIOR_API_KEY": write_key},
        )
        for index in range(WRITERS)
    ]
    reports = []
    for writer in writers:
        out, err = writer.communicate(timeout=100)
        assert writer.returncode == 0, err
        reports.append(json.loads(out))

    expected = WRITERS * RUNS_PER_WRITER
    assert [e for r in reports for e in r["errors"]] == []
    assert sum(r["inserted"] for r in reports) == expected
    assert sum(r["duplicates"] for r in reports) == 0
    assert sum(r["resent_inserted"] for r in reports) == 0
    assert sum(r["resent_duplicates"] for r in reports) == expected * RESENDS
    engine = make_engine(db_url)
    try:
        stats = Store(engine).stats()
    finally:
        engine.dispose()
    assert (stats.runs, stats.datasets) == (expected, 5)
