"""POST /v1/suggestions through the ASGI app, on a real store."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from waiting import wait_until

from hyperprior.db.store import Store
from hyperprior.service.app import create_app
from hyperprior.service.settings import Settings
from hyperprior.training.retrain import retrain
from hyperprior.training.surrogate import SurrogateParams
from hyperprior.training.synthetic_history import SyntheticHistory, new_runs

pytestmark = pytest.mark.parametrize("backend", ["sqlite"])

FAST = SurrogateParams(n_members=2, n_rounds=25, num_leaves=7, min_data_in_leaf=10, cv_folds=3)
META = {"n_rows": 5000, "n_features": 20, "n_classes": 2, "missing_cells_frac": 0.0}


def _client(store: Store) -> TestClient:
    settings = Settings(database_url="sqlite://", retrain_in_process=False, surrogate_poll_s=3600)
    return TestClient(create_app(settings, store=store))


@pytest.fixture
def history_store(store: Store) -> Store:
    frame = SyntheticHistory("lightgbm", seed=8).frame(16, 16, n_reduced=0)
    store.ingest_runs(new_runs(frame))
    return store


@pytest.fixture
def client(history_store: Store) -> Iterator[TestClient]:
    retrain(history_store, "lightgbm", params=FAST)
    with _client(history_store) as client:
        yield client


def _body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "family": "lightgbm",
        "task": "binary",
        "dataset": {"name": "mine", "meta_features": dict(META)},
    }
    body.update(overrides)
    return body


def test_suggestions_from_the_active_surrogate(client: TestClient, history_store: Store) -> None:
    response = client.post("/v1/suggestions", json=_body(n=3, seed=1))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {
        "suggestions",
        "surrogate",
        "warnings",
        "distance",
        "distance_threshold",
        "ranked_by",
        "ranking",
    }
    assert answer["ranked_by"] == "roc_auc"  # no metric named: the task's primary one
    # Rank order follows a pessimistic bound, not predicted_quality: the answer says so.
    assert "pessimistic" in answer["ranking"]
    assert "predicted_quality is the mean" in answer["ranking"]
    # The retrain calibrated p_beats_default and learned how far its validation reached.
    assert answer["distance"] > 0
    assert answer["distance_threshold"] > 0
    active = history_store.find_active_surrogate("lightgbm")
    assert answer["surrogate"]["id"] == active.id
    assert answer["surrogate"]["n_runs"] == active.n_runs
    assert [s["rank"] for s in answer["suggestions"]] == [1, 2, 3]
    first = answer["suggestions"][0]
    assert set(first) == {
        "rank",
        "config",
        "predicted_quality",
        "interval",
        "source",
        "explanation",
        "p_beats_default",
    }
    for s in answer["suggestions"]:
        if s["source"] == "default":
            assert s["p_beats_default"] is None
        else:
            assert 0.0 <= s["p_beats_default"] <= 1.0
    low, high = first["interval"]
    assert low <= first["predicted_quality"] <= high
    assert first["source"] in {"surrogate", "portfolio", "default"}
    assert first["explanation"]["nearest_datasets"][0]["name"].startswith("synthetic-")
    assert first["explanation"]["top_features"]
    # Deterministic for a seed.
    assert client.post("/v1/suggestions", json=_body(n=3, seed=1)).json() == answer


def test_default_n_is_five_and_fixed_is_honoured(client: TestClient) -> None:
    answer = client.post("/v1/suggestions", json=_body(fixed={"num_leaves": 40})).json()
    assert len(answer["suggestions"]) == 5
    assert {s["config"]["num_leaves"] for s in answer["suggestions"]} == {40}


@pytest.mark.parametrize(
    ("body", "loc", "message"),
    [
        (_body(family="catboost"), ["body", "family"], "unknown family"),
        (_body(fixed={"max_depth": 3}), ["body", "fixed"], "unknown parameter"),
        (_body(fixed={"num_leaves": -1}), ["body", "fixed"], "num_leaves"),
        (
            _body(dataset={"meta_features": {"n_rows": -3, "n_features": 2}}),
            ["body", "dataset", "meta_features"],
            "n_rows",
        ),
        (
            _body(task="multiclass", dataset={"meta_features": {**META, "n_classes": 1}}),
            ["body", "dataset", "meta_features"],
            "n_classes",
        ),
        (_body(n=0), ["body", "n"], "greater than or equal to 1"),
        (_body(n=51), ["body", "n"], "less than or equal to 50"),
        (_body(task="ranking"), ["body", "task"], "binary"),
        (_body(dataset={"meta_features": {"n_rows": "many"}}), None, "valid integer"),
    ],
)
def test_impossible_requests_are_422_saying_what_is_wrong(
    client: TestClient, body: dict[str, Any], loc: list[str] | None, message: str
) -> None:
    response = client.post("/v1/suggestions", json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert any(message in d["msg"] for d in detail), detail
    if loc is not None:
        assert any(d["loc"][: len(loc)] == loc for d in detail), detail


def test_missing_optional_meta_features_are_fine(client: TestClient) -> None:
    body = _body(dataset={"meta_features": {"n_rows": 800, "n_features": 5, "lm_stump": None}})
    response = client.post("/v1/suggestions", json=body)
    assert response.status_code == 200
    assert any("not given" in w for w in response.json()["warnings"])


def test_cold_start_answers_and_says_so(history_store: Store) -> None:
    with _client(history_store) as client:
        answer = client.post("/v1/suggestions", json=_body(n=3)).json()
    assert answer["surrogate"] is None
    assert {s["source"] for s in answer["suggestions"]} <= {"portfolio", "default"}
    assert "default" in {s["source"] for s in answer["suggestions"]} or any(
        s["explanation"].get("from_dataset") for s in answer["suggestions"]
    )
    assert all(s["predicted_quality"] is None for s in answer["suggestions"])
    assert "no surrogate" in answer["warnings"][0]


def test_a_newly_activated_model_is_picked_up_without_restart(history_store: Store) -> None:
    settings = Settings(database_url="sqlite://", retrain_in_process=False, surrogate_poll_s=0.05)
    with TestClient(create_app(settings, store=history_store)) as client:
        assert client.post("/v1/suggestions", json=_body()).json()["surrogate"] is None
        result = retrain(history_store, "lightgbm", params=FAST)  # e.g. the retrainer service

        def serving() -> Any:
            return client.post("/v1/suggestions", json=_body()).json()["surrogate"]

        wait_until(lambda: serving() is not None, "the new model served at a poll")
        assert serving()["id"] == result.candidate_id


def test_inline_and_threadpool_answers_are_the_same(history_store: Store) -> None:
    retrain(history_store, "lightgbm", params=FAST)
    answers = []
    for inline in (True, False):
        settings = Settings(
            database_url="sqlite://",
            retrain_in_process=False,
            surrogate_poll_s=3600,
            suggest_inline=inline,
        )
        with TestClient(create_app(settings, store=history_store)) as client:
            # The first request loads the policy (threadpool either way), the second is
            # answered inline or in the threadpool as configured.
            first = client.post("/v1/suggestions", json=_body(n=3, seed=2))
            second = client.post("/v1/suggestions", json=_body(n=3, seed=2))
        assert first.status_code == second.status_code == 200, second.text
        assert first.content == second.content
        answers.append(second.content)
    assert answers[0] == answers[1]
