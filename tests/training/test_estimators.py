"""make_estimator: every family's config builds a model that fits raw tables."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.model_selection import cross_val_score
from sklearn.utils.estimator_checks import parametrize_with_checks

from hyperprior.client import Client, HyperpriorWarning, LGBMClassifier, make_estimator
from hyperprior.client import RandomForestRegressor as RFRegressor
from hyperprior.training.estimators import KerasMLPEstimator
from hyperprior.training.families import BUILT_IN
from hyperprior.training.spaces import SPACES

FAMILIES = tuple(f.name for f in BUILT_IN)
# Small enough to fit in a blink; keras_mlp's 20 default epochs are cut to 3.
SMALL = {
    "lightgbm": {"n_estimators": 20},
    "random_forest": {"n_estimators": 16},
    "linear": {},
    "keras_mlp": {"epochs": 3, "units": 16},
    "xgboost": {"n_estimators": 10},
}


def _table(task: str, n: int = 120) -> tuple[pd.DataFrame, pd.Series]:
    """Numbers with NaN and inf, a text column, and a target of text labels."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame(
        {
            "x0": rng.normal(size=n),
            "x1": rng.normal(size=n),
            "colour": rng.choice(["red", "green", None], size=n),
        }
    )
    X.loc[3, "x0"] = np.nan
    X.loc[4, "x1"] = np.inf
    signal = X["x0"].fillna(0) + (X["colour"] == "red")
    if task == "regression":
        return X, pd.Series(3.0 * signal + rng.normal(0, 0.1, n), name="y")
    if task == "binary":
        return X, pd.Series(np.where(signal > 0.3, "yes", "no"), name="y")
    return X, pd.Series(pd.cut(signal, 3, labels=["lo", "mid", "hi"]).astype(str), name="y")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_every_family_builds_and_fits_on_a_raw_table(family: str, task: str) -> None:
    X, y = _table(task)

    model = make_estimator(family, SMALL[family], task)
    model.fit(X, y)
    predicted = model.predict(X.head(10))

    assert len(predicted) == 10
    if task == "regression":
        assert is_regressor(model)
        assert np.isfinite(predicted).all()
    else:
        assert is_classifier(model)
        assert set(predicted) <= set(y)
        proba = model.predict_proba(X.head(10))
        assert proba.shape == (10, y.nunique())
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
        assert list(model.classes_) == sorted(set(y))


def test_a_suggested_config_is_the_family_default_plus_the_tuned_values() -> None:
    model = make_estimator("lightgbm", {"num_leaves": 7}, "binary")
    params = model[-1].get_params()

    assert params["num_leaves"] == 7
    assert params["n_estimators"] == SPACES["lightgbm"].default("binary")["n_estimators"]


def test_the_linear_family_picks_the_solver_the_penalty_needs() -> None:
    # LogisticRegression(l1_ratio=0.5) alone is refused by lbfgs; the family uses saga.
    X, y = _table("binary")

    model = make_estimator("linear", {"C": 0.5, "l1_ratio": 0.5}, "binary").fit(X, y)

    assert model[-1].solver == "saga"
    assert make_estimator("linear", {}, "binary")[-1].solver == "lbfgs"
    assert type(make_estimator("linear", {}, "regression")[-1]).__name__ == (
        "TransformedTargetRegressor"
    )


@pytest.mark.parametrize("family", ["lightgbm", "random_forest", "linear", "xgboost"])
def test_estimators_clone_and_cross_validate(family: str) -> None:
    X, y = _table("binary")

    scores = cross_val_score(clone(make_estimator(family, SMALL[family], "binary")), X, y, cv=3)

    assert len(scores) == 3


def test_keras_models_of_the_same_config_do_not_share_a_network() -> None:
    X, y = _table("binary")
    first = make_estimator("keras_mlp", SMALL["keras_mlp"], "binary").fit(X, y)
    second = make_estimator("keras_mlp", SMALL["keras_mlp"], "binary").fit(X, y)

    # The family reuses a compiled network across the folds of one trial; user
    # models must each keep their own.
    assert first[-1].network_.model_ is not second[-1].network_.model_
    np.testing.assert_allclose(first.predict_proba(X), second.predict_proba(X), atol=1e-5)
    assert KerasMLPEstimator(config={}, task="regression").get_params()["task"] == "regression"


@pytest.mark.parametrize(
    ("family", "config", "task", "message"),
    [
        ("lightgbm", {"eta": 0.3}, "binary", "unknown parameter"),
        ("linear", {"C": 1.0}, "regression", "unknown parameter"),
        ("random_forest", {"n_estimators": 0}, "binary", "n_estimators=0 must be >= 1"),
        ("catboost", {}, "binary", "unknown family 'catboost'"),
        ("lightgbm", {}, "ranking", "unknown task"),
    ],
)
def test_bad_requests_raise_with_the_reason(
    family: str, config: dict[str, Any], task: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make_estimator(family, config, task)


# ----------------------------------------------------------------- drop-in estimators


class FixedClient:
    """Answers every suggestion with one small config, at once (a stand-in service)."""

    def suggest(self, X: Any, y: Any, family: str, n: int = 1, **options: Any) -> Any:
        config = {"n_estimators": 10}
        if family == "lightgbm":
            config["min_child_samples"] = 1  # scikit-learn's checks fit on a handful of rows
        return [SimpleNamespace(config=config, source="surrogate")]


@parametrize_with_checks([LGBMClassifier(client=FixedClient()), RFRegressor(client=FixedClient())])
def test_drop_in_estimators_pass_scikit_learns_checks(estimator: Any, check: Any) -> None:
    check(estimator)


def test_a_drop_in_estimator_fits_the_suggested_config_on_a_raw_table() -> None:
    X, y = _table("multiclass")

    model = LGBMClassifier(client=FixedClient(), fixed={"num_leaves": 5}).fit(X, y)

    assert model.config_source_ == "surrogate"
    assert model.estimator_[-1].get_params()["n_estimators"] == 10
    assert set(model.predict(X)) <= set(y)
    assert list(model.classes_) == sorted(set(y))


def test_a_drop_in_estimator_falls_back_to_the_default_without_a_history(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYPERPRIOR_DATABASE_URL", raising=False)
    X, y = _table("regression")

    with pytest.warns(HyperpriorWarning, match="no hyperprior database"):
        model = RFRegressor(fixed={"n_estimators": 12}).fit(X, y)

    assert model.config_source_ == "fallback"
    assert model.config_ == {**SPACES["random_forest"].default("regression"), "n_estimators": 12}
    assert list(tmp_path.iterdir()) == []


def test_a_drop_in_estimator_asks_a_local_history(store: Any) -> None:
    X, y = _table("binary")

    with pytest.warns(HyperpriorWarning, match="holds no runs"):
        model = LGBMClassifier(client=Client.local(store=store)).fit(X, y)

    # An empty history answers with the library default, marked as such.
    assert model.config_source_ == "default"
    assert model.config_ == SPACES["lightgbm"].default("binary")
