"""Model families: build an estimator from a config and score it by cross-validation.

Public API::

    FAMILIES: Mapping[str, Family]      # lightgbm, random_forest, linear, keras_mlp
    get_family(name) -> Family          # UnknownFamilyError (KeyError and ValueError)
    primary_metric(task) -> str         # roc_auc | accuracy | r2, always maximised
    evaluate(family, config, X, y, task, *, fidelity=1.0, folds=5, seed=0) -> TrialResult

TensorFlow is imported only when a ``keras_mlp`` trial runs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from hyperprior.training.families import keras_mlp, lightgbm, linear, random_forest
from hyperprior.training.families.base import (
    PRIMARY_METRICS,
    TASK_METRICS,
    Family,
    TrialResult,
    evaluate_family,
    failed_result,
    primary_metric,
)
from hyperprior.training.spaces import UnknownFamilyError

__all__ = [
    "FAMILIES",
    "PRIMARY_METRICS",
    "TASK_METRICS",
    "Family",
    "TrialResult",
    "UnknownFamilyError",
    "evaluate",
    "get_family",
    "primary_metric",
]

FAMILIES: Mapping[str, Family] = MappingProxyType(
    {f.name: f for f in (lightgbm.FAMILY, random_forest.FAMILY, linear.FAMILY, keras_mlp.FAMILY)}
)
"""The built-in families, by name."""


def get_family(name: str) -> Family:
    """The built-in family called ``name``.

    Raises:
        UnknownFamilyError: (a ``KeyError`` and ``ValueError``) listing the known ones.
    """
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        raise UnknownFamilyError(
            f"unknown family {name!r}; known families: {', '.join(FAMILIES)}"
        ) from None


def evaluate(
    family: str,
    config: Mapping[str, Any],
    X: pd.DataFrame,
    y: pd.Series | np.ndarray,
    task: str,
    *,
    fidelity: float = 1.0,
    folds: int = 5,
    seed: int = 0,
) -> TrialResult:
    """Cross-validate one config on a dataset. Never raises.

    Args:
        family: Family name (see :data:`FAMILIES`).
        config: The config; missing keys take the library defaults, unknown keys or
            invalid values make the trial ``failed``.
        X: Features (any mix of numeric, categorical, bool; ``NaN`` allowed).
        y: Target aligned with ``X``; rows with a missing target are dropped.
        task: ``binary``, ``multiclass`` or ``regression``.
        fidelity: In ``(0, 1]``: fraction of training rows per fold (lightgbm,
            random_forest, linear) or of epochs (keras_mlp).
        folds: CV folds (reduced when the smallest class is smaller).
        seed: Seeds the folds, the subsample and the model.

    Returns:
        A :class:`TrialResult`: ``ok`` with the mean fold score, or ``failed`` with
        the error (bad arguments, bad config, a crash in fit or score, a non-finite
        score).
    """
    started = time.perf_counter()
    try:
        fam = get_family(family)
    except UnknownFamilyError as exc:
        return failed_result(task, exc, started=started, fidelity=fidelity)
    return evaluate_family(fam, config, X, y, task, fidelity=fidelity, folds=folds, seed=seed)
