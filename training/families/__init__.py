"""Model families, the unit of extension: the registry, and scoring a config by CV.

Each module here defines one family (its space and defaults, estimator, fidelity, cost
prior and surrogate interactions) as a :class:`Family`; :data:`FAMILIES` lists them and
is the only list of family names: CLI choices, API schemas, the scheduler's and the
bootstrap's defaults derive from it. Adding a family is a module, a line below and its
tests (README, "Adding a family").

Public API::

    FAMILIES: Mapping[str, Family]      # the built-in families (BUILT_IN), then registered ones
    get_family(name) -> Family          # UnknownFamilyError (KeyError and ValueError)
    find_family(name) -> Family | None  # also asks the lookups (declared families)
    register(family) / unregister(name) # families defined elsewhere (plugins, tests)
    add_lookup(fn) / remove_lookup(fn)  # where unknown names are looked up (the store)
    primary_metric(task) -> str         # roc_auc | accuracy | r2, always maximised
    evaluate(family, config, X, y, task, *, fidelity=1.0, folds=5, seed=0) -> TrialResult

TensorFlow is imported only when a ``keras_mlp`` trial runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from hyperprior.training.families import keras_mlp, lightgbm, linear, random_forest, xgboost
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
    "BUILT_IN",
    "PRIMARY_METRICS",
    "TASK_METRICS",
    "Family",
    "TrialResult",
    "UnknownFamilyError",
    "add_lookup",
    "evaluate",
    "find_family",
    "get_family",
    "primary_metric",
    "register",
    "remove_lookup",
    "unregister",
]

BUILT_IN: tuple[Family, ...] = (
    lightgbm.FAMILY,
    random_forest.FAMILY,
    linear.FAMILY,
    keras_mlp.FAMILY,
    xgboost.FAMILY,
)
"""The families that ship with hyperprior, in the order they are listed everywhere."""

_REGISTRY: dict[str, Family] = {f.name: f for f in BUILT_IN}

FAMILIES: Mapping[str, Family] = MappingProxyType(_REGISTRY)
"""The registered families, by name: the built-in ones, then any :func:`register`-ed."""

# Where a name the registry does not know is looked up (the service adds its store, so a
# family declared through another API process is known here on first use).
_LOOKUPS: list[Callable[[str], Family | None]] = []
_LOCK = threading.RLock()


def register(family: Family) -> Family:
    """Add a family defined outside this package (a plugin, a test).

    Import-time derivations (CLI choices, the API's ``Literal`` of family names, the
    scheduler's defaults) see it only when it is registered before they are imported.

    Raises:
        ValueError: a family of that name is registered already.
    """
    with _LOCK:
        if family.name in _REGISTRY:
            raise ValueError(f"family {family.name!r} is registered already")
        _REGISTRY[family.name] = family
        _clear_caches()
    return family


def unregister(name: str) -> None:
    """Remove a family added by :func:`register` (the built-in ones stay)."""
    if any(f.name == name for f in BUILT_IN):
        raise ValueError(f"{name!r} is a built-in family")
    with _LOCK:
        _REGISTRY.pop(name, None)
        _clear_caches()


def add_lookup(lookup: Callable[[str], Family | None]) -> None:
    """Ask ``lookup(name)`` for names the registry does not know; what it finds is
    registered (:func:`find_family`). The service adds its store's declared families."""
    with _LOCK:
        _LOOKUPS.append(lookup)


def remove_lookup(lookup: Callable[[str], Family | None]) -> None:
    """Stop asking ``lookup`` (no error if it was not added)."""
    with _LOCK:
        if lookup in _LOOKUPS:
            _LOOKUPS.remove(lookup)


def find_family(name: str) -> Family | None:
    """The family called ``name``: registered, or found (and then registered) by a lookup.

    A lookup that fails (the database is down) counts as not found.
    """
    try:
        family = _REGISTRY.get(name)
    except TypeError:  # an unhashable name
        return None
    if family is not None or not isinstance(name, str):
        return family
    for lookup in list(_LOOKUPS):
        try:
            found = lookup(name)
        except Exception:  # noqa: BLE001 - an unreachable store must not break the built-ins
            continue
        if found is not None and found.name == name:
            from hyperprior.training.families.declared import register_declared

            with _LOCK:
                return register_declared(found)
    return None


def _clear_caches() -> None:
    # Feature columns are cached by family name; a later family of that name gets its own.
    from hyperprior.training import features

    features.clear_caches()


def get_family(name: str) -> Family:
    """The registered (or declared) family called ``name``.

    Raises:
        UnknownFamilyError: (a ``KeyError`` and ``ValueError``) listing the known ones
            and saying how to declare a family of one's own.
    """
    family = find_family(name)
    if family is None:
        raise UnknownFamilyError(
            f"unknown family {name!r}; known families: {', '.join(FAMILIES)}; declare your "
            "own with POST /v1/families (or Client.declare_family)"
        )
    return family


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
