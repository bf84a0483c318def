"""Families: every family fits and scores every task; failures come back as results."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification, make_regression

from hyperprior.training.families import (
    FAMILIES,
    TrialResult,
    UnknownFamilyError,
    evaluate,
    get_family,
    primary_metric,
)
from hyperprior.training.families.base import (
    MIN_ROWS_PER_CLASS,
    TASK_METRICS,
    evaluate_family,
    make_folds,
    prepare_data,
    score_predictions,
    subsample_rows,
)
from hyperprior.training.preprocess import prepare_frame, tree_preprocessor
from hyperprior.training.spaces import TASKS

# Small but real configs: the point is that each family runs, not that it is good.
CONFIGS: dict[str, dict[str, Any]] = {
    "lightgbm": {"n_estimators": 20, "num_leaves": 8, "min_child_samples": 5},
    "random_forest": {"n_estimators": 16},
    "linear": {},
    "keras_mlp": {"epochs": 4, "units": 16, "batch_size": 32},
    "xgboost": {"n_estimators": 20, "max_depth": 3, "min_child_weight": 0.5},
}


def _dataset(task: str, n: int = 150, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    if task == "regression":
        X, y = make_regression(n_samples=n, n_features=5, n_informative=3, random_state=seed)
    else:
        k = 2 if task == "binary" else 3
        X, y = make_classification(
            n_samples=n,
            n_features=5,
            n_informative=3,
            n_redundant=0,
            n_classes=k,
            n_clusters_per_class=1,
            random_state=seed,
        )
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    frame["colour"] = pd.Categorical(rng.choice(["red", "green", "blue", None], size=n))
    frame["city"] = rng.choice(["a", "b", "c", "d", "e", "f"], size=n).astype(object)
    frame["flag"] = rng.random(n) > 0.5
    frame.loc[rng.random(n) < 0.1, "x0"] = np.nan
    labels = y if task == "regression" else np.array(["no", "yes", "maybe"])[y]
    return frame, pd.Series(labels, name="target")


@pytest.fixture(scope="module")
def datasets() -> dict[str, tuple[pd.DataFrame, pd.Series]]:
    return {task: _dataset(task) for task in TASKS}


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_fits_and_scores_every_task(
    family: str, task: str, datasets: dict[str, tuple[pd.DataFrame, pd.Series]]
) -> None:
    X, y = datasets[task]
    # Keras pays ~0.5 s of graph tracing per fit: two folds keep the suite quick.
    folds = 2 if family == "keras_mlp" else 3
    full = evaluate(family, CONFIGS[family], X, y, task, fidelity=1.0, folds=folds, seed=1)
    low = evaluate(family, CONFIGS[family], X, y, task, fidelity=0.3, folds=folds, seed=1)
    for result in (full, low):
        assert result.status == "ok", result.error
        assert result.error is None
        assert result.metric == primary_metric(task)
        assert result.score is not None
        assert math.isfinite(result.score)
        assert result.score == result.metrics[result.metric]
        assert result.metrics["n_folds"] == folds
        assert result.cost_seconds > 0
    assert full.fidelity == 1.0
    assert low.fidelity == 0.3
    if task == "regression":
        assert {"r2", "rmse", "mae"} <= set(full.metrics)
    else:
        assert 0.0 <= full.metrics["accuracy"] <= 1.0
        assert {"log_loss", "balanced_accuracy"} <= set(full.metrics)
    assert full.n_train_rows == 150 - 150 // folds
    if get_family(family).fidelity_unit == "rows":
        assert 30 <= low.n_train_rows <= 40  # 0.3 of 100 rows, rounded up per class
    else:  # keras_mlp scales epochs and keeps every row
        assert low.n_train_rows == full.n_train_rows


def test_binary_scores_probabilities_with_roc_auc(datasets: Any) -> None:
    X, y = datasets["binary"]
    result = evaluate("lightgbm", CONFIGS["lightgbm"], X, y, "binary", folds=3)
    assert result.metric == "roc_auc"
    assert 0.8 < result.score <= 1.0  # type: ignore[operator]
    assert {"roc_auc", "roc_auc_std", "log_loss", "accuracy"} <= set(result.metrics)


def test_same_seed_same_score(datasets: Any) -> None:
    X, y = datasets["multiclass"]
    a = evaluate("random_forest", {"n_estimators": 16}, X, y, "multiclass", folds=3, seed=4)
    b = evaluate("random_forest", {"n_estimators": 16}, X, y, "multiclass", folds=3, seed=4)
    timing = {"fit_seconds", "predict_seconds"}
    assert {k: v for k, v in a.metrics.items() if k not in timing} == {
        k: v for k, v in b.metrics.items() if k not in timing
    }


@pytest.mark.parametrize("task", TASKS)
def test_every_metric_of_the_task_is_measured(datasets: Any, task: str) -> None:
    X, y = datasets[task]
    result = evaluate("lightgbm", {"n_estimators": 20}, X, y, task, folds=3)
    kept = result.run_metrics()
    assert kept is not None
    assert set(kept) == {*TASK_METRICS[task], "fit_seconds", "predict_seconds"}
    assert kept[result.metric] == result.score
    assert kept["fit_seconds"] > 0
    assert kept["predict_seconds"] > 0
    if task != "regression":
        assert 0.5 < kept["roc_auc"] <= 1
        assert 0 < kept["f1_macro"] <= 1
        assert kept["log_loss"] > 0
    else:
        assert kept["rmse"] > 0
        assert kept["mae"] > 0
        assert kept["mae"] <= kept["rmse"]


def test_multiclass_auc_is_one_vs_rest_macro() -> None:
    y_true = np.array([0, 0, 1, 1, 2, 2])
    proba = np.array(
        [
            [0.8, 0.1, 0.1],
            [0.2, 0.5, 0.3],
            [0.1, 0.8, 0.1],
            [0.3, 0.3, 0.4],
            [0.1, 0.1, 0.8],
            [0.2, 0.2, 0.6],
        ]
    )
    got = score_predictions(y_true, proba, "multiclass", 3)
    from sklearn.metrics import roc_auc_score

    assert got["roc_auc"] == pytest.approx(roc_auc_score(y_true, proba, multi_class="ovr"))
    # A class absent from the fold leaves AUC undefined: left out, the rest still there.
    partial = score_predictions(y_true[:4], proba[:4], "multiclass", 3)
    assert "roc_auc" not in partial
    assert "log_loss" in partial
    assert "f1_macro" in partial


def test_failed_trial_keeps_no_metrics(datasets: Any) -> None:
    X, y = datasets["binary"]
    result = evaluate("lightgbm", {"num_leaves": -3}, X, y, "binary", folds=3)
    assert not result.ok
    assert result.run_metrics() is None


def test_primary_metric() -> None:
    assert [primary_metric(t) for t in TASKS] == ["roc_auc", "accuracy", "r2"]
    with pytest.raises(ValueError, match="unknown task"):
        primary_metric("ranking")


def test_get_family() -> None:
    assert set(FAMILIES) == {"lightgbm", "random_forest", "linear", "keras_mlp", "xgboost"}
    assert get_family("linear").space.family == "linear"
    with pytest.raises(UnknownFamilyError, match="known families: lightgbm"):
        get_family("svm")


# ---------------------------------------------------------------------------- failures


def _assert_failed(result: TrialResult, match: str) -> None:
    assert result.status == "failed"
    assert result.score is None
    assert result.error is not None
    assert match in result.error, result.error
    assert result.cost_seconds >= 0


def test_invalid_config_fails_without_raising(datasets: Any) -> None:
    X, y = datasets["binary"]
    result = evaluate("lightgbm", {"num_leaves": 1, "boosting": "dart"}, X, y, "binary")
    _assert_failed(result, "ValueError: invalid lightgbm config")
    assert "boosting" in str(result.error)
    assert "num_leaves=1" in str(result.error)
    assert result.metric == "roc_auc"


def test_bad_arguments_fail_without_raising(datasets: Any) -> None:
    X, y = datasets["binary"]
    _assert_failed(evaluate("svm", {}, X, y, "binary"), "unknown family 'svm'")
    _assert_failed(evaluate("linear", {}, X, y, "ranking"), "unknown task 'ranking'")
    _assert_failed(evaluate("linear", {}, X, y, "binary", fidelity=0.0), "fidelity")
    _assert_failed(evaluate("linear", {}, X, y, "binary", folds=1), "folds must be")
    Xm, ym = datasets["multiclass"]
    _assert_failed(evaluate("linear", {}, Xm, ym, "binary"), "exactly 2 classes")


def test_crash_in_fit_fails_without_raising(datasets: Any) -> None:
    class Boom:
        def fit(self, X: Any, y: Any) -> None:
            raise RuntimeError("boom")

    family = dataclasses.replace(get_family("lightgbm"), build=lambda *a: Boom())
    X, y = datasets["regression"]
    _assert_failed(evaluate_family(family, {}, X, y, "regression"), "RuntimeError: boom")


def test_non_finite_predictions_fail(datasets: Any) -> None:
    class Diverged:
        def fit(self, X: Any, y: Any) -> Diverged:
            return self

        def predict(self, X: Any) -> np.ndarray:
            return np.full(len(X), np.nan)

    family = dataclasses.replace(get_family("linear"), build=lambda *a: Diverged())
    X, y = datasets["regression"]
    _assert_failed(evaluate_family(family, {}, X, y, "regression"), "non-finite")


def test_diverging_keras_fit_fails(datasets: Any) -> None:
    X, y = datasets["regression"]
    config = {"optimizer": "sgd", "learning_rate": 1e4, "epochs": 3, "units": 16}
    result = evaluate("keras_mlp", config, X, y, "regression", folds=2)
    _assert_failed(result, "diverged")


def test_keras_crash_fails(datasets: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from hyperprior.training.families import keras_mlp

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise MemoryError("out of memory building the model")

    monkeypatch.setattr(keras_mlp, "_build_model", broken)
    X, y = datasets["binary"]
    result = evaluate("keras_mlp", CONFIGS["keras_mlp"], X, y, "binary", folds=2)
    _assert_failed(result, "MemoryError: out of memory")


def test_keras_folds_reusing_one_model_score_as_fresh_builds(
    datasets: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The folds of a trial share one compiled network, reset to its initial state;
    # rebuilding it for every fold must give the same scores (no dropout: same RNG use).
    from hyperprior.training.families import keras_mlp

    X, y = datasets["multiclass"]
    config = {**CONFIGS["keras_mlp"], "optimizer": "adam", "epochs": 6}
    reused = evaluate("keras_mlp", config, X, y, "multiclass", folds=3)
    fresh_model = keras_mlp._fresh_model

    def rebuilt(*args: Any, **kwargs: Any) -> Any:
        keras_mlp._REUSE.clear()
        return fresh_model(*args, **kwargs)

    monkeypatch.setattr(keras_mlp, "_fresh_model", rebuilt)
    fresh = evaluate("keras_mlp", config, X, y, "multiclass", folds=3)
    assert reused.status == fresh.status == "ok", (reused.error, fresh.error)
    assert reused.metrics["n_folds"] == 3.0
    assert reused.score == pytest.approx(fresh.score, abs=1e-9)
    assert reused.metrics["accuracy_std"] == pytest.approx(fresh.metrics["accuracy_std"], abs=1e-9)


def test_keras_model_retrained_by_a_later_fit_refuses_to_predict(datasets: Any) -> None:
    from hyperprior.training.families.keras_mlp import build

    X, y = datasets["binary"]
    codes = (y == y.iloc[0]).astype(int).to_numpy()
    config = {**get_family("keras_mlp").space.default("binary"), **CONFIGS["keras_mlp"]}
    first = build(config, "binary", 2, 0, 1.0).fit(X, codes)
    assert first.predict_proba(X).shape == (len(X), 2)
    build(config, "binary", 2, 0, 1.0).fit(X, codes)
    with pytest.raises(RuntimeError, match="retrained by a later fit"):
        first.predict_proba(X)


def test_keras_fidelity_scales_epochs() -> None:
    from hyperprior.training.families.keras_mlp import build, effective_epochs

    assert effective_epochs(20, 0.25) == 5
    assert effective_epochs(5, 0.01) == 1
    pipe = build({**get_family("keras_mlp").space.default("binary")}, "binary", 2, 0, 0.5)
    assert pipe.named_steps["model"].epochs == 10


# ---------------------------------------------------------------------------- protocol


def test_single_member_class_fails_clearly() -> None:
    X, y = _dataset("binary", n=60)
    y = y.copy()
    y.iloc[0] = "rare"
    result = evaluate("linear", {}, X, y, "multiclass")
    _assert_failed(result, "has 1 row(s)")


def test_folds_shrink_to_the_smallest_class() -> None:
    X, y = _dataset("binary", n=60)
    y = pd.Series(np.where(np.arange(60) < 3, "rare", "common"))
    result = evaluate("linear", {}, X, y, "binary", folds=5)
    assert result.status == "ok", result.error
    assert result.metrics["n_folds"] == 3.0


def test_missing_targets_are_dropped() -> None:
    X, y = _dataset("regression", n=80)
    y = y.copy()
    y.iloc[:10] = np.nan
    Xp, y_out, n_classes = prepare_data(X, y, "regression")
    assert len(Xp) == len(y_out) == 70
    assert n_classes == 0
    assert evaluate("linear", {}, X, y, "regression", folds=2).status == "ok"


def test_subsample_is_stratified_with_a_floor_per_class() -> None:
    y = np.array([0] * 90 + [1] * 10)
    idx = subsample_rows(np.arange(100), y, "binary", 0.1, seed=0)
    counts = np.bincount(y[idx])
    assert counts[0] == 9
    assert counts[1] == MIN_ROWS_PER_CLASS
    assert np.array_equal(idx, np.sort(idx))
    assert subsample_rows(np.arange(100), y, "binary", 1.0, seed=0).tolist() == list(range(100))


def test_folds_are_stratified_and_seeded() -> None:
    y = np.array([0] * 30 + [1] * 15)
    a = make_folds(y, "binary", 3, seed=0)
    assert len(a) == 3
    for _, va in a:
        assert np.bincount(y[va]).tolist() == [10, 5]
    b = make_folds(y, "binary", 3, seed=0)
    assert all(np.array_equal(x[1], z[1]) for x, z in zip(a, b, strict=True))


def test_lightgbm_sees_pandas_categoricals() -> None:
    X, _ = _dataset("binary", n=40)
    out = tree_preprocessor(pandas_categorical=True).fit_transform(prepare_frame(X))
    assert str(out["cat__colour"].dtype) == "category"
    assert out["num__x0"].isna().any()  # NaN left to the trees


def test_linear_default_uses_the_library_solver() -> None:
    from hyperprior.training.families.linear import build

    space = get_family("linear").space
    model = build(space.default("binary"), "binary", 2, 0, 1.0).named_steps["model"]
    assert model.solver == "lbfgs"
    assert model.C == 1.0
    model = build({**space.default("binary"), "l1_ratio": 0.5}, "binary", 2, 0, 1.0)
    assert model.named_steps["model"].solver == "saga"


def test_messy_frames_are_handled() -> None:
    rng = np.random.default_rng(5)
    n = 80
    X = pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "when": pd.date_range("2024-01-01", periods=n, freq="h", tz="Europe/Paris"),
            "id": [f"row{i}" for i in range(n)],  # ID-like: pooled into "infrequent"
            "empty": np.full(n, np.nan),
            "count": pd.array(rng.integers(0, 4, n), dtype="Int64"),
            "inf": np.where(rng.random(n) < 0.1, np.inf, 0.0),
        }
    )
    X.columns = ["x", "when", "id", "empty", "x", 'odd,"name"']  # duplicate and unsafe labels
    y = pd.Series(rng.random(n) > 0.5)
    prepared = prepare_frame(X)
    assert list(prepared.columns) == ["x", "when", "id", "empty", "x_1", "odd_name"]
    assert prepared["when"].dtype == np.float64
    assert prepared["odd_name"].isna().sum() == np.isinf(X.iloc[:, 5]).sum()
    for family in ("lightgbm", "random_forest", "linear", "xgboost"):
        result = evaluate(family, {}, X, y, "binary", folds=2)
        assert result.status == "ok", (family, result.error)
