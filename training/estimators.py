"""Configs that build models: :func:`make_estimator` for every built-in family.

A suggestion's config is the tuned keyword arguments; what the family adds when it
measures a config (preprocessing, the linear solver, the Keras network itself) is not
in it. ``make_estimator`` adds exactly that, so the estimator you fit is the one whose
quality was predicted and verified::

    from client import make_estimator

    model = make_estimator("linear", suggestions.best, "binary").fit(X, y)
    model.predict(X_new)

It returns an unfitted scikit-learn ``Pipeline``: the family's preprocessing
(``training.preprocess``: raw DataFrames with text, categorical and missing values
are fine) then the model. Labels may be any values (strings too); predictions come
back as the same labels.

- ``lightgbm``: ``LGBMClassifier`` / ``LGBMRegressor(**config, verbose=-1)``.
- ``random_forest``: ``RandomForestClassifier`` / ``RandomForestRegressor(**config)``.
- ``linear``: ``LogisticRegression(**config)`` with ``solver="lbfgs"`` for a pure L2
  penalty and ``"saga"`` otherwise, ``max_iter=1000``; regression
  ``ElasticNet(**config)`` on a standardised target; features imputed, scaled and
  one-hot encoded. (``LogisticRegression(**config)`` alone fails for ``l1_ratio > 0``.)
- ``keras_mlp``: :class:`KerasMLPEstimator`, a scikit-learn estimator around the
  network the family builds (``fit``, ``predict``, ``predict_proba``). TensorFlow is
  imported at ``fit``, not before.

Unlike a trial, the estimator is not limited to one thread: ``n_jobs`` is left at the
library default (LightGBM and the forests use every core).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

from training.families import get_family
from training.spaces import check_task, is_classification

__all__ = ["KerasMLPEstimator", "make_estimator"]


def _prepared(X: Any) -> pd.DataFrame:
    """``prepare_frame`` for any 2-D input (arrays get numbered columns)."""
    from training.preprocess import prepare_frame

    frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(np.asarray(X))
    return prepare_frame(frame)


def _prepare_step() -> Any:
    from sklearn.preprocessing import FunctionTransformer

    # Stateless (the same cleaning as every trial), so it cannot leak between folds.
    return FunctionTransformer(_prepared, validate=False, check_inverse=False)


def make_estimator(
    family: str, config: Mapping[str, Any], task: str, *, random_state: int | None = 0
) -> Any:
    """A ready, unfitted scikit-learn estimator for a config of a built-in family.

    Args:
        family: ``lightgbm``, ``random_forest``, ``linear`` or ``keras_mlp``.
        config: A suggested (or your own) config; missing keys take the library
            default.
        task: ``binary``, ``multiclass`` or ``regression``.
        random_state: Seed of the model (``None``: the library's own randomness).

    Returns:
        A ``Pipeline`` of the family's preprocessing and the model.

    Raises:
        ValueError: An unknown family or task, or a config that does not fit the
            family's space (the message names every bad key and value).
    """
    from sklearn.pipeline import Pipeline

    fam = get_family(family)
    check_task(task)
    cfg = fam.space.validate(config, task)
    seed = random_state
    model: Any
    if family == "lightgbm":
        import lightgbm as lgb

        from training.preprocess import tree_preprocessor

        cls = lgb.LGBMRegressor if task == "regression" else lgb.LGBMClassifier
        model = cls(**cfg, verbose=-1, random_state=seed)
        return Pipeline(
            [
                ("prepare", _prepare_step()),
                ("pre", tree_preprocessor(pandas_categorical=True)),
                ("model", model),
            ]
        )
    if family == "random_forest":
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

        from training.preprocess import tree_preprocessor

        forest = RandomForestRegressor if task == "regression" else RandomForestClassifier
        return Pipeline(
            [
                ("prepare", _prepare_step()),
                ("pre", tree_preprocessor()),
                ("model", forest(**cfg, random_state=seed)),
            ]
        )
    if family == "linear":
        # The family's own build: solver by penalty, scaling, standardised target.
        built = fam.build(cfg, task, 0, 0 if seed is None else seed, 1.0)
        return Pipeline([("prepare", _prepare_step()), *built.steps])
    if family == "keras_mlp":
        from training.preprocess import dense_preprocessor

        return Pipeline(
            [
                ("prepare", _prepare_step()),
                ("pre", dense_preprocessor()),
                ("model", KerasMLPEstimator(config=cfg, task=task, random_state=seed)),
            ]
        )
    raise ValueError(f"make_estimator does not know how to build family {family!r}")


class KerasMLPEstimator(BaseEstimator):
    """The ``keras_mlp`` family's network as a scikit-learn estimator.

    Takes numeric features (put :func:`make_estimator`'s preprocessing in front for
    raw tables) and any labels; ``epochs``, ``batch_size`` and the rest come from the
    config, exactly as the family trains it in a trial.

    Args:
        config: A ``keras_mlp`` config (missing keys: the family's defaults).
        task: ``binary``, ``multiclass`` or ``regression``.
        random_state: Seed of ``keras.utils.set_random_seed`` (``None``: 0).
    """

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        task: str = "binary",
        random_state: int | None = 0,
    ) -> None:
        self.config = config
        self.task = task
        self.random_state = random_state

    @property
    def _estimator_type(self) -> str:  # scikit-learn < 1.6 asks this
        return "regressor" if self.task == "regression" else "classifier"

    def __sklearn_tags__(self) -> Any:
        # A classifier or a regressor depending on the task (scikit-learn >= 1.6).
        from sklearn.utils import ClassifierTags, RegressorTags

        tags = super().__sklearn_tags__()
        if self.task == "regression":
            tags.estimator_type = "regressor"
            tags.regressor_tags = RegressorTags()
        else:
            tags.estimator_type = "classifier"
            tags.classifier_tags = ClassifierTags()
        return tags

    def fit(self, X: Any, y: Any) -> KerasMLPEstimator:
        """Train the network on ``X`` (numeric) and ``y`` (labels or values)."""
        from training.families import keras_mlp
        from training.spaces import SPACES

        check_task(self.task)
        cfg = SPACES["keras_mlp"].validate(dict(self.config or {}), self.task)
        y_arr = np.asarray(y)
        if is_classification(self.task):
            self.classes_, codes = np.unique(y_arr, return_inverse=True)
            n_classes = len(self.classes_)
            if n_classes < 2:
                raise ValueError(f"classification needs at least 2 classes, y has {n_classes}")
            if self.task == "binary" and n_classes != 2:
                raise ValueError(f"task 'binary' needs exactly 2 classes, y has {n_classes}")
            target: np.ndarray = codes
        else:
            n_classes = 0
            target = y_arr.astype(np.float64)
        seed = 0 if self.random_state is None else int(self.random_state)
        self.network_ = keras_mlp.KerasMLP(cfg, self.task, n_classes, seed, int(cfg["epochs"]))
        self.network_.fit(np.asarray(X, dtype=np.float32), target)
        # The family shares one compiled network between the folds of a trial; a model
        # handed to a user must own its network, so it leaves that cache.
        keras_mlp._REUSE.clear()
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_``."""
        if not is_classification(self.task):
            raise AttributeError("predict_proba is for classification")
        return self.network_.predict_proba(X)

    def predict(self, X: Any) -> np.ndarray:
        """Labels (as given to ``fit``), or values."""
        if is_classification(self.task):
            return np.asarray(self.classes_[self.network_.predict(X)])
        return np.asarray(self.network_.predict(X))

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Accuracy (classification) or R² (regression), as scikit-learn's mixins do."""
        mixin = RegressorMixin if self.task == "regression" else ClassifierMixin
        return float(mixin.score(self, X, y, sample_weight=sample_weight))  # type: ignore[arg-type]
