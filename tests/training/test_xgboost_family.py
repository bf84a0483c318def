"""The built-in xgboost family: its defaults are the library's, its configs build XGBoost
models, and everything that lists families (API, CLI, bootstrap, retrain, suggestions)
takes it in."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.utils.estimator_checks import parametrize_with_checks

from hyperprior.db.store import Store
from hyperprior.service.app import create_app
from hyperprior.service.cli import main
from hyperprior.service.settings import Settings
from hyperprior.training.families import FAMILIES, evaluate, get_family
from hyperprior.training.families.xgboost import LabelEncodedClassifier, _integer_categories
from hyperprior.training.retrain import retrain
from hyperprior.training.surrogate import SurrogateParams
from hyperprior.training.synthetic_history import SyntheticHistory, new_runs

xgb = pytest.importorskip("xgboost")

SPACE = get_family("xgboost").space
FAST = SurrogateParams(n_members=2, n_rounds=25, num_leaves=7, min_data_in_leaf=10, cv_folds=3)
META = {"n_rows": 5000, "n_features": 20, "n_classes": 2, "missing_cells_frac": 0.0}
# The tree parameters XGBoost resolves (its booster's config), whatever the wrapper sets.
TREE_KEYS = (
    "eta", "max_depth", "min_child_weight", "subsample", "colsample_bytree", "reg_alpha",
    "reg_lambda", "grow_policy", "max_leaves", "max_bin",
)  # fmt: skip
sqlite_only = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


def _numbers(task: str, n: int = 80) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(n, 4))
    signal = X[:, 0] + X[:, 1] * X[:, 2]
    if task == "regression":
        return X, signal
    if task == "binary":
        return X, (signal > 0).astype(np.int64)
    return X, np.digitize(signal, [-0.5, 0.5]).astype(np.int64)


def _resolved(model: Any, X: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    config = json.loads(model.fit(X, y).get_booster().save_config())
    learner = config["learner"]
    tree = learner["gradient_booster"]["tree_train_param"]
    return {
        **{k: tree[k] for k in TREE_KEYS},
        "trees": learner["gradient_booster"]["gbtree_model_param"]["num_trees"],
        "objective": learner["objective"]["name"],
    }


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_the_default_is_the_librarys_own(task: str) -> None:
    X, y = _numbers(task)
    cls = xgb.XGBRegressor if task == "regression" else xgb.XGBClassifier
    default = SPACE.default(task)

    assert _resolved(cls(**default), X, y) == _resolved(cls(), X, y)
    assert default["learning_rate"] == 0.3
    assert default["max_depth"] == 6
    # Without tree_method XGBoost 2.x+ uses hist too: the family only names it.
    assert cls().get_params()["tree_method"] in (None, "hist")


def test_sampled_configs_are_the_estimators_own_arguments() -> None:
    X, y = _numbers("multiclass")
    configs = SPACE.sample(8, seed=0, task="multiclass")

    for config in configs:
        model = xgb.XGBClassifier(**{**config, "n_estimators": 4}, n_jobs=1).fit(X, y)
        assert model.predict_proba(X[:3]).shape == (3, 3)
    assert all(SPACE.validate(c, "multiclass") == c for c in configs)


def test_xgboost_is_imported_only_when_a_model_is_built() -> None:
    code = (
        "import sys\n"
        "from hyperprior.training.families import FAMILIES, get_family\n"
        "import hyperprior.service.app, hyperprior.service.cli\n"
        "assert 'xgboost' in FAMILIES\n"
        "get_family('xgboost').space.sample(4, 0, 'binary')\n"
        "assert 'xgboost' not in sys.modules, 'imported early'\n"
        "get_family('xgboost').build({}, 'binary', 2, 0, 1.0)\n"
        "assert 'xgboost' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_categories_keep_their_codes_in_a_fold_without_some_of_them() -> None:
    rng = np.random.default_rng(0)
    n = 400
    X = pd.DataFrame(
        {"x": rng.normal(size=n), "c": rng.choice(["a", "b", "c", "d", None], size=n)}
    )
    y = pd.Series(np.where(X["c"].isin(["c", "d"]), "hit", "miss"))
    model = get_family("xgboost").make_estimator({"n_estimators": 20}, "binary", 0)
    from hyperprior.training.preprocess import prepare_frame

    Xp = prepare_frame(X)
    model.fit(Xp, y)
    # Rows of category 'd' alone: their ordinal code must not be re-numbered from 0.
    only_d = Xp[X["c"] == "d"].reset_index(drop=True)
    np.testing.assert_allclose(
        model.predict_proba(only_d), model.predict_proba(Xp)[(X["c"] == "d").to_numpy()]
    )
    assert set(model.predict(only_d)) == {"hit"}
    frame = pd.DataFrame({"cat__c": pd.Series([3.0, np.nan]).astype("category")})
    coded = _integer_categories(frame)["cat__c"]
    assert list(coded.cat.codes) == [3, -1]
    assert coded.cat.categories.dtype.kind == "i"


@parametrize_with_checks(
    [LabelEncodedClassifier(xgb.XGBClassifier(n_estimators=5, n_jobs=1, min_child_weight=0.01))]
)
def test_the_label_encoding_wrapper_passes_scikit_learns_checks(estimator: Any, check: Any) -> None:
    check(estimator)


def test_a_trial_and_the_users_model_score_the_same() -> None:
    X, y = _numbers("binary", n=120)
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    labels = pd.Series(np.where(y == 1, "yes", "no"))
    config = {"n_estimators": 30, "max_depth": 3}

    trial = evaluate("xgboost", config, frame, labels, "binary", folds=3, seed=0)

    assert trial.status == "ok", trial.error
    assert trial.score is not None
    assert trial.score > 0.8
    model = get_family("xgboost").make_estimator(config, "binary", 0)
    assert list(model.fit(frame, labels).classes_) == ["no", "yes"]
    assert model[-1].classifier_.get_params()["n_jobs"] is None  # every core for users


def test_cost_grows_with_trees_and_depth() -> None:
    family = get_family("xgboost")
    default = SPACE.default("binary")

    assert family.relative_cost(default, default) == pytest.approx(1.0)
    assert family.relative_cost({"max_depth": 1}, default) < 0.5
    assert family.relative_cost({"n_estimators": 400}, default) > 2.0
    assert family.relative_cost({"max_depth": 15}, default) > 2.0


# --------------------------------------------------------- what derives from the registry


@sqlite_only
def test_the_cli_bootstraps_xgboost_trials(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "bootstrap",
        "--database-url", db_url,
        "--datasets", "sklearn/iris", "sklearn/breast_cancer",
        "--families", "xgboost",
        "--configs", "2",
        "--reduced-configs", "0",
        "--folds", "2",
        "--workers", "0",
        "--no-progress",
        "--json",
    ]  # fmt: skip
    assert main(args) == 0
    assert '"ran": 4' in capsys.readouterr().out

    from sqlalchemy import create_engine

    engine = create_engine(db_url)
    try:
        frame = Store(engine).runs_frame(family="xgboost", status=None)
    finally:
        engine.dispose()
    assert len(frame) == 4
    assert set(frame["status"]) == {"ok"}
    assert set(frame["dataset_name"]) == {"sklearn/iris", "sklearn/breast_cancer"}


@sqlite_only
def test_retrain_without_xgboost_runs_is_not_enough_history(store: Store) -> None:
    from hyperprior.service.scheduler import RetrainScheduler

    assert retrain(store, "xgboost", params=FAST).outcome == "no_data"
    results = RetrainScheduler(store, params=FAST).run_once()
    assert "xgboost" in {r.family for r in results}
    assert {r.outcome for r in results} == {"no_data"}


def _client(store: Store) -> TestClient:
    settings = Settings(
        database_url="sqlite://",
        retrain_in_process=False,
        surrogate_poll_s=3600,
        auth_enabled=False,
    )
    return TestClient(create_app(settings, store=store))


def _body(**overrides: Any) -> dict[str, Any]:
    return {
        "family": "xgboost",
        "task": "binary",
        "dataset": {"name": "mine", "meta_features": dict(META)},
        **overrides,
    }


@sqlite_only
def test_suggestions_without_runs_answer_the_default(store: Store) -> None:
    with _client(store) as client:
        families = {f["family"] for f in client.get("/v1/families").json()["data"]}
        answer = client.post("/v1/suggestions", json=_body(n=3)).json()

    assert "xgboost" in families
    assert answer["surrogate"] is None
    assert answer["suggestions"][0]["source"] == "default"
    assert answer["suggestions"][0]["config"] == SPACE.default("binary")


@sqlite_only
def test_ingest_checks_xgboost_configs(store: Store, make_run: Any) -> None:
    good = make_run(family="xgboost", config={"max_depth": 4, "learning_rate": 0.1})
    # eta is XGBoost's alias of learning_rate: configs use the estimator's own names.
    bad = make_run(family="xgboost", config={"max_depth": 0, "eta": 0.3})
    with _client(store) as client:
        refused = client.post("/v1/runs", json={"runs": [good, bad]})
        before = store.stats().runs
        accepted = client.post("/v1/runs", json={"runs": [good]})

    assert refused.status_code == 422
    detail = json.dumps(refused.json())
    assert "config.max_depth" in detail
    assert "config.eta" in detail
    assert "must be an integer >= 1" in detail
    assert before == 0
    assert accepted.status_code in (200, 201), accepted.text
    assert store.stats().runs == 1


@sqlite_only
def test_a_retrained_xgboost_surrogate_suggests_configs_xgboost_accepts(store: Store) -> None:
    frame = SyntheticHistory("xgboost", seed=8).frame(16, 16, n_reduced=0)
    store.ingest_runs(new_runs(frame))
    with _client(store) as client:
        cold = client.post("/v1/suggestions", json=_body(n=3)).json()
    assert {s["source"] for s in cold["suggestions"]} <= {"portfolio", "default"}

    assert retrain(store, "xgboost", params=FAST).outcome == "activated"
    with _client(store) as client:
        answer = client.post("/v1/suggestions", json=_body(n=3, seed=0)).json()

    assert answer["surrogate"] is not None
    assert "surrogate" in {s["source"] for s in answer["suggestions"]}
    X, y = _numbers("binary")
    for suggestion in answer["suggestions"]:
        config = {**suggestion["config"], "n_estimators": 4}
        assert xgb.XGBClassifier(**config).fit(X, y).predict(X[:2]).shape == (2,)


def test_every_registered_family_is_in_the_cli_choices(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["suggest", "--help"])
    assert "xgboost" in capsys.readouterr().out
    assert list(FAMILIES)[:5] == ["lightgbm", "random_forest", "linear", "keras_mlp", "xgboost"]
