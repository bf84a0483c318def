"""Optuna: a real study on SQLite storage, warm-started from and recorded into a real app."""

from __future__ import annotations

import json

import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hyperprior.client import Client, HyperpriorWarning
from hyperprior.client.optuna_integration import (
    RecordingCallback,
    enqueue_suggestions,
    map_config,
    run_id_for,
)
from hyperprior.db.store import Store
from hyperprior.service.cli import main
from hyperprior.training.retrain import install_shipped
from hyperprior.training.seed import SEED_DIR

SPACE = {
    # Narrower than hyperprior's box: suggestions are clipped into it.
    "learning_rate": FloatDistribution(0.01, 0.05, log=True),
    "num_leaves": IntDistribution(8, 64, step=8),
    "subsample_freq": CategoricalDistribution([0, 1]),
    # Not a LightGBM parameter hyperprior knows: left to the sampler.
    "boosting": CategoricalDistribution(["gbdt", "dart"]),
}


def objective(trial: optuna.Trial) -> float:
    """Cheap and deterministic: the integration is under test, not LightGBM."""
    rate = trial.suggest_float("learning_rate", 0.01, 0.05, log=True)
    leaves = trial.suggest_int("num_leaves", 8, 64, step=8)
    freq = trial.suggest_categorical("subsample_freq", [0, 1])
    trial.suggest_categorical("boosting", ["gbdt", "dart"])
    if trial.number == 4:
        raise ValueError("diverged")
    return 0.9 - abs(rate - 0.03) - leaves / 1000 + 0.01 * freq


def test_map_config_clips_rounds_and_skips() -> None:
    params, notes = map_config(
        {
            "learning_rate": 0.2,
            "num_leaves": 31,
            "subsample_freq": 1,
            "boosting": "goss",
            "n_estimators": 300,
        },
        SPACE,
    )
    assert params == {"learning_rate": 0.05, "num_leaves": 32, "subsample_freq": 1}
    assert notes == ["boosting: 'goss' is not one of ['gbdt', 'dart']"]
    # Types matter for choices: True is not 1.
    assert map_config({"subsample_freq": True}, SPACE)[0] == {}
    stepped = map_config(
        {"learning_rate": 0.0333}, {"learning_rate": FloatDistribution(0, 1, step=0.1)}
    )
    assert stepped[0] == {"learning_rate": pytest.approx(0.0)}


def test_warm_start_record_and_import_a_real_study(
    tmp_path: object,
    http_client: Client,
    store: Store,
    db_url: str,
    binary_data: tuple[pd.DataFrame, pd.Series],
    capsys: pytest.CaptureFixture[str],
) -> None:
    install_shipped(store, SEED_DIR / "surrogates")
    X, y = binary_data
    description = http_client.describe(X, y, name="churn")
    storage = f"sqlite:///{tmp_path}/study.db"  # type: ignore[operator]
    study = optuna.create_study(
        study_name="churn-lgbm",
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    with pytest.raises(ValueError, match="pass search_space="):
        enqueue_suggestions(study, http_client, description, None, "lightgbm")

    with pytest.warns(HyperpriorWarning, match="not in the study's search space.*n_estimators"):
        enqueued = enqueue_suggestions(
            study, http_client, description, None, "lightgbm", n=3, search_space=SPACE, seed=0
        )
    assert 1 <= len(enqueued) <= 3
    for params in enqueued:
        assert set(params) <= {"learning_rate", "num_leaves", "subsample_freq"}
        assert 0.01 <= params["learning_rate"] <= 0.05
        assert params["num_leaves"] % 8 == 0

    callback = RecordingCallback(
        http_client, dataset=description, family="lightgbm", metric="score"
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=6, callbacks=[callback], catch=(ValueError,))

    trials = study.get_trials()
    # The warm start ran first, with hyperprior's (mapped) values.
    for trial, params in zip(trials, enqueued, strict=False):
        assert {k: trial.params[k] for k in params} == params
        assert trial.user_attrs["hyperprior_rank"] >= 1
    assert len(callback.recorded) == 6
    assert callback.pending == []
    runs = {run.id: run for run in store.list_runs(limit=100).data}
    assert set(runs) == {run_id_for("churn-lgbm", n) for n in range(6)}
    failed = runs[run_id_for("churn-lgbm", 4)]
    assert (failed.status, failed.score) == ("failed", None)
    ok = runs[run_id_for("churn-lgbm", 0)]
    assert (ok.status, ok.direction, ok.metric, ok.source) == ("ok", "maximize", "score", "user")
    assert ok.score == pytest.approx(trials[0].value)
    assert "boosting" not in ok.config  # not a LightGBM hyperparameter of the space
    assert ok.cost_seconds >= 0
    dataset = store.get_dataset(ok.dataset_id)
    assert (dataset.name, dataset.n_rows) == ("churn", 200)

    # Importing the same study (live-recorded already) stores nothing and conflicts with
    # nothing; the dataset is found by name.
    status = main(
        [
            "import", "optuna", "--storage", storage, "--study", "churn-lgbm",
            "--dataset", "churn", "--task", "binary", "--family", "lightgbm",
            "--metric", "score", "--database-url", db_url, "--json",
        ]
    )  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    assert status == 0
    assert summary | {"target": None} == {
        "source": "study 'churn-lgbm'",
        "read": 6,
        "skipped": 0,
        "inserted": 0,
        "duplicates": 6,
        "target": None,
        "dry_run": False,
        "dataset_ids": [dataset.id],
    }
    assert store.stats().runs == 6


def test_import_optuna_errors(
    tmp_path: object, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = f"sqlite:///{tmp_path}/other.db"  # type: ignore[operator]
    study = optuna.create_study(study_name="exists", storage=storage)
    study.optimize(lambda trial: trial.suggest_float("learning_rate", 0.01, 0.1), n_trials=1)
    args = ["import", "optuna", "--storage", storage, "--family", "lightgbm"]
    described = ["--dataset", "d", "--n-rows", "10", "--n-features", "2", "--task", "regression"]

    assert main([*args, "--study", "nope", *described, "--database-url", db_url]) == 2
    err = capsys.readouterr().err
    assert "no study 'nope'" in err
    assert "studies: exists" in err

    assert main([*args, "--study", "exists", "--dataset", "unknown", "--database-url", db_url]) == 2
    assert "no stored dataset named 'unknown'" in capsys.readouterr().err

    unreachable = ["--url", "http://127.0.0.1:9", "--retries", "0"]
    assert main([*args, "--study", "exists", *described, *unreachable]) == 3
    assert "cannot reach http://127.0.0.1:9" in capsys.readouterr().err

    assert (
        main([*args, "--study", "exists", *described, "--database-url", db_url, "--dry-run"]) == 0
    )
    assert "read 1 run from" in capsys.readouterr().out
    assert main([*args, "--study", "exists", *described, "--database-url", db_url]) == 0
    assert "1 new, 0 already stored" in capsys.readouterr().out
