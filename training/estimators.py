"""Configs that build models: :func:`make_estimator` for every registered family.

A suggestion's config is the tuned keyword arguments; what the family adds when it
measures a config (preprocessing, the linear solver, the Keras network itself) is not
in it. ``make_estimator`` adds exactly that, so the estimator you fit is the one whose
quality was predicted and verified::

    from hyperprior.client import make_estimator

    model = make_estimator("linear", suggestions.best, "binary").fit(X, y)
    model.predict(X_new)

It returns an unfitted scikit-learn ``Pipeline``: the family's preprocessing
(``hyperprior.training.preprocess``: raw DataFrames with text, categorical and missing values
are fine) then the model. Labels may be any values (strings too); predictions come
back as the same labels.

- ``lightgbm``: ``LGBMClassifier`` / ``LGBMRegressor(**config, verbose=-1)``.
- ``xgboost``: ``XGBClassifier`` (wrapped so that labels may be any values) /
  ``XGBRegressor(**config)``, ``tree_method="hist"``.
- ``random_forest``: ``RandomForestClassifier`` / ``RandomForestRegressor(**config)``.
- ``linear``: ``LogisticRegression(**config)`` with ``solver="lbfgs"`` for a pure L2
  penalty and ``"saga"`` otherwise, ``max_iter=1000``; regression
  ``ElasticNet(**config)`` on a standardised target; features imputed, scaled and
  one-hot encoded. (``LogisticRegression(**config)`` alone fails for ``l1_ratio > 0``.)
- ``keras_mlp``: :class:`KerasMLPEstimator`, a scikit-learn estimator around the
  network the family builds (``fit``, ``predict``, ``predict_proba``). TensorFlow is
  imported at ``fit``, not before.

Each family builds its own (``Family.estimator``, in its module); this module adds the
cleaning step in front.

Unlike a trial, the estimator is not limited to one thread: ``n_jobs`` is left at the
library default (LightGBM and the forests use every core).

Drop-in estimators in the manner of ``flaml.default``: :class:`LGBMClassifier`,
:class:`LGBMRegressor`, :class:`RandomForestClassifier`, :class:`RandomForestRegressor`
ask the history for a config at ``fit`` (``client=``, else the local database) and fall
back to the library default, with a warning, when there is none to ask.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.metaestimators import available_if

from hyperprior.training.families import get_family
from hyperprior.training.families.keras_mlp import KerasMLPEstimator
from hyperprior.training.spaces import check_task

__all__ = [
    "KerasMLPEstimator",
    "LGBMClassifier",
    "LGBMRegressor",
    "RandomForestClassifier",
    "RandomForestRegressor",
    "make_estimator",
]


def _prepared(X: Any) -> pd.DataFrame:
    """``prepare_frame`` for any 2-D input (arrays get numbered columns)."""
    from hyperprior.training.preprocess import prepare_frame

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
        family: a built-in family (``FAMILIES``) or one registered in code.
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
    built = fam.make_estimator(cfg, task, random_state)
    return Pipeline([("prepare", _prepare_step()), *built.steps])


# ------------------------------------------------------------------ drop-in estimators


class _SuggestedEstimator(BaseEstimator):
    """Fits the family's model with hyperparameters suggested for the data at ``fit``.

    In the manner of ``flaml.default``: ``fit(X, y)`` describes the data (meta-features,
    computed here), asks the history for the top config of the family, and fits
    :func:`make_estimator` with it. Without a history to ask (no ``client`` and no
    ``./hyperprior.db`` or ``$HYPERPRIOR_DATABASE_URL``, or the service unreachable) it
    falls back to the library default and warns (``HyperpriorWarning``).

    Args:
        client: A ``client.Client`` (HTTP or in-process), or ``None`` for
            ``Client.local()`` when a local database exists.
        fixed: Hyperparameters to keep as given (passed to the suggestion as ``fixed``).
        random_state: Seed of the suggestion and of the model.

    Attributes (after ``fit``):
        config_: The config the model was fitted with.
        config_source_: ``surrogate``, ``portfolio``, ``default`` (the suggestion's
            source) or ``fallback`` (no history could be asked).
        estimator_: The fitted :func:`make_estimator` pipeline.
    """

    _family = ""
    _classifier = True

    def __init__(
        self,
        client: Any = None,
        fixed: Mapping[str, Any] | None = None,
        random_state: int | None = 0,
    ) -> None:
        self.client = client
        self.fixed = fixed
        self.random_state = random_state

    @property
    def _estimator_type(self) -> str:  # scikit-learn < 1.6 asks this
        return "classifier" if self._classifier else "regressor"

    def __sklearn_tags__(self) -> Any:
        from sklearn.utils import ClassifierTags, RegressorTags

        tags = super().__sklearn_tags__()
        tags.estimator_type = self._estimator_type
        if self._classifier:
            tags.classifier_tags = ClassifierTags()
        else:
            tags.regressor_tags = RegressorTags()
        tags.input_tags.allow_nan = True
        return tags

    def _task(self, y: Any) -> str:
        if not self._classifier:
            return "regression"
        n = len(pd.unique(pd.Series(np.asarray(y).ravel()).dropna()))
        return "binary" if n == 2 else "multiclass"

    def _suggest(self, X: Any, y: Any, task: str) -> tuple[dict[str, Any], str]:
        import warnings

        from hyperprior.client.errors import HyperpriorError, HyperpriorWarning

        fixed = dict(self.fixed or {})
        client = self.client
        try:
            if client is None:
                from hyperprior.client.sdk import Client

                client = Client.local()
            frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(np.asarray(X))
            seed = None if self.random_state is None else int(self.random_state)
            picks = client.suggest(
                frame,
                pd.Series(np.asarray(y).ravel()),
                self._family,
                n=1,
                task=task,
                seed=seed,
                fixed=fixed or None,
            )
            best = picks[0]
            return dict(best.config), str(best.source)
        except HyperpriorError as error:
            warnings.warn(
                f"{type(self).__name__}: no suggestion ({error}); fitting the library default",
                HyperpriorWarning,
                stacklevel=3,
            )
        finally:
            if self.client is None and client is not None:
                client.close()
        return {**get_family(self._family).space.default(task), **fixed}, "fallback"

    def _validated(self, X: Any, y: Any = None, *, reset: bool) -> Any:
        """scikit-learn's input checks; DataFrames keep their columns and dtypes.

        A DataFrame goes to the family's preprocessing as it is (text and categorical
        columns included); anything else must be numeric, since an array has no
        column types to tell a category from a number.
        """
        from sklearn.utils.validation import validate_data

        frame = isinstance(X, pd.DataFrame)
        kwargs: dict[str, Any] = {
            "reset": reset,
            "accept_sparse": False,
            "ensure_all_finite": False,
            "dtype": None if frame else "numeric",
        }
        if y is None:
            checked = validate_data(self, X, **kwargs)
            return X if frame else checked
        checked, _ = validate_data(self, X, y, **kwargs)
        return X if frame else checked

    def fit(self, X: Any, y: Any) -> Any:
        """Suggest a config for ``(X, y)``, then fit the family's model with it."""
        X = self._validated(X, y, reset=True)
        y = np.asarray(y)
        if self._classifier:
            from sklearn.utils.multiclass import check_classification_targets

            check_classification_targets(y)
        task = self._task(y)
        self.config_, self.config_source_ = self._suggest(X, y, task)
        model = make_estimator(self._family, self.config_, task, random_state=self.random_state)
        self.estimator_ = model.fit(X, y)
        if self._classifier:
            self.classes_ = self.estimator_.classes_
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predictions of the fitted model."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "estimator_")
        return np.asarray(self.estimator_.predict(self._validated(X, reset=False)))

    @available_if(lambda self: self._classifier)
    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (classifiers)."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "estimator_")
        return np.asarray(self.estimator_.predict_proba(self._validated(X, reset=False)))

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Accuracy (classifiers) or R² (regressors)."""
        mixin = ClassifierMixin if self._classifier else RegressorMixin
        return float(mixin.score(self, X, y, sample_weight=sample_weight))


class LGBMClassifier(_SuggestedEstimator):
    """``lightgbm.LGBMClassifier`` with hyperparameters suggested at ``fit``."""

    _family = "lightgbm"


class LGBMRegressor(_SuggestedEstimator):
    """``lightgbm.LGBMRegressor`` with hyperparameters suggested at ``fit``."""

    _family = "lightgbm"
    _classifier = False


class RandomForestClassifier(_SuggestedEstimator):
    """scikit-learn's ``RandomForestClassifier`` with hyperparameters suggested at ``fit``."""

    _family = "random_forest"


class RandomForestRegressor(_SuggestedEstimator):
    """scikit-learn's ``RandomForestRegressor`` with hyperparameters suggested at ``fit``."""

    _family = "random_forest"
    _classifier = False
