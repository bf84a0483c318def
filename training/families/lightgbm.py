"""LightGBM: ``LGBMClassifier`` / ``LGBMRegressor`` on ordinal-coded categoricals.

Categoricals reach LightGBM as pandas ``category`` columns, so it uses its native
categorical splits; numeric ``NaN`` is left to its missing-value handling. The family
adds ``verbose=-1``, ``n_jobs=1`` and ``random_state=seed`` to the config. Fidelity is
the fraction of training rows per fold. Its cost grows with the number of trees.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hyperprior.training.families.base import Family, cost_ratio
from hyperprior.training.families.gbdt import gbdt_interactions
from hyperprior.training.features import safe_log
from hyperprior.training.preprocess import tree_preprocessor
from hyperprior.training.spaces import Categorical, Float, Int, Space

__all__ = ["FAMILY", "INTERACTIONS", "SPACE", "build", "estimator", "fixed_params", "relative_cost"]

SPACE = Space(
    family="lightgbm",
    description="LightGBM gradient-boosted trees (LGBMClassifier / LGBMRegressor).",
    notes=(
        "The family adds verbose=-1, n_jobs=1 and random_state=seed. Bagging is on "
        "when subsample_freq=1; subsample exists only then, because LightGBM ignores "
        "it with subsample_freq=0."
    ),
    params=(
        Int("n_estimators", 16, 2048, log=True, default=100, minimum=1, doc="Boosting rounds."),
        Float(
            "learning_rate",
            0.005,
            0.5,
            log=True,
            default=0.1,
            minimum=0,
            exclusive_minimum=True,
            doc="Shrinkage per round.",
        ),
        Int(
            "num_leaves",
            4,
            512,
            log=True,
            default=31,
            minimum=2,
            maximum=131072,
            doc="Maximum leaves per tree.",
        ),
        Int(
            "min_child_samples",
            2,
            200,
            log=True,
            default=20,
            minimum=0,
            doc="Minimum rows in a leaf.",
        ),
        Categorical(
            "subsample_freq", (0, 1), default=0, doc="1: bag rows every iteration; 0: no bagging."
        ),
        Float(
            "subsample",
            0.5,
            1.0,
            default=1.0,
            minimum=0,
            maximum=1.0,
            exclusive_minimum=True,
            condition=("subsample_freq", (1,)),
            doc="Fraction of rows per iteration (only with subsample_freq=1).",
        ),
        Float(
            "colsample_bytree",
            0.3,
            1.0,
            default=1.0,
            minimum=0,
            maximum=1.0,
            exclusive_minimum=True,
            doc="Fraction of features per tree.",
        ),
        Float(
            "reg_alpha",
            1e-8,
            10.0,
            log=True,
            default=0.0,
            minimum=0,
            doc="L1 regularisation of leaf values (default 0 lies below the box).",
        ),
        Float(
            "reg_lambda",
            1e-8,
            10.0,
            log=True,
            default=0.0,
            minimum=0,
            doc="L2 regularisation of leaf values (default 0 lies below the box).",
        ),
    ),
)


INTERACTIONS = gbdt_interactions("num_leaves", safe_log, "min_child_samples")
"""Surrogate features (:mod:`hyperprior.training.families.gbdt`)."""


def fixed_params(seed: int) -> dict[str, Any]:
    """Keyword arguments the family adds to every config."""
    return {"verbose": -1, "n_jobs": 1, "random_state": seed}


def build(config: Mapping[str, Any], task: str, n_classes: int, seed: int, fidelity: float) -> Any:
    """An unfitted pipeline: tree preprocessing, then the LightGBM estimator.

    Args:
        config: A validated config (the estimator's tuned keyword arguments).
        task: ``binary``, ``multiclass`` or ``regression``.
        n_classes: Number of classes (LightGBM infers it; kept for the common signature).
        seed: Random state.
        fidelity: Unused here: the CV loop subsamples rows.

    Returns:
        A scikit-learn ``Pipeline``.
    """
    import lightgbm as lgb
    from sklearn.pipeline import Pipeline

    cls = lgb.LGBMRegressor if task == "regression" else lgb.LGBMClassifier
    model = cls(**dict(config), **fixed_params(seed))
    return Pipeline([("pre", tree_preprocessor(pandas_categorical=True)), ("model", model)])


def estimator(config: Mapping[str, Any], task: str, random_state: int | None) -> Any:
    """The estimator a user fits: as :func:`build`, but on every core (``n_jobs`` default)."""
    import lightgbm as lgb
    from sklearn.pipeline import Pipeline

    cls = lgb.LGBMRegressor if task == "regression" else lgb.LGBMClassifier
    model = cls(**dict(config), verbose=-1, random_state=random_state)
    return Pipeline([("pre", tree_preprocessor(pandas_categorical=True)), ("model", model)])


def relative_cost(config: Mapping[str, Any], default: Mapping[str, Any]) -> float:
    """Affine in the number of trees: every fit has a fixed part (binning, predicting)."""
    return 0.3 + 0.7 * cost_ratio(config, default, "n_estimators")


FAMILY = Family(
    name="lightgbm",
    space=SPACE,
    build=build,
    fidelity_unit="rows",
    description=SPACE.description,
    estimator=estimator,
    cost=relative_cost,
    interactions=INTERACTIONS,
)
