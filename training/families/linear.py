"""Regularised linear models on imputed, scaled, one-hot features.

Classification: ``LogisticRegression(C, l1_ratio, class_weight)`` with
``solver="lbfgs"`` for a pure L2 penalty (``l1_ratio == 0``, the library default, so
the default config behaves exactly like ``LogisticRegression()``) and ``"saga"`` (the
only solver for L1 and elastic-net) otherwise; ``max_iter=1000``,
``random_state=seed``.

Regression: ``ElasticNet(alpha, l1_ratio, max_iter=1000, random_state=seed)`` on a
standardised target (``TransformedTargetRegressor``), so ``alpha`` has the same meaning
on every dataset; predictions are scored on the original scale.

Fidelity is the fraction of training rows per fold.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hyperprior.training.families.base import Family
from hyperprior.training.preprocess import dense_preprocessor
from hyperprior.training.spaces import SPACES

MAX_ITER = 1000


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


FAMILY = Family(
    name="linear",
    space=SPACES["linear"],
    build=build,
    fidelity_unit="rows",
    description=SPACES["linear"].description,
)
