"""POST/GET /v1/refinements: uploads, catalog jobs, worker supervision, restarts."""

from __future__ import annotations

import io
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from waiting import wait_until

from hyperprior.db.engine import make_engine
from hyperprior.db.store import Store
from hyperprior.service.app import create_app
from hyperprior.service.auth import issue_key
from hyperprior.service.settings import Settings
from hyperprior.training.datasets import load_dataset
from hyperprior.training.retrain import install_shipped
from hyperprior.training.seed import SEED_DIR

pytestmark = pytest.mark.parametrize("backend", ["sqlite"])

# num_leaves far beyond the search box: LightGBM sizes its histogram pool by it (about
# 16 GB on breast_cancer), a config that blows any sane memory limit within a second.
MEMORY_HOG = {"num_leaves": 131072, "min_child_samples": 0, "n_estimators": 5}
FINAL = ("succeeded", "failed")


def make_settings(db_url: str, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": db_url,
        "retrain_in_process": False,
        "surrogate_poll_s": 3600,
        "data_dir": data_dir,
        "job_poll_s": 0.1,
        "job_heartbeat_s": 0.3,
        "job_grace_s": 20,
        "refine_workers": 1,
        "refine_folds": 3,
        "trial_memory_limit_mb": 800,
        "gc_tuning": False,
        "jobs_in_process": False,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def connect(db_url: str, tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    """Start an app on the test database (each call is a fresh service process' worth)."""
    clients: list[TestClient] = []

    def start(**overrides: Any) -> TestClient:
        app = create_app(make_settings(db_url, tmp_path / "data", **overrides))
        _, key = issue_key(app.state.store, "write", name="tests")
        client = TestClient(app, headers={"Authorization": f"Bearer {key}"})
        client.__enter__()
        clients.append(client)
        return client

    yield start
    for client in reversed(clients):
        client.__exit__(None, None, None)


@pytest.fixture
def surrogates(db_url: str) -> None:
    engine = make_engine(db_url)
    install_shipped(Store(engine), SEED_DIR / "surrogates")
    engine.dispose()


def uploads_of(client: TestClient) -> list[str]:
    directory = Path(client.app.state.settings.data_dir) / "uploads"  # type: ignore[attr-defined]
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def wait_for(
    client: TestClient, url: str, done: Callable[[dict[str, Any]], bool], timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        answer = client.get(url)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        if done(body) or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


def csv_bytes(frame: pd.DataFrame, **kwargs: Any) -> bytes:
    return frame.to_csv(index=False, **kwargs).encode()


def wine_frame() -> pd.DataFrame:
    data = load_dataset("sklearn/wine")
    return data.X.assign(target=data.y.to_numpy())


def post_file(
    client: TestClient,
    content: bytes,
    filename: str = "data.csv",
    **fields: Any,
) -> Any:
    form = {"target": "target", "family": "linear", "budget_seconds": "5"}
    form.update({k: str(v) for k, v in fields.items()})
    return client.post(
        "/v1/refinements",
        data=form,
        files={"file": (filename, content, "application/octet-stream")},
    )


# ------------------------------------------------------------------ end to end


@pytest.mark.usefixtures("surrogates")
def test_catalog_refinement_runs_as_a_job_and_survives_a_restart(
    connect: Callable[..., TestClient], db_url: str
) -> None:
    client = connect(jobs_in_process=True, refine_workers=2)
    answer = client.post(
        "/v1/refinements",
        json={
            "dataset": "sklearn/breast_cancer",
            "family": "lightgbm",
            # An upper bound: the halving ends when every rung is measured, so a budget
            # this size never decides what runs, however busy the machine is.
            "budget_seconds": 120,
            "n_candidates": 4,
            "configs": [MEMORY_HOG],
        },
    )
    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    assert answer.headers["location"] == accepted["url"] == f"/v1/refinements/{accepted['id']}"
    job = wait_for(client, accepted["url"], lambda b: b["status"] in FINAL, timeout=120)
    assert job["status"] == "succeeded", job["error"]
    result = job["result"]
    assert result["metric"] == "roc_auc"
    assert result["score"] >= result["default_score"]
    assert result["suggestions"]["surrogate"] is not None
    assert result["zero_shot"]["score"] is not None
    assert job["progress"]["phase"] == "done"
    assert job["progress"]["trials_done"] == len(result["trials"])
    assert job["request"]["source"] == {
        "kind": "catalog",
        "dataset": "sklearn/breast_cancer",
        "rows": 569,
    }
    # The config over the memory limit failed; the job went on and answered.
    hog = [t for t in result["trials"] if t["config"].get("num_leaves") == 131072]
    assert hog
    assert hog[0]["status"] == "failed"
    assert "memory" in hog[0]["error"]
    # Every measured trial is in the history as a verification run.
    runs = client.get("/v1/runs", params={"source": "verification", "limit": 1000}).json()
    measured = [t for t in result["trials"] if t["status"] != "cut"]
    assert runs["count"] == len(measured)
    assert sum(r["status"] == "failed" for r in runs["data"]) >= 1
    # A restarted service still has the finished job.
    client.__exit__(None, None, None)
    again = connect()
    assert again.get(accepted["url"]).json()["result"] == result
    assert again.get(f"/v1/refinements/{os.urandom(16).hex()}").status_code == 404


def test_uploaded_file_is_refined_and_removed(connect: Callable[..., TestClient]) -> None:
    client = connect(jobs_in_process=True)
    buffer = io.BytesIO()
    wine_frame().to_parquet(buffer)
    # Named .csv, but Parquet inside: the type comes from the content.
    answer = post_file(
        client, buffer.getvalue(), filename="wine.csv", n_candidates=3, budget_seconds=4
    )
    assert answer.status_code == 202, answer.text
    stored = uploads_of(client)
    assert len(stored) == 1
    assert stored[0].endswith(".parquet")
    assert "wine" not in stored[0]
    job = wait_for(client, answer.json()["url"], lambda b: b["status"] in FINAL, timeout=120)
    assert job["status"] == "succeeded", job["error"]
    assert job["request"]["task"] == "multiclass"
    assert job["request"]["source"]["format"] == "parquet"
    assert "file" not in job["request"]["source"]
    assert job["result"]["metric"] == "accuracy"
    assert job["result"]["score"] >= job["result"]["default_score"]
    assert job["result"]["dataset"].startswith("upload/")
    assert uploads_of(client) == []


def submit_long_job(client: TestClient) -> tuple[str, Any]:
    """A random-forest refinement with minutes of work; its URL and the job runner."""
    frame = pd.concat([wine_frame()] * 20, ignore_index=True)
    answer = post_file(
        client, csv_bytes(frame), family="random_forest", budget_seconds=120, n_candidates=9
    )
    assert answer.status_code == 202, answer.text
    return answer.json()["url"], client.app.state.jobs  # type: ignore[attr-defined]


def test_killed_worker_fails_the_job(connect: Callable[..., TestClient]) -> None:
    client = connect(jobs_in_process=True)
    url, runner = submit_long_job(client)
    # Let the job get going: its worker is trying configs.
    running = wait_for(client, url, lambda b: b["progress"].get("phase") == "refining", 60)
    assert running["status"] == "running"
    [pid] = runner.workers().values()
    os.kill(pid, signal.SIGKILL)
    job = wait_for(client, url, lambda b: b["status"] in FINAL, timeout=30)
    assert job["status"] == "failed"
    assert "SIGKILL" in job["error"]
    assert uploads_of(client) == []


def test_a_job_without_heartbeat_is_failed_after_the_grace_period(
    connect: Callable[..., TestClient], db_url: str
) -> None:
    client = connect(jobs_in_process=True, job_grace_s=1.5, job_heartbeat_s=0.3)
    store: Store = client.app.state.store  # type: ignore[attr-defined]
    # A job claimed by a service instance that died with its worker, and its upload.
    directory = Path(client.app.state.settings.data_dir) / "uploads"  # type: ignore[attr-defined]
    directory.mkdir(parents=True, exist_ok=True)
    orphan = directory / f"{'ab' * 16}.csv"
    orphan.write_text("a,target\n1,2\n")
    request = {
        "family": "linear",
        "task": "binary",
        "budget_seconds": 10,
        "n_candidates": 2,
        "seed": 0,
        "source": {"kind": "upload", "file": orphan.name, "format": "csv", "target": "target"},
        "dataset_name": "lost",
        "configs": [],
    }
    job = store.create_job("refine", request)
    store.update_job(job.id, status="running")
    time.sleep(0.5)
    assert store.get_job(job.id).status == "running", "not failed before the grace period"
    body = wait_for(client, f"/v1/refinements/{job.id}", lambda b: b["status"] in FINAL, 15)
    assert body["status"] == "failed"
    assert "no heartbeat" in body["error"]
    # The runner sweeps uploads right after failing the job, in the same poll: on a busy
    # machine the answer can come first, so wait for the sweep.
    wait_until(lambda: not orphan.exists(), "the orphaned upload swept")


# ------------------------------------------------------------------ bad requests


def _frame(n: int = 60, *, classes: int = 2, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {"a": rng.normal(size=n), "b": rng.integers(0, 5, size=n), "target": np.arange(n) % classes}
    )


BAD_UPLOADS: dict[str, tuple[bytes, dict[str, Any], int, str]] = {
    "binary garbage": (bytes(range(256)) * 10, {}, 415, "CSV"),
    "a spreadsheet": (b"PK\x03\x04" + b"\x00" * 100, {}, 415, "export the sheet as CSV"),
    "corrupt parquet": (b"PAR1" + b"garbage" * 20 + b"PAR1", {}, 422, "cannot read the PARQUET"),
    "empty file": (b"", {}, 422, "empty"),
    "missing target": (
        csv_bytes(_frame().rename(columns={"target": "y"})),
        {},
        422,
        "no column 'target'",
    ),
    "constant target": (csv_bytes(_frame().assign(target=1)), {}, 422, "constant"),
    "too few rows": (csv_bytes(_frame(12)), {}, 422, "at least 30"),
    "a single-row class": (
        csv_bytes(pd.concat([_frame(40), _frame(1).assign(target=7)])),
        {},
        422,
        "single row",
    ),
    "binary with 3 classes": (
        csv_bytes(_frame(classes=3)),
        {"task": "binary"},
        422,
        "exactly 2 classes",
    ),
    "regression on labels": (
        csv_bytes(_frame().assign(target=lambda f: f["target"].map({0: "no", 1: "yes"}))),
        {"task": "regression"},
        422,
        "numeric target",
    ),
    "too many rows": (csv_bytes(_frame(600)), {}, 413, "HYPERPRIOR_MAX_UPLOAD_ROWS"),
    "too many bytes": (
        csv_bytes(_frame(60)) + b"\n" * 200_000,
        {},
        413,
        "HYPERPRIOR_MAX_UPLOAD_BYTES",
    ),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_uploads_get_a_clear_4xx_and_leave_nothing(
    connect: Callable[..., TestClient], case: str
) -> None:
    client = connect(max_upload_rows=500, max_upload_bytes=100_000)
    content, fields, code, message = BAD_UPLOADS[case]
    answer = post_file(client, content, **fields)
    assert answer.status_code == code, answer.text
    assert message in answer.text
    assert uploads_of(client) == []


def test_a_good_upload_is_queued_under_a_generated_name(connect: Callable[..., TestClient]) -> None:
    client = connect()
    answer = post_file(client, csv_bytes(_frame(), sep=";"), filename="../../etc/passwd")
    assert answer.status_code == 202, answer.text
    [name] = uploads_of(client)
    assert name.endswith(".csv")
    assert len(name) == 36
    job = client.get(answer.json()["url"]).json()
    assert job["status"] == "queued"
    assert job["request"]["task"] == "binary"
    assert job["request"]["source"]["rows"] == 60
    assert job["request"]["source"]["features"] == 2


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        ({"dataset": "sklearn/winee", "family": "linear"}, 422, "sklearn/wine"),
        ({"dataset": "sklearn/wine", "family": "catboost"}, 422, "family"),
        ({"dataset": "sklearn/wine", "family": "linear", "task": "binary"}, 422, "multiclass"),
        ({"dataset": "sklearn/wine", "family": "linear", "budget_seconds": 99999}, 422, "at most"),
        ({"dataset": "sklearn/wine", "family": "linear", "n_candidates": 40}, 422, "at most 27"),
        ({"dataset": "sklearn/wine", "family": "linear", "budget_seconds": -1}, 422, "greater"),
    ],
)
def test_bad_catalog_requests(
    connect: Callable[..., TestClient], body: dict[str, Any], code: int, message: str
) -> None:
    client = connect()
    answer = client.post("/v1/refinements", json=body)
    assert answer.status_code == code, answer.text
    assert message in answer.text


def test_other_bodies_and_the_job_quota(connect: Callable[..., TestClient]) -> None:
    client = connect(max_concurrent_jobs_per_key=1)
    assert (
        client.post(
            "/v1/refinements", content=b"x=1", headers={"content-type": "text/plain"}
        ).status_code
        == 415
    )
    assert (
        client.post(
            "/v1/refinements", content=b"{", headers={"content-type": "application/json"}
        ).status_code
        == 422
    )
    body = {"dataset": "sklearn/wine", "family": "linear"}
    assert client.post("/v1/refinements", json=body).status_code == 202
    refused = post_file(client, csv_bytes(_frame()))
    assert refused.status_code == 429
    assert "retry-after" in refused.headers
    assert uploads_of(client) == []


# ------------------------------------------------------------------ cancel and list


def test_cancel_a_queued_refinement(connect: Callable[..., TestClient]) -> None:
    client = connect()  # no job runner: jobs stay queued
    store: Store = client.app.state.store  # type: ignore[attr-defined]
    mine = post_file(client, csv_bytes(_frame()))
    theirs = client.post("/v1/refinements", json={"dataset": "sklearn/wine", "family": "linear"})
    assert mine.status_code == theirs.status_code == 202
    assert len(uploads_of(client)) == 1
    _, other_key = issue_key(store, "write", name="someone else")
    _, admin_key = issue_key(store, "admin", name="ops")
    mine_url, theirs_url = mine.json()["url"], theirs.json()["url"]

    answer = client.post(f"{mine_url}/cancel")
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "cancelled"
    assert answer.json()["error"] == "cancelled by API key 'tests'"
    assert answer.json()["finished_at"] is not None
    assert uploads_of(client) == []  # no worker will ever read it
    again = client.post(f"{mine_url}/cancel")
    assert again.status_code == 409
    assert "already cancelled" in again.json()["detail"]

    other = {"Authorization": f"Bearer {other_key}"}
    refused = client.post(f"{theirs_url}/cancel", headers=other)
    assert refused.status_code == 403
    assert "another API key" in refused.json()["detail"]
    assert client.get(theirs_url).json()["status"] == "queued"
    admin = client.post(f"{theirs_url}/cancel", headers={"Authorization": f"Bearer {admin_key}"})
    assert admin.status_code == 200
    assert admin.json()["error"] == "cancelled by API key 'ops'"
    assert client.post(f"/v1/refinements/{os.urandom(16).hex()}/cancel").status_code == 404
    assert client.post("/v1/refinements/not-a-uuid/cancel").status_code == 422

    listed = client.get("/v1/refinements", params={"status": "cancelled"}).json()["data"]
    assert [j["id"] for j in listed] == [theirs.json()["id"], mine.json()["id"]]  # newest first
    assert client.get("/v1/refinements", params={"status": "queued"}).json()["data"] == []
    assert client.get("/v1/refinements", params={"status": "paused"}).status_code == 422
    assert client.get("/v1/refinements", params={"limit": 0}).status_code == 422
    # A runner that starts later finds nothing to run.
    runner_client = connect(jobs_in_process=True)
    time.sleep(1.0)
    assert runner_client.get(mine_url).json()["status"] == "cancelled"
    assert runner_client.app.state.jobs.workers() == {}  # type: ignore[attr-defined]
    assert store.list_runs(source="verification", limit=1).count == 0


def test_cancel_a_running_refinement_stops_its_worker(connect: Callable[..., TestClient]) -> None:
    client = connect(jobs_in_process=True)
    store: Store = client.app.state.store  # type: ignore[attr-defined]
    url, runner = submit_long_job(client)
    running = wait_for(client, url, lambda b: b["progress"].get("trials_done", 0) >= 1, 90)
    assert running["status"] == "running"
    [pid] = runner.workers().values()

    cancelled = client.post(f"{url}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"

    deadline = time.monotonic() + 20
    while runner.workers() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert runner.workers() == {}
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    job = client.get(url).json()
    assert job["status"] == "cancelled"  # not overwritten by the worker's exit
    assert job["result"] is None
    assert uploads_of(client) == []
    # What it measured before the cancel stays in the history.
    done = running["progress"]["trials_done"]
    assert store.list_runs(source="verification", limit=1000).count >= done


# ------------------------------------------------------------------ client side


def test_suggest_refine_runs_locally_and_records_to_the_database(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from hyperprior.service.cli import main

    path = tmp_path / "wine.csv"
    path.write_bytes(csv_bytes(wine_frame()))
    argv = ["suggest", str(path), "--target", "target", "--family", "linear", "--n", "3"]
    argv += ["--refine", "--budget", "5", "--json", "--database-url", db_url]
    assert main(argv) == 0
    answer = json.loads(capsys.readouterr().out)
    refined = answer["refined"]
    assert {"config", "score", "metric", "trials"} <= set(refined)
    assert refined["metric"] == "accuracy"
    assert refined["score"] >= refined["default_score"]
    assert len(refined["trials"]) >= 2
    engine = make_engine(db_url)
    try:
        runs = Store(engine).list_runs(source="verification", limit=1000)
    finally:
        engine.dispose()
    assert runs.count == refined["recorded"]["runs"] >= 2
    assert {r.family for r in runs.data} == {"linear"}


def test_suggest_refine_over_http_records_verification_runs_to_the_service(
    connect: Callable[..., TestClient],
) -> None:
    import argparse

    from hyperprior.client import Client, Description, Suggestion, Suggestions
    from hyperprior.service.commands.suggest import refine_command
    from hyperprior.training.metafeatures import compute_metafeatures

    service = connect()
    frame = wine_frame()
    X, y = frame.drop(columns="target"), frame["target"]
    meta = compute_metafeatures(X, y, "multiclass")
    # What `hyperprior suggest my-wine.csv --url URL --refine` verifies: the printed answer.
    answer = Suggestions(
        [
            Suggestion(1, {"C": 0.1}, None, None, "surrogate"),
            Suggestion(2, {"C": 10}, None, None, "surrogate"),
        ],
        None,
        [],
        Description("my-wine", "multiclass", meta),
        "linear",
    )
    args = argparse.Namespace(budget=5.0, n=2, seed=None, family="linear", url="http://testserver")
    refined = refine_command(Client(http=service), args, X, y, answer)
    recorded = refined["recorded"]
    assert recorded == {"to": "http://testserver", "runs": len(refined["trials"])}
    runs = service.get("/v1/runs", params={"source": "verification"}).json()
    assert runs["count"] == recorded["runs"]
    dataset = service.get(f"/v1/datasets/{runs['data'][0]['dataset_id']}").json()
    assert dataset["name"] == "my-wine"
