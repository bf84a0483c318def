"""Trials on a Dask cluster of separate processes (a scheduler and 2 workers, as
docker-compose starts them) stop when they are cancelled, when their client dies, and at
their time limit, although Dask itself cannot stop a running task.

The trials here never finish by themselves (``dask_cluster.endless``), so seeing them
stop proves that something stopped them; timeouts are failure guards only.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from dask_cluster import TESTS, Cluster, EndlessTrial, dask_cluster, endless, idle
from waiting import wait_until

from hyperprior.training.executor import DaskExecutor, WorkerFailure


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with dask_cluster(tmp_path_factory.mktemp("dask-logs")) as running:
        yield running


@pytest.fixture
def watcher(cluster: Cluster) -> Iterator[object]:
    """A client of our own, to look at the cluster; it must be idle before and after."""
    from distributed import Client

    with Client(cluster.address) as client:
        wait_until(lambda: idle(client), "an idle cluster before the test")
        yield client
        wait_until(lambda: idle(client), "an idle cluster after the test")


def stopped(directory: Path, name: str) -> str | None:
    path = directory / f"{name}.stopped"
    return path.read_text() if path.exists() else None


def test_closing_the_executor_stops_running_trials(
    cluster: Cluster, watcher: object, tmp_path: Path
) -> None:
    executor = DaskExecutor(cluster.address)
    trials = [EndlessTrial(str(tmp_path), name) for name in ("a", "b", "c")]
    results: list[object] = []

    def consume() -> None:
        try:
            results.extend(executor.map_unordered(endless, trials))
        except BaseException as exc:  # noqa: BLE001 - cancelled futures raise here
            results.append(exc)

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    # Two workers of one thread each: two trials run, the third waits.
    wait_until(lambda: len(list(tmp_path.glob("*.started"))) == 2, "two trials running")
    executor.close()

    wait_until(lambda: len(list(tmp_path.glob("*.stopped"))) == 2, "both trials stopped")
    for path in tmp_path.glob("*.stopped"):
        assert path.read_text().startswith("TrialCancelledError: cancelled"), path.read_text()
    # The cancelled map returns: its consumer ends (a hang is pytest-timeout's to catch).
    consumer.join()
    assert len(list(tmp_path.glob("*.started"))) == 2  # the queued one never ran


def test_trials_of_a_client_that_died_stop(
    cluster: Cluster, watcher: object, tmp_path: Path
) -> None:
    # A refinement job's worker killed by SIGKILL: nothing of ours runs in it any more.
    script = textwrap.dedent(
        f"""
        import sys
        sys.path[:0] = [{str(TESTS)!r}]
        from dask_cluster import EndlessTrial, endless
        from hyperprior.training.executor import DaskExecutor

        executor = DaskExecutor({cluster.address!r})
        trials = [EndlessTrial({str(tmp_path)!r}, name) for name in ("x", "y")]
        for _ in executor.map_unordered(endless, trials):
            pass
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", script], cwd=TESTS.parent)
    try:
        wait_until(
            lambda: len(list(tmp_path.glob("*.started"))) == 2 or owner.poll() is not None,
            "the trials of the doomed client running",
        )
        assert owner.poll() is None, "the client exited early"
    finally:
        owner.kill()
        owner.wait(10)
    wait_until(lambda: stopped(tmp_path, "x") and stopped(tmp_path, "y"), "its trials stopped")
    assert "TrialCancelledError" in (stopped(tmp_path, "x") or "")


def test_a_trial_past_its_time_limit_is_stopped_and_reported(
    cluster: Cluster, watcher: object, tmp_path: Path
) -> None:
    executor = DaskExecutor(cluster.address, on_failure=lambda item, failure: failure)
    try:
        trials = [EndlessTrial(str(tmp_path), name, time_limit_seconds=0.5) for name in "pq"]
        results = dict(executor.map_unordered(endless, trials))
    finally:
        executor.close()

    assert set(results) == set(trials)
    for trial, failure in results.items():
        assert isinstance(failure, WorkerFailure)
        assert failure.reason == "timeout", failure
        assert failure.message.startswith("TrialTimeoutError: trial exceeded its time limit")
        assert (stopped(tmp_path, trial.name) or "").startswith("TrialTimeoutError")
