"""The SDK against the real app (HTTP through the ASGI app) and in-process."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from hyperprior.client import (
    AuthError,
    Client,
    ConflictError,
    Description,
    NotFoundError,
    ServiceUnavailable,
    ValidationError,
    infer_task,
)
from hyperprior.client.errors import error_for_status
from hyperprior.db.store import Store

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
MakeRun = Callable[..., dict[str, Any]]


class FlakyTransport(httpx.BaseTransport):
    """Forwards to the app, but loses answers or answers 503 first, as told.

    ``plan`` lists what happens to successive requests: ``"lose"`` (the app stores the
    batch, then the connection drops before the answer), ``"503"`` (answered 503 with
    Retry-After, the app never sees it), ``"refuse"`` (connection refused), ``"ok"``.
    """

    def __init__(self, app: TestClient, plan: list[str]) -> None:
        self.app = app
        self.plan = list(plan)
        self.bodies: list[bytes] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        step = self.plan.pop(0) if self.plan else "ok"
        body = request.read()
        self.bodies.append(body)
        if step == "refuse":
            raise httpx.ConnectError("connection refused", request=request)
        if step == "503":
            return httpx.Response(
                503,
                json={"detail": "database unavailable, retry later"},
                headers={"Retry-After": "2"},
            )
        answer = self.app.request(
            request.method, str(request.url), content=body, headers=dict(request.headers)
        )
        if step == "lose":
            raise httpx.ReadTimeout("the answer was lost", request=request)
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)


def _flaky_client(service: TestClient, plan: list[str]) -> tuple[Client, FlakyTransport, list]:
    transport = FlakyTransport(service, plan)
    http = httpx.Client(base_url="http://testserver", transport=transport)
    client = Client(http=http, backoff=0.1, retries=4)
    sleeps: list[float] = []
    client._sleep = sleeps.append
    return client, transport, sleeps


# ----------------------------------------------------------------------------- describe


def test_infer_task() -> None:
    assert infer_task([0, 1, 1, 0]) == "binary"
    assert infer_task(["a", "b", "c", "a"]) == "multiclass"
    assert infer_task([1, 2, 3, 2, 1]) == "multiclass"
    assert infer_task(np.linspace(0, 1, 50)) == "regression"
    assert infer_task(list(range(40))) == "regression"


def test_describe_computes_meta_features_locally(
    local_client: Client, binary_data: tuple[pd.DataFrame, pd.Series]
) -> None:
    X, y = binary_data
    description = local_client.describe(X, y)
    assert description.task == "binary"
    assert description.name == "y"
    assert (description.n_rows, description.n_features) == (200, 5)
    assert description.meta_features["n_classes"] == 2
    assert 0.0 <= description.meta_features["lm_stump"] <= 1.0  # a landmarker ran
    named = local_client.describe(X.to_numpy(), y.to_numpy(), "binary", name="arrays")
    assert named.name == "arrays"
    assert named.n_features == 5
    with pytest.raises(ValidationError, match="task must be one of"):
        local_client.describe(X, y, "ranking")
    with pytest.raises(ValidationError, match="classification needs at least 2 classes"):
        local_client.describe(X, pd.Series(np.zeros(200)), "binary")


# ----------------------------------------------------------------------------- suggest


def test_suggest_over_http_and_in_process_agree(
    http_client: Client, local_client: Client, binary_data: tuple[pd.DataFrame, pd.Series]
) -> None:
    X, y = binary_data
    description = http_client.describe(X, y, name="mine")
    remote = http_client.suggest(description, None, "lightgbm", n=3, seed=1)
    local = local_client.suggest(description, None, "lightgbm", n=3, seed=1)
    assert [s.config for s in remote] == [s.config for s in local]
    assert remote.warnings == local.warnings
    assert remote.warnings[0].startswith("no surrogate is active for lightgbm")
    assert remote.best == remote[0].config
    assert remote.best["n_estimators"] == 100
    assert remote.family == "lightgbm"
    assert remote.description == description
    with pytest.raises(ValidationError, match="unknown family"):
        http_client.suggest(description, None, "catboost")
    with pytest.raises(ValidationError, match="unknown family"):
        local_client.suggest(description, None, "catboost")
    with pytest.raises(ValidationError, match="num_leaves=-3 must be >= 2"):
        http_client.suggest(description, None, "lightgbm", fixed={"num_leaves": -3})


# ----------------------------------------------------------------------------- record


@pytest.mark.parametrize("backend", BACKENDS)
def test_record_batches_and_is_idempotent(
    http_client: Client, store: Store, make_run: MakeRun
) -> None:
    runs = [make_run(index=i) for i in range(2300)]
    first = http_client.record(runs)
    again = http_client.record(runs)
    assert (first.inserted, first.duplicates, first.requests) == (2300, 0, 3)
    assert (again.inserted, again.duplicates) == (0, 2300)
    assert first.ids == [r["id"] for r in runs]
    assert store.stats().runs == 2300


def test_record_fills_ids_and_defaults(local_client: Client, store: Store) -> None:
    description = Description("iris", "multiclass", {"n_rows": 150, "n_features": 4})
    result = local_client.record(
        [
            {
                "dataset": description,
                "family": "linear",
                "config": {"C": 1.0},
                "metric": "accuracy",
                "direction": "maximize",
                "score": 0.9,
            }
        ]
    )
    assert result.inserted == 1
    stored = store.get_run(uuid.UUID(result.ids[0]))
    assert (stored.source, stored.status, stored.fidelity) == ("user", "ok", 1.0)


def test_a_lost_answer_is_retried_with_the_same_ids(
    service: TestClient, store: Store, make_run: MakeRun
) -> None:
    client, transport, sleeps = _flaky_client(service, ["lose", "refuse", "ok"])
    runs = [make_run(index=i) for i in range(10)]
    for run in runs:
        del run["id"]  # the SDK assigns them, once
    result = client.record(runs)
    # Stored by the first attempt; the retry found the same ids: duplicates, not new rows.
    assert (result.inserted, result.duplicates, result.requests) == (0, 10, 3)
    assert store.stats().runs == 10
    assert transport.bodies[0] == transport.bodies[2]
    assert len(sleeps) == 2
    assert all(s > 0 for s in sleeps)


def test_503_is_retried_after_retry_after(
    service: TestClient, store: Store, make_run: MakeRun
) -> None:
    client, _, sleeps = _flaky_client(service, ["503", "503", "ok"])
    result = client.record([make_run(index=i) for i in range(3)])
    assert result.inserted == 3
    assert sleeps
    assert min(sleeps) >= 2.0


def test_503_that_persists_is_service_unavailable(service: TestClient, make_run: MakeRun) -> None:
    client, _, sleeps = _flaky_client(service, ["503"] * 10)
    with pytest.raises(ServiceUnavailable, match="database unavailable") as caught:
        client.record([make_run()])
    assert caught.value.status_code == 503
    assert caught.value.retry_after == 2.0
    assert len(sleeps) == 4


def test_unreachable_service() -> None:
    client = Client("http://127.0.0.1:9", retries=1, backoff=0.0, timeout=2.0)
    with pytest.raises(ServiceUnavailable, match="cannot reach http://127.0.0.1:9"):
        client.stats()
    client.close()


def test_api_errors_carry_the_api_message(
    http_client: Client, service: TestClient, make_run: MakeRun
) -> None:
    bad = make_run(score=float("nan"))
    good = [make_run(index=i) for i in range(3)]
    with pytest.raises(ValidationError, match=r"runs\[1002\] \(id .*\): score") as caught:
        http_client.record([make_run(index=i) for i in range(1002)] + [bad])
    assert caught.value.status_code == 422
    http_client.record(good)
    changed = dict(good[0], score=0.1)
    with pytest.raises(ConflictError, match="already exists with different content") as conflict:
        http_client.record([changed])
    assert conflict.value.run_id == good[0]["id"]
    anonymous = Client(http=TestClient(service.app), retries=0)
    with pytest.raises(AuthError, match="401"):
        anonymous.record(good)


def test_in_process_errors_are_the_same_exceptions(local_client: Client, make_run: MakeRun) -> None:
    run = make_run()
    local_client.record([run])
    with pytest.raises(ConflictError) as conflict:
        local_client.record([dict(run, score=0.5)])
    assert conflict.value.run_id == run["id"]
    with pytest.raises(ValidationError, match=r"runs\[0\].*missing field 'metric'"):
        local_client.record([{k: v for k, v in make_run().items() if k != "metric"}])


def test_error_mapping() -> None:
    assert isinstance(error_for_status(404, {"detail": "run x not found"}), NotFoundError)
    assert str(error_for_status(404, {"detail": "run x not found"})) == "404: run x not found"
    entries = [{"msg": "runs[0]: score: bad"}, {"msg": "runs[1]: family: bad"}]
    error = error_for_status(422, {"detail": entries})
    assert isinstance(error, ValidationError)
    assert error.detail == entries
    assert "runs[0]: score: bad; runs[1]: family: bad" in str(error)
    assert isinstance(error_for_status(403, {"detail": "no"}), AuthError)


def test_local_mode_creates_a_new_database(tmp_path: Any, make_run: MakeRun) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    with Client.local(database_url=url) as client:
        assert client.mode == "local"
        client.record([make_run()])
        assert client.stats()["runs"] == 1
        assert client.datasets(name="iris")[0]["n_rows"] == 150
