"""A Dask cluster of separate processes, as docker-compose starts it, for the tests.

``dask scheduler`` and ``dask worker`` (with its nanny, one thread each) run as their
own processes on a free port of 127.0.0.1, with ``tests/`` and the repository on their
``PYTHONPATH`` so that workers can import the trial functions (the project's, and the
helpers below). :func:`idle` says whether the workers run nothing.

The trial helpers never finish by themselves: a test that sees them stop has seen them
stopped, whatever the machine's speed. They leave marker files: ``NAME.started`` when
they begin, ``NAME.stopped`` (holding the exception that ended them) when they end.

Imported as ``from dask_cluster import ...`` (``tests/`` is on ``sys.path``, as for
``pg_server``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


@dataclass(frozen=True)
class EndlessTrial:
    """A trial that runs until something stops it (``time_limit_seconds`` as specs have)."""

    directory: str
    name: str
    time_limit_seconds: float | None = None


def endless(trial: EndlessTrial) -> str:
    """Loop in Python (as a boosting loop does between rounds) until interrupted."""
    markers = Path(trial.directory)
    (markers / f"{trial.name}.started").write_text(str(os.getpid()))
    try:
        while True:
            time.sleep(0.02)
    except BaseException as exc:
        (markers / f"{trial.name}.stopped").write_text(f"{type(exc).__name__}: {exc}")
        raise


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Cluster:
    """A running cluster: its scheduler address and processes."""

    address: str
    processes: tuple[subprocess.Popen[bytes], ...]
    log_dir: Path

    def logs(self) -> str:
        """The tail of every process's log, for failure messages."""
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.log_dir.glob("*.log"))
        )


@contextmanager
def dask_cluster(log_dir: Path, workers: int = 2, timeout: float = 120.0) -> Iterator[Cluster]:
    """A scheduler and ``workers`` worker processes; stopped on exit."""
    from distributed import Client

    log_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = str(Path(sys.executable).with_name("dask"))
    python_path = os.pathsep.join([str(ROOT), str(TESTS), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": python_path.rstrip(os.pathsep)}
    commands = [[dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]]
    commands += [
        [dask, "worker", address, "--nthreads", "1", "--no-dashboard", "--name", f"worker-{i}"]
        for i in range(workers)
    ]
    processes = []
    try:
        for i, command in enumerate(commands):
            name = "scheduler" if i == 0 else f"worker-{i - 1}"
            processes.append(
                subprocess.Popen(
                    command,
                    stdout=subprocess.DEVNULL,
                    stderr=(log_dir / f"{name}.log").open("wb"),
                    env=env,
                )
            )
        cluster = Cluster(address, tuple(processes), log_dir)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with Client(address, timeout=5) as client:
                    if len(client.scheduler_info()["workers"]) >= workers:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Dask cluster did not come up:\n{cluster.logs()}")
            time.sleep(0.3)
        yield cluster
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def idle(client: Any) -> bool:
    """Whether no worker of the cluster is running or holding a task to run."""
    return not any(client.processing().values())


def wait_until(condition: Any, timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll ``condition()`` until it is true; fail after ``timeout`` (a guard, not a bound)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting after {timeout:g} s for: {what}")
        time.sleep(interval)
