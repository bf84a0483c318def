"""Validated ingest through the API: refused configs answer 422 and store nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hyperprior.service.app import create_app
from hyperprior.service.auth import issue_key
from hyperprior.service.settings import Settings

MakeRun = Callable[..., dict[str, Any]]


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    app = create_app(Settings(database_url=db_url))
    _, key = issue_key(app.state.store, "write", name="tests")
    with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as http:
        yield http


def _counts(client: TestClient) -> tuple[int, int]:
    stats = client.get("/v1/stats").json()
    return stats["runs"], stats["datasets"]


@pytest.mark.parametrize(
    ("config", "field", "message"),
    [
        ({"num_leaves": "abc"}, "config.num_leaves", "must be an integer"),
        ({"num_leaves": -5, "learning_rate": 0}, "config.learning_rate", "must be a number > 0"),
        ({"max_depth": 6, "eta": 0.3}, "config.eta", "is not a parameter of lightgbm"),
        ({"num_leaves": 99999999}, "config.num_leaves", "<= 131072"),
        ({"foo": 1}, "config.foo", "it accepts n_estimators"),
        ({"subsample_freq": "1"}, "config.subsample_freq", "must be one of 0, 1"),
    ],
)
def test_a_config_outside_the_space_is_422_and_stores_nothing(
    client: TestClient,
    make_run: MakeRun,
    config: dict[str, Any],
    field: str,
    message: str,
) -> None:
    client.post("/v1/runs", json={"runs": [make_run(index=0)]})
    before = _counts(client)
    # A valid run in the same batch is not stored either: batches are all-or-nothing.
    batch = [make_run(index=1, dataset="other"), make_run(index=2, config=config)]

    answer = client.post("/v1/runs", json={"runs": batch})

    assert answer.status_code == 422
    entries = answer.json()["detail"]
    hit = next(e for e in entries if e["field"] == field)
    assert hit["run_index"] == 1
    assert hit["run_id"] == batch[1]["id"]
    assert hit["msg"].startswith(f"runs[1] (id {batch[1]['id']}): {field}: ")
    assert message in hit["msg"]
    assert _counts(client) == before


def test_the_task_of_a_stored_dataset_decides_which_parameters_exist(
    client: TestClient, make_run: MakeRun
) -> None:
    first = make_run(family="linear", task="regression", config={"alpha": 0.1})
    assert client.post("/v1/runs", json={"runs": [first]}).status_code == 201
    dataset_id = client.get("/v1/datasets").json()["data"][0]["id"]
    before = _counts(client)
    run = make_run(family="linear", config={"C": 1.0})
    del run["dataset"]
    run["dataset_id"] = dataset_id

    answer = client.post("/v1/runs", json={"runs": [run]})

    assert answer.status_code == 422
    assert "is not a parameter of linear for a regression task" in answer.text
    assert _counts(client) == before


def test_valid_values_outside_the_box_are_stored_and_flagged(
    client: TestClient, make_run: MakeRun
) -> None:
    runs = [
        make_run(index=0),
        make_run(index=1, config={"n_estimators": 5000, "subsample": 0.7}),
    ]

    answer = client.post("/v1/runs", json={"runs": runs})

    assert answer.status_code == 201
    body = answer.json()
    assert body["inserted"] == 2
    assert len(body["warnings"]) == 2
    assert body["warnings"][0].startswith(f"runs[1] (id {runs[1]['id']}): config.n_estimators")
    assert "outside the search space 16..2048" in body["warnings"][0]
    assert "no effect unless subsample_freq is 1" in body["warnings"][1]
    stored = client.get(f"/v1/runs/{runs[1]['id']}").json()
    assert stored["config"] == runs[1]["config"]


def test_clean_batches_answer_without_warnings_and_undeclared_families_are_refused(
    client: TestClient, make_run: MakeRun
) -> None:
    answer = client.post("/v1/runs", json={"runs": [make_run()]})
    assert answer.json() == {"inserted": 1, "duplicates": 0, "dataset_ids": [1]}

    # Declared families: tests/service/test_declared_family.py.
    foreign = make_run(family="catboost", config={"eta": 0.3, "max_depth": 6})
    refused = client.post("/v1/runs", json={"runs": [foreign]})
    assert refused.status_code == 422
    assert "declare it with POST /v1/families" in refused.text
