"""hyperprior's Python SDK and integrations.

::

    from hyperprior.client import Client

    client = Client("http://127.0.0.1:8000", api_key="hp_...")   # or Client.local()
    picks = client.suggest(X, y, "lightgbm", n=5)

Integrations import their library only when used:

* `hyperprior.client.optuna_integration`: ``enqueue_suggestions``, ``RecordingCallback`` (Optuna).
* `hyperprior.client.keras_callback`: ``HyperpriorCallback`` (Keras).
* `hyperprior.client.importers`: runs from Optuna storages, CSV tables and MLflow ``mlruns``.
* ``make_estimator(family, config, task)``: a ready scikit-learn estimator for a
  config of any built-in family (`hyperprior.training.estimators`; TensorFlow only at a
  ``keras_mlp`` fit)::

      model = make_estimator("linear", picks.best, "binary").fit(X, y)

* ``LGBMClassifier``, ``LGBMRegressor``, ``RandomForestClassifier``,
  ``RandomForestRegressor``: drop-in estimators that ask for a config at ``fit``
  (``client=``, else the local database) and fall back to the library default.

The names are also reachable from here (``from hyperprior import RecordingCallback``)
without importing Optuna or TensorFlow until then.
"""

from __future__ import annotations

import importlib
from typing import Any

from hyperprior.client.client import Client, infer_task
from hyperprior.client.errors import (
    AuthError,
    ConflictError,
    HyperpriorError,
    HyperpriorWarning,
    NotFoundError,
    RateLimitedError,
    ServiceUnavailable,
    ValidationError,
)
from hyperprior.client.types import (
    Description,
    RecordResult,
    Refinement,
    Suggestion,
    Suggestions,
)

__all__ = [
    "AuthError",
    "Client",
    "ConflictError",
    "Description",
    "HyperpriorCallback",
    "HyperpriorError",
    "HyperpriorWarning",
    "KerasMLPEstimator",
    "LGBMClassifier",
    "LGBMRegressor",
    "NotFoundError",
    "RandomForestClassifier",
    "RandomForestRegressor",
    "RateLimitedError",
    "RecordResult",
    "RecordingCallback",
    "Refinement",
    "ServiceUnavailable",
    "Suggestion",
    "Suggestions",
    "ValidationError",
    "enqueue_suggestions",
    "infer_task",
    "make_estimator",
]

_LAZY = {
    "enqueue_suggestions": "hyperprior.client.optuna_integration",
    "RecordingCallback": "hyperprior.client.optuna_integration",
    "HyperpriorCallback": "hyperprior.client.keras_callback",
    "make_estimator": "hyperprior.training.estimators",
    "KerasMLPEstimator": "hyperprior.training.estimators",
    "LGBMClassifier": "hyperprior.training.estimators",
    "LGBMRegressor": "hyperprior.training.estimators",
    "RandomForestClassifier": "hyperprior.training.estimators",
    "RandomForestRegressor": "hyperprior.training.estimators",
}


def __getattr__(name: str) -> Any:
    # Optuna, TensorFlow and scikit-learn are slow to import: only on first use.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'client' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
