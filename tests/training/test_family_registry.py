"""The family is the unit of extension: a family registered here (a decision tree,
defined in this file only) gets its space, features, cost prior, estimator, CLI
choices and API schema from the registry, without touching another module."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, get_args

import numpy as np
import pandas as pd
import pytest
from pydantic import BaseModel, ValidationError

from hyperprior.training import families
from hyperprior.training.families import FAMILIES, Family, get_family
from hyperprior.training.families.base import cost_ratio
from hyperprior.training.features import Interaction, safe_log

NAME = "decision_tree"


def _space() -> Any:
    from hyperprior.training.spaces import Categorical, Int, Space

    return Space(
        family=NAME,
        description="scikit-learn DecisionTreeClassifier / DecisionTreeRegressor.",
        params=(
            Int("min_samples_leaf", 1, 64, log=True, default=1, minimum=1),
            Categorical("max_depth", (2, 4, 8, None), default=None),
        ),
    )


def _build(config: Mapping[str, Any], task: str, n_classes: int, seed: int, fidelity: float) -> Any:
    from sklearn.pipeline import Pipeline
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    from hyperprior.training.preprocess import tree_preprocessor

    cls = DecisionTreeRegressor if task == "regression" else DecisionTreeClassifier
    return Pipeline([("pre", tree_preprocessor()), ("model", cls(**config, random_state=seed))])


def _decision_tree() -> Family:
    space = _space()
    return Family(
        name=NAME,
        space=space,
        build=_build,
        fidelity_unit="rows",
        description=space.description,
        cost=lambda config, default: 2.0 / cost_ratio(config, default, "min_samples_leaf"),
        interactions=(
            Interaction(
                "log_min_leaf_per_row",
                ("min_samples_leaf",),
                lambda v: safe_log(v["min_samples_leaf"]) - safe_log(v["rows"]),
            ),
        ),
    )


@pytest.fixture
def decision_tree() -> Iterator[Family]:
    family = families.register(_decision_tree())
    try:
        yield family
    finally:
        families.unregister(NAME)


def test_a_registered_family_is_listed_with_its_space(decision_tree: Family) -> None:
    from hyperprior.training.spaces import SPACES, get_space

    assert list(FAMILIES)[-1] == NAME
    assert get_family(NAME) is decision_tree
    assert get_space(NAME) is decision_tree.space
    assert NAME in SPACES
    assert SPACES[NAME].default("binary") == {"min_samples_leaf": 1, "max_depth": None}


def test_it_gets_feature_columns_and_a_cost_prior(decision_tree: Family) -> None:
    from hyperprior.training.features import encode_configs, feature_names
    from hyperprior.training.refine import relative_cost

    names = feature_names(NAME)
    assert [n for n in names if n.startswith("ix_")] == [
        "ix_log_min_leaf_per_row",
        "ix_signal_1nn_minus_linear",
        "ix_learnable_beyond_stump",
        "ix_signal_gbdt_minus_linear",
        "ix_tree_minus_gbdt",
        "ix_rf_minus_gbdt",
        "ix_gbdt_minus_short",
    ]
    assert "cfg_min_samples_leaf" in names
    assert "cfg_max_depth" in names
    block = encode_configs(NAME, [{"min_samples_leaf": 4, "max_depth": 2}])
    assert block.unit.shape == (1, 2)
    default = decision_tree.space.default("binary")
    assert relative_cost(NAME, {"min_samples_leaf": 1}, default) == 2.0
    assert relative_cost(NAME, {"min_samples_leaf": 64}, default) == pytest.approx(0.1)


def test_it_trains_and_builds_an_estimator(decision_tree: Family) -> None:
    from hyperprior.training.estimators import make_estimator

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=80), "b": rng.normal(size=80)})
    y = (X["a"] > 0).astype(int)
    result = families.evaluate(NAME, {"max_depth": 2}, X, y, "binary", folds=3)
    assert result.ok, result.error
    model = make_estimator(NAME, {"max_depth": 4}, "binary").fit(X, y)
    assert model.predict(X).shape == (80,)


def test_cli_choices_and_schemas_derive_from_the_registry(decision_tree: Family) -> None:
    from hyperprior.service.cli import build_parser
    from hyperprior.service.schemas import family_literal

    parser = build_parser()
    args = parser.parse_args(["retrain", "--family", NAME])
    assert args.family == [NAME]
    args = parser.parse_args(["bootstrap", "--families", f"lightgbm,{NAME}"])
    assert tuple(args.families) == ("lightgbm", NAME)

    assert get_args(family_literal())[-1] == NAME

    class Body(BaseModel):
        family: family_literal()  # type: ignore[valid-type]

    assert Body(family=NAME).family == NAME
    assert Body.model_json_schema()["properties"]["family"]["enum"][-1] == NAME
    with pytest.raises(ValidationError):
        Body(family="catboost")


def test_registering_twice_or_removing_a_built_in_is_refused(decision_tree: Family) -> None:
    with pytest.raises(ValueError, match="registered already"):
        families.register(decision_tree)
    with pytest.raises(ValueError, match="built-in"):
        families.unregister("lightgbm")


def test_unregistered_family_is_gone() -> None:
    from hyperprior.training.spaces import get_space

    assert NAME not in FAMILIES
    with pytest.raises(KeyError, match="known families"):
        get_space(NAME)
