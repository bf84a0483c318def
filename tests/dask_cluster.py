"""A Dask cluster of separate processes, as docker-compose starts it, for the tests.

The ``dask-scheduler`` and ``dask-worker`` services of ``docker-compose.yml`` run as
processes of this machine: their commands, as written there, with the scheduler on a
free port of 127.0.0.1 instead of the compose network's ``dask-scheduler:8786``, and as
many workers as the file's replicas. ``tests/`` and the repository are on their
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
            # The workload itself, not a budget: short waits so that the guard's
            # exception, delivered between Python steps, lands within one of them.
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


#: Where compose's workers find the scheduler, and the port it listens on.
COMPOSE_SCHEDULER = "tcp://dask-scheduler:8786"
COMPOSE_PORT = "8786"


def compose_services() -> dict[str, Any]:
    """The services of ``docker-compose.yml``."""
    import yaml

    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"])


def compose_commands(port: int, work_dir: Path) -> list[list[str]]:
    """The scheduler's and each worker's command line, from ``docker-compose.yml``,
    moved from the compose network to 127.0.0.1:``port`` and from ``/tmp`` to ``work_dir``."""
    services = compose_services()
    dask = str(Path(sys.executable).with_name("dask"))

    def local(argv: list[str], name: str) -> list[str]:
        moved = {"0.0.0.0": "127.0.0.1", COMPOSE_PORT: str(port)}
        moved[COMPOSE_SCHEDULER] = f"tcp://127.0.0.1:{port}"
        out = [moved.get(a, a) for a in argv]
        if "--local-directory" in out:
            out[out.index("--local-directory") + 1] = str(work_dir / name)
        assert out[0] == "dask", argv
        return [dask, *out[1:]]

    scheduler = services["dask-scheduler"]["command"]
    worker = services["dask-worker"]["command"]
    replicas = int(services["dask-worker"].get("deploy", {}).get("replicas", 1))
    commands = [local(scheduler, "scheduler")]
    commands += [local(worker, f"worker-{i}") + ["--name", f"worker-{i}"] for i in range(replicas)]
    return commands


@contextmanager
def dask_cluster(log_dir: Path, timeout: float = 120.0) -> Iterator[Cluster]:
    """The compose file's scheduler and workers as processes here; stopped on exit."""
    from distributed import Client

    log_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    python_path = os.pathsep.join([str(ROOT), str(TESTS), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": python_path.rstrip(os.pathsep)}
    commands = compose_commands(port, log_dir)
    workers = len(commands) - 1
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
        # Dask's own waits: the connect retries until the scheduler listens, then the
        # scheduler tells when the workers have registered (timeouts only guard a hang).
        try:
            with Client(address, timeout=timeout) as client:
                client.wait_for_workers(workers, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            message = f"the Dask cluster did not come up: {exc}\n{cluster.logs()}"
            raise RuntimeError(message) from exc
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
