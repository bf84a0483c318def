"""scikit-learn random forests on ordinal-coded categoricals.

Numeric ``NaN`` is kept: scikit-learn's forests split on missing values natively
(1.4+). The family adds ``n_jobs=1`` and ``random_state=seed``. Fidelity is the
fraction of training rows per fold.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hyperprior.training.families.base import Family
from hyperprior.training.preprocess import tree_preprocessor
from hyperprior.training.spaces import SPACES


def fixed_params(seed: int) -> dict[str, Any]:
    """Keyword arguments the family adds to every config."""
    return {"n_jobs": 1, "random_state": seed}


def build(config: Mapping[str, Any], task: str, n_classes: int, seed: int, fidelity: float) -> Any:
    """An unfitted pipeline: tree preprocessing, then the forest.

    Args:
        config: A validated config (the estimator's tuned keyword arguments).
        task: ``binary``, ``multiclass`` or ``regression``.
        n_classes: Number of classes (unused; common signature).
        seed: Random state.
        fidelity: Unused here: the CV loop subsamples rows.

    Returns:
        A scikit-learn ``Pipeline``.
    """
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.pipeline import Pipeline

    cls = RandomForestRegressor if task == "regression" else RandomForestClassifier
    model = cls(**dict(config), **fixed_params(seed))
    return Pipeline([("pre", tree_preprocessor()), ("model", model)])


FAMILY = Family(
    name="random_forest",
    space=SPACES["random_forest"],
    build=build,
    fidelity_unit="rows",
    description=SPACES["random_forest"].description,
)
