"""A tampered surrogate is refused, logged, and the model loaded before keeps serving.

The registry watcher of a running app reloads a family's policy when its active
surrogate changes, and checks the model text against the sha256 recorded with it
before parsing a byte of it. Here the text of a newly activated surrogate is altered
in the database behind the store's back (``UPDATE surrogates SET model_text = ...``);
the watcher must refuse it with an error in the log, and the suggestions must go on
coming from the surrogate that served before (same id in every answer).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from hyperprior.db.store import Store
from hyperprior.service.app import create_app
from hyperprior.service.settings import Settings
from hyperprior.training.features import build_training_set
from hyperprior.training.suggest import Portfolio, with_portfolio
from hyperprior.training.surrogate import Surrogate, SurrogateParams, fit
from hyperprior.training.synthetic_history import SyntheticHistory

FAMILY = "lightgbm"
PARAMS = SurrogateParams(n_members=2, n_rounds=25, num_leaves=7, min_data_in_leaf=10)
BODY = {
    "family": FAMILY,
    "task": "binary",
    "dataset": {"meta_features": {"n_rows": 5000, "n_features": 20, "n_classes": 2}},
    "n": 3,
    "seed": 0,
}


@pytest.fixture(scope="module")
def surrogate() -> Surrogate:
    """A small fitted surrogate with its portfolio (shared by the tests of this module)."""
    frame = SyntheticHistory(FAMILY, seed=3).frame(16, 16, n_reduced=0)
    fitted = fit(build_training_set(frame, FAMILY), PARAMS)
    return with_portfolio(fitted, Portfolio.from_frame(frame, FAMILY))


def register(store: Store, surrogate: Surrogate, *, status: str = "active") -> int:
    """Register ``surrogate`` and return its id."""
    record = store.add_surrogate(
        family=FAMILY,
        model_text=surrogate.text,
        n_runs=100,
        metrics={},
        meta=surrogate.metadata,
        status=status,
    )
    return int(record.id)


def tamper(store: Store, surrogate_id: int) -> None:
    """Change one leaf value of a stored model text (its sha256 column untouched)."""
    with store.engine.begin() as conn:
        model_text = conn.execute(
            text("SELECT model_text FROM surrogates WHERE id = :id"), {"id": surrogate_id}
        ).scalar_one()
        start = model_text.index("leaf_value=") + len("leaf_value=")
        altered = model_text[:start] + "9" + model_text[start:]
        conn.execute(
            text("UPDATE surrogates SET model_text = :t WHERE id = :id"),
            {"t": altered, "id": surrogate_id},
        )


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    """The app on the test store; the watcher polls only when the test says so."""
    settings = Settings(database_url="sqlite://", retrain_in_process=False, surrogate_poll_s=3600)
    with TestClient(create_app(settings, store=store)) as client:
        yield client


def suggest(client: TestClient) -> dict[str, Any]:
    response = client.post("/v1/suggestions", json=BODY)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_a_tampered_model_is_refused_logged_and_the_previous_one_keeps_serving(
    store: Store, client: TestClient, surrogate: Surrogate, caplog: pytest.LogCaptureFixture
) -> None:
    watcher = client.app.state.suggestions.watcher  # type: ignore[attr-defined]
    first = register(store, surrogate)
    assert suggest(client)["surrogate"]["id"] == first  # loaded on first use

    second = register(store, surrogate)  # activated (first retired), then altered
    tamper(store, second)
    with caplog.at_level(logging.ERROR, logger="hyperprior.training.suggest"):
        assert watcher.poll_once() == []  # nothing was reloaded

    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(f"surrogate {second}" in m and "sha256" in m for m in errors), errors
    assert any(f"surrogate {first} keeps serving" in m for m in errors), errors
    answer = suggest(client)
    assert answer["surrogate"]["id"] == first
    assert [s["source"] for s in answer["suggestions"]].count("surrogate") >= 1
    assert store.find_active_surrogate(FAMILY).id == second  # the registry is as it was

    # Refused once, not at every poll: the log does not fill with the same error.
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="hyperprior.training.suggest"):
        assert watcher.poll_once() == []
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert suggest(client)["surrogate"]["id"] == first

    # A sound model activated afterwards serves at the next poll.
    third = register(store, surrogate)
    assert watcher.poll_once() == [FAMILY]
    assert suggest(client)["surrogate"]["id"] == third


def test_an_app_started_on_a_tampered_model_answers_without_it_and_says_so(
    store: Store, surrogate: Surrogate, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing loaded before to keep serving: cold start (portfolio and default), with
    # a warning in every answer, never the tampered model.
    tampered = register(store, surrogate)
    tamper(store, tampered)
    settings = Settings(database_url="sqlite://", retrain_in_process=False, surrogate_poll_s=3600)
    with (
        caplog.at_level(logging.ERROR, logger="hyperprior.training.suggest"),
        TestClient(create_app(settings, store=store)) as client,
    ):
        answer = suggest(client)
    assert answer["surrogate"] is None
    assert any("could not be loaded" in w and "sha256" in w for w in answer["warnings"])
    assert any(f"surrogate {tampered}" in r.getMessage() for r in caplog.records)
