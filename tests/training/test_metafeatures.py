"""Meta-features: exact values on a hand-built frame, landmarkers, validation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from hyperprior.training.metafeatures import (
    CORE,
    DESCRIPTIONS,
    REQUIRED,
    compute_metafeatures,
    validate_metafeatures,
)
from hyperprior.training.spaces import TASKS


@pytest.fixture
def small() -> tuple[pd.DataFrame, pd.Series]:
    X = pd.DataFrame(
        {
            "a": [1.0, 2.0, np.nan, 4.0, 5.0, 6.0],
            "b": [0, 0, 0, 0, 0, 1],
            "c": ["x", "y", "x", None, "x", "z"],
            "d": [True, False, True, True, False, True],
        }
    )
    y = pd.Series(["p", "p", "q", "p", "q", "p"])
    return X, y


def test_hand_computed_values(small: tuple[pd.DataFrame, pd.Series]) -> None:
    X, y = small
    mf = compute_metafeatures(X, y, "binary", landmarkers=False)
    # b = [0,0,0,0,0,1]: mean 1/6, m2 = 5/36, m3 = 5/54, m4 = 105/1296.
    skew_b, kurt_b = 4 / math.sqrt(5), 1.2
    # a without its NaN = [1,2,4,5,6]: mean 3.6, m2 = 3.44, m3 = -1.008, m4 = 17.8592.
    skew_a, kurt_a = -1.008 / 3.44**1.5, 17.8592 / 3.44**2 - 3
    entropy = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    expected = {
        "n_rows": 6,
        "n_features": 4,
        "n_numeric": 2,
        "n_categorical": 2,  # c (strings) and d (bool)
        "n_classes": 2,
        "log_n_rows": math.log(6),
        "log_n_features": math.log(4),
        "ratio_features_rows": 4 / 6,
        "frac_numeric": 0.5,
        "frac_categorical": 0.5,
        "missing_cells_frac": 2 / 24,
        "missing_cols_frac": 2 / 4,
        "missing_rows_frac": 2 / 6,
        "class_prob_min": 1 / 3,
        "class_prob_max": 2 / 3,
        "class_entropy": entropy,
        "class_entropy_norm": entropy / math.log(2),
        "imbalance_ratio": 0.5,
        "cat_card_min": 2,
        "cat_card_mean": 2.5,
        "cat_card_max": 3,
        "onehot_width": 5,
        "skew_mean": (skew_a + skew_b) / 2,
        "skew_min": skew_a,
        "skew_max": skew_b,
        "kurt_mean": (kurt_a + kurt_b) / 2,
        "kurt_min": kurt_a,
        "kurt_max": kurt_b,
    }
    assert set(mf) == set(expected)
    for name, value in expected.items():
        assert mf[name] == pytest.approx(value, rel=1e-12), name
    for name in ("n_rows", "n_features", "n_numeric", "n_categorical", "n_classes"):
        assert type(mf[name]) is int


def test_moments_match_scipy() -> None:
    from scipy import stats

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"e": rng.exponential(size=500), "n": rng.normal(size=500)})
    y = pd.Series(rng.lognormal(size=500))
    mf = compute_metafeatures(X, y, "regression", landmarkers=False)
    skews = [stats.skew(X[c]) for c in X]
    kurts = [stats.kurtosis(X[c]) for c in X]
    assert mf["skew_max"] == pytest.approx(max(skews))
    assert mf["kurt_mean"] == pytest.approx(np.mean(kurts))
    assert mf["target_skew"] == pytest.approx(stats.skew(y))
    assert mf["target_kurtosis"] == pytest.approx(stats.kurtosis(y))
    assert "n_classes" not in mf
    assert "class_prob_min" not in mf


def test_undefined_statistics_are_absent() -> None:
    X = pd.DataFrame({"c": ["u", "v"] * 10, "k": [3.0] * 20})  # k is constant
    mf = compute_metafeatures(X, pd.Series(np.arange(20.0)), "regression", landmarkers=False)
    assert "skew_mean" not in mf
    assert mf["onehot_width"] == 2
    only_numeric = compute_metafeatures(
        pd.DataFrame({"x": np.arange(20.0)}), pd.Series([0, 1] * 10), "binary", landmarkers=False
    )
    assert "cat_card_mean" not in only_numeric
    assert only_numeric["onehot_width"] == 0


@pytest.mark.parametrize("task", TASKS)
def test_landmarkers_are_scored_in_the_primary_metric(task: str) -> None:
    rng = np.random.default_rng(1)
    n = 3000  # above the landmarkers' subsample size
    X = pd.DataFrame(rng.normal(size=(n, 4)), columns=list("abcd"))
    X["colour"] = rng.choice(["r", "g", None], size=n)
    signal = X["a"] * 2 + X["b"]
    if task == "regression":
        y = signal + rng.normal(scale=0.5, size=n)
    elif task == "binary":
        y = (signal > 0).astype(int)
    else:
        y = pd.cut(signal, [-np.inf, -1, 1, np.inf], labels=["lo", "mid", "hi"]).astype(str)
    mf = compute_metafeatures(X, pd.Series(y), task, seed=3)
    names = {"lm_stump", "lm_1nn", "lm_linear", "lm_gbdt", "lm_tree", "lm_rf", "lm_gbdt_short"} | (
        {"lm_nb"} if task != "regression" else set()
    )
    assert names <= set(mf)
    assert mf["lm_linear"] > 0.8  # a linear signal: the linear landmarker finds it
    for name in names:
        assert mf[name] <= 1.0
    assert mf == compute_metafeatures(X, pd.Series(y), task, seed=3)


def test_the_boosting_landmarker_sees_structure_the_1nn_misses_among_noise_columns() -> None:
    # An interaction of 2 columns among 28 irrelevant ones: a booster finds it, a linear
    # model cannot, and the 1-NN's distances are drowned by the noise columns.
    rng = np.random.default_rng(4)
    X = pd.DataFrame(rng.normal(size=(2000, 30)), columns=[f"x{i}" for i in range(30)])
    y = pd.Series(((X["x0"] > 0) ^ (X["x1"] > 0)).astype(int))
    mf = compute_metafeatures(X, y, "binary", seed=0)
    assert mf["lm_gbdt"] - mf["lm_linear"] > 0.3
    assert mf["lm_gbdt"] - mf["lm_1nn"] > 0.2
    noise = compute_metafeatures(X, pd.Series(rng.integers(0, 2, 2000)), "binary", seed=0)
    assert abs(noise["lm_gbdt"] - noise["lm_linear"]) < 0.1


def test_the_deep_tree_landmarkers_tell_label_noise_from_fine_structure() -> None:
    # The same curved boundary, clean and with 30% of the labels flipped: a fully grown
    # tree fits the flipped labels and falls behind boosting, a forest averages them out.
    rng = np.random.default_rng(5)
    X = pd.DataFrame(rng.uniform(-1, 1, size=(2000, 4)), columns=list("abcd"))
    clean = ((X["a"] ** 2 + X["b"] ** 2) < 0.5).astype(int)
    flipped = clean ^ (rng.random(2000) < 0.3).astype(int)
    a = compute_metafeatures(X, pd.Series(clean), "binary", seed=0)
    b = compute_metafeatures(X, pd.Series(flipped), "binary", seed=0)
    assert a["lm_tree"] > 0.9
    assert a["lm_rf"] > 0.95
    assert b["lm_tree"] - b["lm_gbdt"] < a["lm_tree"] - a["lm_gbdt"] - 0.02
    assert b["lm_rf"] - b["lm_tree"] > 0.05
    # Boosting longer pays on the clean boundary (a fifth of the rounds is cruder).
    assert a["lm_gbdt"] > a["lm_gbdt_short"]


@pytest.mark.parametrize(
    ("task", "n_classes"), [("binary", 2), ("multiclass", 7), ("regression", 0)]
)
def test_the_short_boosting_landmarker_equals_a_short_model_fitted_apart(
    task: str, n_classes: int
) -> None:
    # lm_gbdt_short is read off lm_gbdt's staged predictions; the stored datasets' values
    # came from a separately fitted model with fewer rounds, so the two must agree exactly.
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.metrics import accuracy_score, r2_score, roc_auc_score
    from sklearn.model_selection import KFold, StratifiedKFold

    from hyperprior.training.metafeatures import _landmark_matrix, gbdt_rounds

    rng = np.random.default_rng(8)
    n = 1500  # under the landmarkers' subsample size: every row is used
    X = pd.DataFrame(rng.normal(size=(n, 6)), columns=list("abcdef"))
    signal = X["a"] * X["b"] + np.sin(3 * X["c"]) + rng.normal(scale=0.3, size=n)
    if task == "regression":
        y = signal.to_numpy()
    else:
        y = np.digitize(signal, np.quantile(signal, np.linspace(0, 1, n_classes + 1)[1:-1]))
    mf = compute_metafeatures(X, pd.Series(y), task, seed=2)
    M = _landmark_matrix(X)
    if task == "regression":
        model = HistGradientBoostingRegressor(max_iter=10, random_state=2)
        splits = KFold(2, shuffle=True, random_state=2).split(M, y)
    else:
        rounds = max(2, gbdt_rounds(n_classes) // 5)
        model = HistGradientBoostingClassifier(max_iter=rounds, random_state=2)
        splits = StratifiedKFold(2, shuffle=True, random_state=2).split(M, y)
    scores = []
    for tr, va in splits:
        model.fit(M[tr], y[tr])
        if task == "binary":
            scores.append(roc_auc_score(y[va], model.predict_proba(M[va])[:, 1]))
        elif task == "multiclass":
            scores.append(accuracy_score(y[va], model.predict(M[va])))
        else:
            scores.append(r2_score(y[va], model.predict(M[va])))
    assert mf["lm_gbdt_short"] == float(np.mean(scores))
    assert mf["lm_gbdt_short"] != mf["lm_gbdt"]


@pytest.mark.parametrize("task", TASKS)
def test_computed_values_pass_validation(task: str) -> None:
    rng = np.random.default_rng(2)
    X = pd.DataFrame({"a": rng.normal(size=60), "s": rng.choice(["u", "v"], size=60)})
    y = (
        rng.normal(size=60)
        if task == "regression"
        else rng.integers(0, 2 if task == "binary" else 3, 60)
    )
    mf = compute_metafeatures(X, pd.Series(y), task)
    out = validate_metafeatures(task, mf)
    assert list(out)[: len(DESCRIPTIONS)] == list(DESCRIPTIONS)
    for name, value in mf.items():
        assert out[name] == pytest.approx(value)


def test_validate_fills_derivable_values_and_leaves_unknown_ones_missing() -> None:
    out = validate_metafeatures(
        "multiclass",
        {"n_rows": 1000, "n_features": 10.0, "n_categorical": 4, "n_classes": 4,
         "class_entropy": math.log(4), "class_prob_min": 0.1, "class_prob_max": 0.4,
         "client_version": 3},
    )  # fmt: skip
    assert out["log_n_rows"] == pytest.approx(math.log(1000))
    assert out["log_n_features"] == pytest.approx(math.log(10))
    assert out["ratio_features_rows"] == pytest.approx(0.01)
    assert out["n_numeric"] == 6
    assert type(out["n_features"]) is int
    assert out["frac_categorical"] == pytest.approx(0.4)
    assert out["class_entropy_norm"] == pytest.approx(1.0)
    assert out["imbalance_ratio"] == pytest.approx(0.25)
    assert out["skew_mean"] is None
    assert out["lm_1nn"] is None
    assert out["client_version"] == 3.0
    regression = validate_metafeatures("regression", {"n_rows": 5, "n_features": 2, "n_classes": 3})
    assert regression["n_classes"] is None  # not applicable to the task


@pytest.mark.parametrize(
    ("task", "mf", "match"),
    [
        ("binary", {"n_features": 3}, "n_rows is required"),
        ("binary", {"n_rows": -5, "n_features": 3}, "n_rows=-5 must be a non-negative integer"),
        ("binary", {"n_rows": 10.5, "n_features": 3}, "must be a non-negative integer"),
        ("binary", {"n_rows": 10, "n_features": 0}, "n_features=0 must be at least 1"),
        ("multiclass", {"n_rows": 10, "n_features": 3, "n_classes": 1}, "n_classes=1 must be"),
        ("binary", {"n_rows": 10, "n_features": 3, "n_classes": 3}, "must be 2 for a binary"),
        ("binary", {"n_rows": 10, "n_features": 3, "missing_cells_frac": 1.5}, r"in \[0, 1\]"),
        ("binary", {"n_rows": 10, "n_features": 3, "lm_1nn": float("nan")}, "not finite"),
        ("binary", {"n_rows": 10, "n_features": 3, "skew_max": float("inf")}, "not finite"),
        ("binary", {"n_rows": 10, "n_features": 3, "lm_nb": "high"}, "not a number"),
        ("regression", {"n_rows": 10, "n_features": 3, "lm_linear": 1.5}, "R² and must be"),
        ("binary", {"n_rows": 10, "n_features": 3, "log_n_rows": 1.0}, "log_n_rows=1 contradicts"),
        (
            "binary",
            {"n_rows": 10, "n_features": 3, "n_numeric": 2, "n_categorical": 2},
            "n_features=3 contradicts",
        ),
        (
            "binary",
            {"n_rows": 10, "n_features": 3, "class_prob_min": 0.6, "class_prob_max": 0.4},
            "exceeds class_prob_max",
        ),
    ],
)
def test_validate_rejects_impossible_values(task: str, mf: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        validate_metafeatures(task, mf)


def test_name_lists_are_consistent() -> None:
    assert set(REQUIRED) <= set(DESCRIPTIONS)
    assert set(CORE) <= set(DESCRIPTIONS)
    assert len(set(CORE)) == len(CORE)
    assert all(DESCRIPTIONS.values())


def test_missing_targets_are_ignored(small: tuple[pd.DataFrame, pd.Series]) -> None:
    X, y = small
    y = y.copy()
    y.iloc[0] = None
    mf = compute_metafeatures(X, y, "binary", landmarkers=False)
    assert mf["n_rows"] == 5
    with pytest.raises(ValueError, match="at least 2 classes"):
        compute_metafeatures(X, pd.Series(["p"] * 6), "binary")


def test_duplicate_labels_and_datetimes() -> None:
    X = pd.DataFrame(
        [[1.0, "u", pd.Timestamp("2024-01-01")], [2.0, "v", pd.NaT], [4.0, "u", pd.NaT]],
        columns=["a", "a", "t"],
    )
    mf = compute_metafeatures(X, pd.Series([1.0, 2.0, 3.0]), "regression", landmarkers=False)
    assert mf["n_numeric"] == 2  # a datetime counts as numeric (seconds)
    assert mf["n_categorical"] == 1
    assert mf["missing_cells_frac"] == pytest.approx(2 / 9)


def test_perfectly_balanced_many_classes_pass_validation() -> None:
    # 52 classes of 6 rows: entropy / log(k) is 1 + a rounding error, which was refused.
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(312, 5)), columns=[f"x{i}" for i in range(5)])
    y = pd.Series(np.repeat(np.arange(52), 6))
    mf = compute_metafeatures(X, y, "multiclass", landmarkers=False)
    assert mf["class_entropy_norm"] == 1.0
    assert validate_metafeatures("multiclass", mf)["class_entropy_norm"] == 1.0
    # A client's own value a hair above 1 is the same rounding error; a real excess is not.
    assert (
        validate_metafeatures("multiclass", {**mf, "class_entropy_norm": 1.0 + 1e-12})[
            "class_entropy_norm"
        ]
        == 1.0
    )
    with pytest.raises(ValueError, match="class_entropy_norm"):
        validate_metafeatures("multiclass", {"n_rows": 10, "n_features": 2,
                                             "class_entropy_norm": 1.2})  # fmt: skip
