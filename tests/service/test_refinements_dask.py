"""Refinement jobs of the API on Dask: docker-compose's scheduler and 2 workers, started as
processes of this machine (``dask_cluster``), and ``HYPERPRIOR_DASK_SCHEDULER`` pointing
at them. A cancelled job leaves nothing running on the cluster.

That a trial already running is interrupted (not only that queued ones are dropped) is
shown with trials that never end by themselves in ``tests/training/test_dask_cancel.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from dask_cluster import (
    COMPOSE_SCHEDULER,
    Cluster,
    compose_services,
    dask_cluster,
    idle,
)
from fastapi.testclient import TestClient
from test_refinements_api import FINAL, submit_long_job
from test_refinements_api import connect as connect  # the fixture
from waiting import wait_until

from hyperprior.service.settings import Settings

SQLITE = pytest.mark.parametrize("backend", ["sqlite"])


def tasks_on_scheduler(client: Any) -> int:
    """How many tasks the scheduler still holds (the watcher itself submits none)."""
    return int(client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with dask_cluster(tmp_path_factory.mktemp("dask-logs")) as running:
        yield running


def test_compose_runs_dask_as_an_opt_in_profile_the_api_and_bootstrap_use() -> None:
    services = compose_services()
    scheduler, worker, api = services["dask-scheduler"], services["dask-worker"], services["api"]
    assert scheduler["profiles"] == worker["profiles"] == ["dask"]
    assert "profiles" not in api  # the default stack runs without Dask
    assert scheduler["build"] == worker["build"] == api["build"]  # the same versions
    assert COMPOSE_SCHEDULER in worker["command"]
    assert "8786:8786" in scheduler["ports"]  # workers on other hosts can join
    assert worker["command"][worker["command"].index("--nthreads") + 1] == "1"
    assert worker["deploy"]["replicas"] == 2
    # The API (and `docker compose run api hyperprior bootstrap`) takes the address from
    # the operator's environment; empty means local trial processes.
    assert api["environment"]["HYPERPRIOR_DASK_SCHEDULER"] == "${HYPERPRIOR_DASK_SCHEDULER:-}"
    assert Settings(dask_scheduler="").dask_scheduler == ""


@SQLITE
def test_bootstrap_takes_the_scheduler_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, db_url: str
) -> None:
    import hyperprior.training.executor

    captured: dict[str, Any] = {}

    def fake_make_executor(**kwargs: Any) -> Any:
        captured.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setenv("HYPERPRIOR_DASK_SCHEDULER", "tcp://scheduler.invalid:8786")
    monkeypatch.setattr(hyperprior.training.executor, "make_executor", fake_make_executor)
    from hyperprior.service.cli import main

    with pytest.raises(SystemExit):
        main(["bootstrap", "--datasets", "sklearn/iris", "--families", "linear", "--configs", "1",
              "--database-url", db_url])  # fmt: skip
    assert captured.get("dask_scheduler") == "tcp://scheduler.invalid:8786"


@SQLITE
def test_a_cancelled_refinement_leaves_nothing_running_on_dask(
    cluster: Cluster, connect: Callable[..., TestClient]
) -> None:
    from distributed import Client

    client = connect(jobs_in_process=True, dask_scheduler=cluster.address)
    with Client(cluster.address) as watcher:
        wait_until(lambda: idle(watcher), "an idle cluster before the job")
        url, runner = submit_long_job(client)
        # Its trials are on the cluster's workers (the job's own process runs none).
        wait_until(
            lambda: not idle(watcher) or client.get(url).json()["status"] in FINAL,
            "the job's trials on the Dask workers",
        )
        job = client.get(url).json()
        assert job["status"] == "running", job

        cancelled = client.post(f"{url}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"

        wait_until(lambda: not runner.workers(), "the job's worker process gone")
        wait_until(lambda: idle(watcher), "no trial of the job left on the cluster")
        job = client.get(url).json()
        assert job["status"] == "cancelled"
        assert job["result"] is None
        # Nothing of it can come back later: the scheduler has forgotten every task (a
        # task it still knew of could be retried), whatever the machine's speed.
        wait_until(lambda: not tasks_on_scheduler(watcher), "the job's tasks forgotten")
        assert idle(watcher)
