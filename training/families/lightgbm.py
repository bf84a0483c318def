"""LightGBM: ``LGBMClassifier`` / ``LGBMRegressor`` on ordinal-coded categoricals.

Categoricals reach LightGBM as pandas ``category`` columns, so it uses its native
categorical splits; numeric ``NaN`` is left to its missing-value handling. The family
adds ``verbose=-1``, ``n_jobs=1`` and ``random_state=seed`` to the config. Fidelity is
the fraction of training rows per fold.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hyperprior.training.families.base import Family
from hyperprior.training.preprocess import tree_preprocessor
from hyperprior.training.spaces import SPACES


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


FAMILY = Family(
    name="lightgbm",
    space=SPACES["lightgbm"],
    build=build,
    fidelity_unit="rows",
    description=SPACES["lightgbm"].description,
)
