"""The surrogates registry API, the retrain scheduler, and the retrain/suggest commands."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from hyperprior.db.store import Store
from hyperprior.service.app import create_app
from hyperprior.service.auth import issue_key
from hyperprior.service.cli import main
from hyperprior.service.scheduler import RetrainScheduler, next_fire, validate_cron
from hyperprior.service.settings import Settings
from hyperprior.training.retrain import retrain
from hyperprior.training.surrogate import SurrogateParams
from hyperprior.training.synthetic_history import SyntheticHistory, new_runs

SQLITE = pytest.mark.parametrize("backend", ["sqlite"])

FAMILY = "lightgbm"
FAST = SurrogateParams(n_members=2, n_rounds=20, num_leaves=7, min_data_in_leaf=10, cv_folds=3)
OTHER = SurrogateParams(n_members=2, n_rounds=30, num_leaves=7, min_data_in_leaf=10, cv_folds=3)


@pytest.fixture
def history_store(store: Store) -> Store:
    store.ingest_runs(new_runs(SyntheticHistory(FAMILY, seed=4).frame(12, 12, n_reduced=0)))
    return store


def _client(store: Store) -> TestClient:
    settings = Settings(database_url="sqlite://", retrain_in_process=False, surrogate_poll_s=3600)
    # Activating a surrogate needs a key with scope admin (issue 8).
    _, key = issue_key(store, "admin", name="tests")
    return TestClient(create_app(settings, store=store), headers={"Authorization": f"Bearer {key}"})


@SQLITE
def test_list_and_roll_back(history_store: Store) -> None:
    first = retrain(history_store, FAMILY, params=FAST)
    second = retrain(history_store, FAMILY, params=OTHER, force=True)
    with _client(history_store) as client:
        listing = client.get("/v1/surrogates").json()
        assert listing["count"] == 2
        newest, oldest = listing["data"]
        assert (newest["id"], newest["status"]) == (second.candidate_id, "active")
        assert (oldest["id"], oldest["status"]) == (first.candidate_id, "retired")
        assert {"regret_at_1", "ndcg_at_5", "spearman"} <= set(newest["metrics"])
        assert newest["training"]["n_datasets"] == 12
        assert newest["params"]["n_rounds"] == 30
        assert len(newest["sha256"]) == 64
        assert "model_text" not in newest
        assert client.get("/v1/surrogates", params={"family": "linear"}).json()["count"] == 0

        rolled = client.post(f"/v1/surrogates/{first.candidate_id}/activate")
        assert rolled.status_code == 200
        assert rolled.json()["status"] == "active"
        # This process serves the rolled-back model at once.
        assert rolled.json()["serving"] is True
        body = {
            "family": FAMILY,
            "task": "binary",
            "dataset": {"meta_features": {"n_rows": 900, "n_features": 7, "n_classes": 2}},
        }
        assert client.post("/v1/suggestions", json=body).json()["surrogate"]["id"] == (
            first.candidate_id
        )
        statuses = {s["id"]: s["status"] for s in client.get("/v1/surrogates").json()["data"]}
        assert statuses == {first.candidate_id: "active", second.candidate_id: "retired"}


@SQLITE
def test_activating_an_unknown_surrogate_is_404(history_store: Store) -> None:
    with _client(history_store) as client:
        assert client.post("/v1/surrogates/999/activate").status_code == 404
        assert client.post("/v1/surrogates/0/activate").status_code == 422


# --- the scheduler -------------------------------------------------------------------


def test_next_fire_and_cron_validation() -> None:
    after = dt.datetime(2025, 3, 1, 2, 59, tzinfo=dt.UTC)
    assert next_fire("0 3 * * *", after) == dt.datetime(2025, 3, 1, 3, 0, tzinfo=dt.UTC)
    assert next_fire("0 3 * * *", after.replace(hour=3)) == dt.datetime(
        2025, 3, 2, 3, 0, tzinfo=dt.UTC
    )
    with pytest.raises(ValueError, match="invalid cron"):
        validate_cron("every night")
    with pytest.raises(ValueError, match="invalid cron"):
        Settings(retrain_cron="61 * * * *")


@SQLITE
def test_scheduler_retrains_once_per_scheduled_time(history_store: Store, clock: object) -> None:
    scheduler = RetrainScheduler(history_store, families=(FAMILY, "linear"), params=FAST)
    fire = clock.now  # type: ignore[attr-defined]
    results = scheduler.run_once(scheduled_at=fire)
    assert [(r.family, r.outcome) for r in results] == [
        (FAMILY, "activated"),
        ("linear", "no_data"),
    ]
    # A second scheduler (another API worker) firing for the same time finds it done.
    again = RetrainScheduler(history_store, families=(FAMILY,), params=FAST)
    assert again.run_once(scheduled_at=fire) == []
    assert len(history_store.list_surrogates(FAMILY)) == 1


def _history_with_log_loss(store: Store) -> None:
    # 20 datasets (MIN_TARGET_DATASETS), every run with a log-loss beside its score.
    frame = SyntheticHistory(FAMILY, seed=4).frame(20, 8, n_reduced=0, tasks=("binary",))
    rng = np.random.default_rng(0)
    frame["metrics"] = [{"log_loss": float(x)} for x in rng.uniform(0.2, 0.9, len(frame))]
    store.ingest_runs(new_runs(frame))


@SQLITE
def test_scheduler_catches_up_on_metric_surrogates_never_trained(store: Store) -> None:
    _history_with_log_loss(store)
    scheduler = RetrainScheduler(store, families=(FAMILY, "linear"), params=FAST, catch_up=True)
    results = scheduler.run_catch_up()
    assert [(r.family, r.target, r.outcome) for r in results] == [(FAMILY, "log_loss", "activated")]
    # Only what was never trained: the primary surrogate is the nightly retrain's (or the
    # seed's), and a metric trained once is the nightly retrain's from then on.
    assert store.find_active_surrogate(FAMILY) is None
    assert scheduler.run_catch_up() == []
    assert len(store.list_surrogates(FAMILY)) == 1


@SQLITE
def test_a_started_service_ranks_by_a_metric_surrogate_it_caught_up_on(
    store: Store, db_url: str
) -> None:
    from waiting import wait_until

    _history_with_log_loss(store)
    retrain(store, FAMILY, params=FAST)  # the primary one, as a seeded database has it
    settings = Settings(
        database_url=db_url,
        retrain_in_process=True,
        retrain_catch_up=True,
        retrain_cron="0 3 1 1 *",
        surrogate_poll_s=0.05,
    )
    body = {
        "family": FAMILY,
        "task": "binary",
        "dataset": {"meta_features": {"n_rows": 3000, "n_features": 12, "n_classes": 2}},
        "metric": "log_loss",
    }
    with TestClient(create_app(settings, store=store)) as client:
        wait_until(
            lambda: store.find_active_surrogate(FAMILY, "log_loss") is not None,
            "the catch-up retrain of lightgbm@log_loss",
        )
        answers: list[dict] = []

        def ranked_by_log_loss() -> bool:
            answers.append(client.post("/v1/suggestions", json=body).json())
            return answers[-1]["ranked_by"] == "log_loss"

        # The API process reloads it within a poll of the registry.
        wait_until(ranked_by_log_loss, "the watcher to load lightgbm@log_loss")
    assert any("not by log_loss" in w for w in answers[0]["warnings"]) == (len(answers) > 1)
    assert not any("not by log_loss" in w for w in answers[-1]["warnings"])


# --- the commands --------------------------------------------------------------------


@SQLITE
def test_retrain_and_suggest_commands(
    history_store: Store, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["retrain", "--family", FAMILY, "--json", "--database-url", db_url]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["outcome"] == "activated"

    rng = np.random.default_rng(0)
    data = pd.DataFrame(rng.normal(size=(300, 4)), columns=["a", "b", "c", "d"])
    data["label"] = (data["a"] + data["b"] > 0).astype(int)
    csv, parquet = tmp_path / "data.csv", tmp_path / "data.parquet"
    data.to_csv(csv, index=False)
    data.to_parquet(parquet)

    args = ["suggest", str(csv), "--target", "label", "--family", FAMILY, "--n", "3"]
    assert main([*args, "--json", "--seed", "2", "--database-url", db_url]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["surrogate"]["id"] == result["candidate_id"]
    assert len(answer["suggestions"]) == 3

    parquet_args = ["suggest", str(parquet), "--target", "label", "--family", FAMILY]
    assert main([*parquet_args, "--fixed", "num_leaves=20", "--database-url", db_url]) == 0
    table = capsys.readouterr().out
    assert "rank" in table
    assert "num_leaves=20" in table

    assert main([*args, "--target", "nope", "--database-url", db_url]) == 2
    assert "no column 'nope'" in capsys.readouterr().err


@SQLITE
def test_activation_needs_an_admin_key(history_store: Store) -> None:
    first = retrain(history_store, FAMILY, params=FAST)
    settings = Settings(database_url="sqlite://", retrain_in_process=False, surrogate_poll_s=3600)
    _, reader = issue_key(history_store, "read", name="reader")
    with TestClient(create_app(settings, store=history_store)) as client:
        assert client.get("/v1/surrogates").status_code == 200  # reads are open
        assert client.post(f"/v1/surrogates/{first.candidate_id}/activate").status_code == 401
        denied = client.post(
            f"/v1/surrogates/{first.candidate_id}/activate",
            headers={"Authorization": f"Bearer {reader}"},
        )
        assert denied.status_code == 403


@SQLITE
def test_run_forever_retrains_at_the_cron_time_and_stops(history_store: Store) -> None:
    times = iter(
        [
            dt.datetime(2025, 3, 1, 2, 59, 59, tzinfo=dt.UTC),  # computing the next fire
            dt.datetime(2025, 3, 1, 3, 0, 0, tzinfo=dt.UTC),  # it is time
        ]
    )
    last = dt.datetime(2025, 3, 1, 3, 0, 0, tzinfo=dt.UTC)
    seen = []

    def now() -> dt.datetime:
        return next(times, last)

    def on_result(result: object) -> None:
        seen.append(result)
        scheduler.stop()

    scheduler = RetrainScheduler(
        history_store, families=(FAMILY,), params=FAST, now=now, on_result=on_result
    )
    scheduler.run_forever()
    assert [r.outcome for r in seen] == ["activated"]  # type: ignore[attr-defined]
