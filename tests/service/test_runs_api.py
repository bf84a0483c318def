"""The HTTP API of the run history, through the ASGI app (TestClient)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from hyperprior.db.engine import make_engine
from hyperprior.db.errors import DatabaseUnavailableError, SchemaOutOfDateError
from hyperprior.service.app import create_app
from hyperprior.service.auth import issue_key
from hyperprior.service.settings import Settings

MakeRun = Callable[..., dict[str, Any]]
JSON = {"content-type": "application/json"}


def make_client(db_url: str, **settings: Any) -> TestClient:
    app = create_app(Settings(database_url=db_url, **settings))
    # Ingest needs a key with scope write (issue 8).
    _, key = issue_key(app.state.store, "write", name="tests")
    return TestClient(app, headers={"Authorization": f"Bearer {key}"})


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    with make_client(db_url, max_body_bytes=1_000_000, max_runs_per_batch=50) as client:
        yield client


def post_runs(client: TestClient, runs: list[dict[str, Any]]) -> Any:
    return client.post("/v1/runs", json={"runs": runs})


# ----------------------------------------------------------------------------- happy path


def test_ingest_list_and_read_back(client: TestClient, make_run: MakeRun) -> None:
    runs = [make_run(index=i) for i in range(3)] + [make_run(dataset="wine", task="binary")]

    created = post_runs(client, runs)
    again = post_runs(client, runs)

    answer = {"dataset_ids": [1, 2]}  # iris, then wine: reuse them as dataset_id
    assert (created.status_code, created.json()) == (201, {"inserted": 4, "duplicates": 0} | answer)
    assert (again.status_code, again.json()) == (200, {"inserted": 0, "duplicates": 4} | answer)
    listing = client.get("/v1/runs").json()
    assert listing["count"] == 4
    assert listing["next_cursor"] is None
    first = listing["data"][0]
    assert set(first) >= {"id", "dataset_id", "config", "score", "created_at", "source"}
    one = client.get(f"/v1/runs/{runs[0]['id']}").json()
    assert one["config"] == runs[0]["config"]
    datasets = client.get("/v1/datasets").json()
    assert datasets["count"] == 2
    iris = client.get(f"/v1/datasets/{one['dataset_id']}").json()
    assert (iris["name"], iris["n_rows"], iris["n_classes"]) == ("iris", 150, 3)
    assert iris["meta_features"]["skewness_mean"] == 0.25


def test_runs_may_reference_a_dataset_by_id(client: TestClient, make_run: MakeRun) -> None:
    post_runs(client, [make_run()])
    dataset_id = client.get("/v1/datasets").json()["data"][0]["id"]
    run = make_run(index=1)
    del run["dataset"]
    run["dataset_id"] = dataset_id

    response = post_runs(client, [run])

    assert response.status_code == 201
    assert client.get(f"/v1/runs/{run['id']}").json()["dataset_id"] == dataset_id


def test_metrics_are_stored_and_read_back(client: TestClient, make_run: MakeRun) -> None:
    measured = make_run(index=0, metrics={"accuracy": 0.9, "log_loss": 0.31, "f1_macro": 0.88})
    bare = make_run(index=1)

    assert post_runs(client, [measured, bare]).status_code == 201

    assert client.get(f"/v1/runs/{measured['id']}").json()["metrics"] == measured["metrics"]
    assert client.get(f"/v1/runs/{bare['id']}").json()["metrics"] is None


def test_failed_run_without_score(client: TestClient, make_run: MakeRun) -> None:
    run = make_run(status="failed", score=None, error="out of memory")

    assert post_runs(client, [run]).status_code == 201
    assert client.get(f"/v1/runs/{run['id']}").json()["error"] == "out of memory"


def test_stats(client: TestClient, make_run: MakeRun) -> None:
    post_runs(
        client,
        [
            make_run(),
            make_run(
                index=1,
                family="random_forest",
                source="bootstrap",
                config={"n_estimators": 200, "max_features": "sqrt"},
            ),
            make_run(index=2, dataset="wine", task="binary", status="failed", score=None),
        ],
    )

    stats = client.get("/v1/stats").json()

    assert stats == {
        "runs": 3,
        "datasets": 2,
        "by_family": {"lightgbm": 2, "random_forest": 1},
        "by_task": {"binary": 1, "multiclass": 2},
        "by_source": {"bootstrap": 1, "user": 2},
        "by_status": {"failed": 1, "ok": 2},
    }


def test_list_runs_filters_and_cursor(client: TestClient, make_run: MakeRun) -> None:
    post_runs(client, [make_run(index=i) for i in range(5)])
    forest = {"family": "random_forest", "source": "import"}
    depths = enumerate((4, 8, 12))
    post_runs(client, [make_run(index=i, config={"max_depth": d}, **forest) for i, d in depths])

    ids: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/runs", params=params).json()
        assert page["count"] == 8
        ids += [r["id"] for r in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert len(ids) == len(set(ids)) == 8
    assert client.get("/v1/runs", params={"family": "random_forest"}).json()["count"] == 3
    assert client.get("/v1/runs", params={"source": "import"}).json()["count"] == 3
    dataset_id = client.get("/v1/datasets").json()["data"][0]["id"]
    assert client.get("/v1/runs", params={"dataset_id": dataset_id}).json()["count"] == 8
    assert client.get("/v1/runs", params={"since": "2999-01-01T00:00:00Z"}).json()["count"] == 0
    assert client.get("/v1/runs", params={"since": "2000-01-01T00:00:00"}).json()["count"] == 8


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": 0}, r"limit: Input should be greater than or equal to 1"),
        ({"limit": 1001}, r"limit: Input should be less than or equal to 1000"),
        ({"cursor": "nonsense"}, r"invalid cursor"),
        ({"since": "yesterday"}, r"since: Input should be a valid datetime"),
        ({"source": "web"}, r"source: Input should be"),
    ],
)
def test_list_runs_rejects_bad_parameters(
    client: TestClient, params: dict[str, Any], message: str
) -> None:
    response = client.get("/v1/runs", params=params)

    assert response.status_code == 422
    assert re.search(message, response.json()["detail"][0]["msg"])


def test_not_found(client: TestClient) -> None:
    assert client.get("/v1/datasets/999").status_code == 404
    response = client.get(f"/v1/runs/{uuid.uuid4()}")
    assert response.status_code == 404
    assert "not found" in response.json()["detail"]


# ----------------------------------------------------------------------------- 422


def _set(run: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    target = run
    for key in parents:
        target = target[key]
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "field", "message"),
    [
        ("score", float("nan"), "score", "finite number"),
        ("score", float("inf"), "score", "finite number"),
        ("score", None, "score", "score is required unless status is 'failed'"),
        ("score", _DELETE, "score", "score is required unless status is 'failed'"),
        ("fidelity", 0, "fidelity", "greater than 0"),
        ("fidelity", 1.01, "fidelity", "less than or equal to 1"),
        ("fidelity", float("nan"), "fidelity", "finite number"),
        ("cost_seconds", -1, "cost_seconds", "greater than or equal to 0"),
        ("dataset.task", "ranking", "dataset.task", "'binary', 'multiclass' or 'regression'"),
        ("direction", "up", "direction", "'maximize' or 'minimize'"),
        ("source", "web", "source", "'user', 'bootstrap', 'verification' or 'import'"),
        ("status", "crashed", "status", "'ok' or 'failed'"),
        ("dataset.meta_features.n_rows", _DELETE, "dataset.meta_features.n_rows", "required"),
        ("dataset.meta_features.n_features", _DELETE, "dataset.meta_features.n_features", ""),
        ("dataset.meta_features.n_rows", -10, "dataset.meta_features.n_rows", "greater than 0"),
        ("dataset.meta_features.n_features", 0, "dataset.meta_features.n_features", "than 0"),
        ("dataset.meta_features.n_numeric", -1, "dataset.meta_features", "n_numeric is a count"),
        ("dataset.meta_features.skew", float("inf"), "dataset.meta_features.skew", "finite"),
        (
            "dataset.meta_features.n_classes",
            1,
            "dataset.meta_features.n_classes",
            ">= 2|equal to 2",
        ),
        ("config.learning_rate", float("nan"), "config", "config.learning_rate must be a finite"),
        ("dataset_id", 3, "run", "exactly one of 'dataset' and 'dataset_id'"),
        ("dataset", _DELETE, "run", "exactly one of 'dataset' and 'dataset_id'"),
        ("fidelty", 1, "fidelty", "Extra inputs are not permitted"),
        ("family", "", "family", "at least 1 character"),
        ("metrics", {"log_loss": float("nan")}, "metrics.log_loss", "finite number"),
        ("metrics", {"log_loss": "low"}, "metrics.log_loss", "valid number"),
        ("metrics", [0.3], "metrics", "valid dictionary"),
    ],
)
def test_invalid_run_is_rejected_naming_run_and_field(
    client: TestClient, make_run: MakeRun, path: str, value: Any, field: str, message: str
) -> None:
    good, bad = make_run(index=0), make_run(index=1)
    _set(bad, path, value)
    # Python's json writes (and FastAPI's json.loads reads) NaN and Infinity literals.
    body = json.dumps({"runs": [good, bad]})

    response = client.post("/v1/runs", content=body, headers=JSON)

    assert response.status_code == 422, response.text
    errors = [e for e in response.json()["detail"] if e.get("run_index") == 1]
    assert errors, response.text
    error = errors[0]
    assert (error["run_id"], error["field"]) == (bad["id"], field)
    assert re.search(rf"^runs\[1\] \(id {bad['id']}\): {re.escape(field)}: ", error["msg"])
    assert re.search(message, error["msg"]), error["msg"]
    assert client.get("/v1/stats").json()["runs"] == 0


@pytest.mark.parametrize(
    ("task", "n_classes", "message"),
    [
        ("binary", 3, "n_classes must be 2 for a binary task"),
        ("regression", 2, "n_classes must be null or absent for a regression task"),
        ("multiclass", 1, "greater than or equal to 2"),
    ],
)
def test_n_classes_must_fit_the_task(
    client: TestClient, make_run: MakeRun, task: str, n_classes: int, message: str
) -> None:
    run = make_run(task=task)
    run["dataset"]["meta_features"]["n_classes"] = n_classes

    response = post_runs(client, [run])

    assert response.status_code == 422
    assert message in response.json()["detail"][0]["msg"]


def test_invalid_uuid_names_the_run_index(client: TestClient, make_run: MakeRun) -> None:
    response = post_runs(client, [make_run(run_id=None, id="not-a-uuid")])

    assert response.status_code == 422
    error = response.json()["detail"][0]
    assert error["run_index"] == 0
    assert error["field"] == "id"
    assert error["msg"].startswith("runs[0] (id not-a-uuid): id: ")


def test_unknown_dataset_id_is_422_naming_the_run(client: TestClient, make_run: MakeRun) -> None:
    run = make_run(index=1)
    del run["dataset"]
    run["dataset_id"] = 777

    response = post_runs(client, [make_run(), run])

    assert response.status_code == 422
    error = response.json()["detail"][0]
    assert (error["run_index"], error["run_id"], error["field"]) == (1, run["id"], "dataset_id")
    assert "unknown dataset 777" in error["msg"]
    assert client.get("/v1/stats").json()["runs"] == 0


def test_malformed_json_and_empty_batch(client: TestClient) -> None:
    assert client.post("/v1/runs", content=b'{"runs": [', headers=JSON).status_code == 422
    assert client.post("/v1/runs", json={"runs": []}).status_code == 422
    assert client.post("/v1/runs", json=[]).status_code == 422


def test_too_many_runs_in_one_request(client: TestClient, make_run: MakeRun) -> None:
    response = post_runs(client, [make_run(index=i) for i in range(51)])

    assert response.status_code == 422
    assert "limit is 50" in response.json()["detail"][0]["msg"]


def test_many_errors_are_capped(client: TestClient, make_run: MakeRun) -> None:
    runs = [make_run(index=i, fidelity=2.0, cost_seconds=-1) for i in range(40)]

    body = post_runs(client, runs).json()

    assert len(body["detail"]) == 50
    assert body["error_count"] == 80


# ----------------------------------------------------------------------------- 409, 413


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_reused_id_with_other_content_is_409_and_nothing_is_inserted(
    db_url: str, make_run: MakeRun
) -> None:
    with make_client(db_url) as client:
        run = make_run()
        post_runs(client, [run])
        changed = {**run, "score": 0.1}
        fresh = make_run(index=5)

        response = post_runs(client, [fresh, changed])

        assert response.status_code == 409
        assert response.json()["run_id"] == run["id"]
        assert run["id"] in response.json()["detail"]
        assert client.get("/v1/stats").json()["runs"] == 1


def test_body_over_the_limit_is_413(db_url: str, make_run: MakeRun) -> None:
    with make_client(db_url, max_body_bytes=5_000) as client:
        runs = [make_run(index=i) for i in range(20)]

        declared = post_runs(client, runs)

        def chunks() -> Iterator[bytes]:
            body = json.dumps({"runs": runs}).encode()
            for start in range(0, len(body), 1000):
                yield body[start : start + 1000]

        streamed = client.post("/v1/runs", content=chunks(), headers=JSON)
        small = post_runs(client, runs[:2])

    for response in (declared, streamed):
        assert response.status_code == 413
        assert "larger than the limit of 4.88281 KiB" in response.json()["detail"]
        assert "HYPERPRIOR_MAX_BODY_BYTES" in response.json()["detail"]
    assert small.status_code == 201


# ----------------------------------------------------------------------------- health


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_readyz_is_503_when_schema_is_not_at_head(db_url: str) -> None:
    with make_client(db_url) as client:
        engine = make_engine(db_url)
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '0000_older'"))
        engine.dispose()

        response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["status"] == "schema_out_of_date"


def test_startup_is_refused_when_schema_is_not_at_head(blank_db_url: str) -> None:
    app = create_app(Settings(database_url=blank_db_url))

    with pytest.raises(SchemaOutOfDateError, match="hyperprior db upgrade"), TestClient(app):
        pass


def test_database_unavailable_is_503_with_retry_after(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = client.app.state.store  # type: ignore[attr-defined]

    def down() -> None:
        raise DatabaseUnavailableError("connection refused", retry_after=7)

    monkeypatch.setattr(store, "stats", down)

    response = client.get("/v1/stats")

    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"
    assert "connection refused" in response.json()["detail"]


def test_openapi_documents_the_run_schema(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()

    assert "/v1/runs" in spec["paths"]
    assert "RunCreate" in spec["components"]["schemas"]
    assert "409" in spec["paths"]["/v1/runs"]["post"]["responses"]
