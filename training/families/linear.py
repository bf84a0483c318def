"""Regularised linear models on imputed, scaled, one-hot features.

Classification: ``LogisticRegression(C, l1_ratio, class_weight)`` with
``solver="lbfgs"`` for a pure L2 penalty (``l1_ratio == 0``, the library default, so
the default config behaves exactly like ``LogisticRegression()``) and ``"saga"`` (the
only solver for L1 and elastic-net) otherwise; ``max_iter=1000``,
``random_state=seed``.

Regression: ``ElasticNet(alpha, l1_ratio, max_iter=1000, random_state=seed)`` on a
standardised target (``TransformedTargetRegressor``), so ``alpha`` has the same meaning
on every dataset; predictions are scored on the original scale.

Fidelity is the fraction of training rows per fold. Every config is taken to cost about
as much as the default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hyperprior.training.families.base import Family
from hyperprior.training.features import Interaction, safe_log
from hyperprior.training.preprocess import dense_preprocessor
from hyperprior.training.spaces import Categorical, Float, Space
from hyperprior.vocabulary import CLASSIFICATION_TASKS

__all__ = ["FAMILY", "INTERACTIONS", "MAX_ITER", "SPACE", "build", "fixed_params"]

MAX_ITER = 1000

SPACE = Space(
    family="linear",
    description=(
        "Regularised linear models on scaled features: LogisticRegression for "
        "classification, ElasticNet (on a standardised target) for regression."
    ),
    notes=(
        "Classification: the family picks solver='lbfgs' for a pure L2 penalty "
        "(l1_ratio=0, the library default) and 'saga' otherwise, with max_iter=1000 and "
        "random_state=seed. Regression: ElasticNet(max_iter=1000, random_state=seed) "
        "inside TransformedTargetRegressor(StandardScaler()), so alpha means the same "
        "on every dataset. C applies to classification only, alpha to regression only."
    ),
    params=(
        Float(
            "C",
            1e-4,
            1e4,
            log=True,
            default=1.0,
            minimum=0,
            exclusive_minimum=True,
            tasks=CLASSIFICATION_TASKS,
            doc="Inverse regularisation strength (classification).",
        ),
        Float(
            "alpha",
            1e-5,
            10.0,
            log=True,
            default=1.0,
            minimum=0,
            tasks=("regression",),
            doc="Regularisation strength on the standardised target (regression).",
        ),
        Float(
            "l1_ratio",
            0.0,
            1.0,
            minimum=0.0,
            maximum=1.0,
            task_defaults={"binary": 0.0, "multiclass": 0.0, "regression": 0.5},
            doc="Elastic-net mixing: 0 is pure L2, 1 pure L1.",
        ),
        Categorical(
            "class_weight",
            (None, "balanced"),
            default=None,
            tasks=CLASSIFICATION_TASKS,
            doc="Reweight classes inversely to their frequency.",
        ),
    ),
)


INTERACTIONS: tuple[Interaction, ...] = (
    # The penalty's effect scales with the number of rows.
    Interaction("log_C_x_rows", ("C",), lambda v: safe_log(v["C"]) + safe_log(v["rows"])),
    Interaction(
        "log_alpha_per_row", ("alpha",), lambda v: safe_log(v["alpha"]) - safe_log(v["rows"])
    ),
)
"""Surrogate features: the regularisation strength relative to the number of rows."""


def fixed_params(config: Mapping[str, Any], task: str, seed: int) -> dict[str, Any]:
    """Keyword arguments the family adds to a config for ``task``."""
    if task == "regression":
        return {"max_iter": MAX_ITER, "random_state": seed}
    solver = "lbfgs" if float(config.get("l1_ratio", 0.0)) == 0.0 else "saga"
    return {"solver": solver, "max_iter": MAX_ITER, "random_state": seed}


def build(config: Mapping[str, Any], task: str, n_classes: int, seed: int, fidelity: float) -> Any:
    """An unfitted pipeline: dense preprocessing, then the linear model.

    Args:
        config: A validated config for ``task``.
        task: ``binary``, ``multiclass`` or ``regression``.
        n_classes: Number of classes (unused; common signature).
        seed: Random state.
        fidelity: Unused here: the CV loop subsamples rows.

    Returns:
        A scikit-learn ``Pipeline``.
    """
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.linear_model import ElasticNet, LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    model: Any
    if task == "regression":
        model = TransformedTargetRegressor(
            regressor=ElasticNet(**dict(config), **fixed_params(config, task, seed)),
            transformer=StandardScaler(),
        )
    else:
        model = LogisticRegression(**dict(config), **fixed_params(config, task, seed))
    return Pipeline([("pre", dense_preprocessor()), ("model", model)])


# No estimator of its own (the user's is ``build`` at full fidelity: the solver by
# penalty, scaling, the standardised target) and no cost model (about the default's).
FAMILY = Family(
    name="linear",
    space=SPACE,
    build=build,
    fidelity_unit="rows",
    description=SPACE.description,
    interactions=INTERACTIONS,
)
