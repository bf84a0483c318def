"""XGBoost: ``XGBClassifier`` / ``XGBRegressor`` on ordinal-coded categoricals.

The same preprocessing as LightGBM's: categoricals reach XGBoost as pandas ``category``
columns (codes ``0..63`` of :func:`~hyperprior.training.preprocess.tree_preprocessor`,
as integer categories, since XGBoost refuses float ones) with
``enable_categorical=True``, so it uses its native categorical splits; numeric ``NaN``
is left to its missing-value handling. The family adds ``tree_method="hist"`` (the 2.x
default, named so older installs do the same), ``enable_categorical=True``,
``verbosity=0``, ``n_jobs=1`` and ``random_state=seed``. The objective (binary:logistic,
multi:softprob, reg:squarederror) is the estimator's own choice. Fidelity is the
fraction of training rows per fold. Its cost grows with the trees and their depth.
xgboost is imported only when a model is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin

from hyperprior.training.families.base import Family, cost_ratio
from hyperprior.training.families.gbdt import gbdt_interactions
from hyperprior.training.preprocess import MAX_CATEGORIES_TREE, tree_preprocessor
from hyperprior.training.spaces import Float, Int, Space

__all__ = [
    "FAMILY",
    "INTERACTIONS",
    "SPACE",
    "LabelEncodedClassifier",
    "build",
    "estimator",
    "fixed_params",
    "relative_cost",
]

# Boxes from FLAML 2.x's XGBoostLimitDepthEstimator (flaml/automl/model.py), beside
# auto-sklearn's XGradientBoosting: max_depth 1..15 (auto-sklearn 1..10), min_child_weight
# 0.001..128 log (1..20), subsample 0.1..1 (0.01..1), colsample_bytree 0.01..1 and
# reg_alpha / reg_lambda 1/1024..1024 log (auto-sklearn fixes them), learning_rate up to 1
# (both). n_estimators and the lower end of learning_rate are the lightgbm family's (FLAML
# 4..rows and 1/1024), so the two GBDTs are sampled alike. Neither tunes gamma: not here.
SPACE = Space(
    family="xgboost",
    description="XGBoost gradient-boosted trees (XGBClassifier / XGBRegressor).",
    notes=(
        "The family adds tree_method='hist', enable_categorical=True, verbosity=0, "
        "n_jobs=1 and random_state=seed. Trees grow depth-wise (XGBoost's default "
        "grow_policy), limited by max_depth; leaf-wise growth is the lightgbm family's. "
        "Defaults are XGBoost 2.x's, the same for every task. Configs use the "
        "estimator's argument names (learning_rate, not its alias eta)."
    ),
    params=(
        Int("n_estimators", 16, 2048, log=True, default=100, minimum=1, doc="Boosting rounds."),
        Float(
            "learning_rate",
            0.005,
            1.0,
            log=True,
            default=0.3,
            minimum=0,
            exclusive_minimum=True,
            doc="Shrinkage per round (eta).",
        ),
        Int(
            "max_depth",
            1,
            15,
            default=6,
            # XGBoost reads 0 as no limit, which the encoding would place at the
            # shallow end of the box: refused rather than misread.
            minimum=1,
            doc="Maximum depth of a tree (XGBoost's 0, no limit, is not accepted here).",
        ),
        Float(
            "min_child_weight",
            0.001,
            128.0,
            log=True,
            default=1.0,
            minimum=0,
            doc="Minimum hessian sum in a child (rows, for squared error).",
        ),
        Float(
            "subsample",
            0.1,
            1.0,
            default=1.0,
            minimum=0,
            maximum=1.0,
            exclusive_minimum=True,
            doc="Fraction of rows per boosting round.",
        ),
        Float(
            "colsample_bytree",
            0.01,
            1.0,
            default=1.0,
            minimum=0,
            maximum=1.0,
            exclusive_minimum=True,
            doc="Fraction of features per tree.",
        ),
        Float(
            "reg_alpha",
            1 / 1024,
            1024.0,
            log=True,
            default=0.0,
            minimum=0,
            doc="L1 regularisation of leaf weights (default 0 lies below the box).",
        ),
        Float(
            "reg_lambda",
            1 / 1024,
            1024.0,
            log=True,
            default=1.0,
            minimum=0,
            doc="L2 regularisation of leaf weights.",
        ),
    ),
)


def _log_leaves(depth: np.ndarray) -> np.ndarray:
    # A depth-d tree has at most 2**d leaves.
    return np.asarray(depth, dtype=np.float64) * np.log(2.0)


INTERACTIONS = gbdt_interactions("max_depth", _log_leaves, "min_child_weight")
"""Surrogate features, as the lightgbm family's (:mod:`hyperprior.training.families.gbdt`)
with a depth-``d`` tree's ``2**d`` leaves in place of ``num_leaves``."""


def fixed_params(seed: int) -> dict[str, Any]:
    """Keyword arguments the family adds to every config."""
    return {
        "tree_method": "hist",
        "enable_categorical": True,
        "verbosity": 0,
        "n_jobs": 1,
        "random_state": seed,
    }


_CATEGORIES = pd.Index(range(MAX_CATEGORIES_TREE))


def _integer_categories(X: pd.DataFrame) -> pd.DataFrame:
    """Category columns with integer categories ``0..63``, the same in every fold.

    XGBoost refuses float categories (what the LightGBM step hands over), and a fixed
    set keeps the codes of a fold without some category those of the training data.
    """
    X = X.copy()
    for c in X.columns:
        if isinstance(X[c].dtype, pd.CategoricalDtype):
            values = X[c].astype(np.float64).to_numpy()
            codes = np.where(np.isnan(values), -1, values).astype(np.int64)
            X[c] = pd.Categorical.from_codes(codes, categories=_CATEGORIES)
    return X


def _preprocessor() -> Any:
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    return Pipeline(
        [
            ("trees", tree_preprocessor(pandas_categorical=True)),
            ("integer_categories", FunctionTransformer(_integer_categories)),
        ]
    )


class LabelEncodedClassifier(ClassifierMixin, BaseEstimator):
    """A classifier fitted on label codes ``0..k-1``, answering in the original labels.

    XGBClassifier accepts only those codes; the estimator a user fits takes any labels
    (strings too), as every other family's does.

    Args:
        classifier: The unfitted classifier (cloned at ``fit``).
    """

    def __init__(self, classifier: Any) -> None:
        self.classifier = classifier

    def _checked(self, X: Any, *, reset: bool) -> Any:
        # A frame goes to the classifier as it is (its category columns must stay so);
        # anything else gets scikit-learn's checks.
        if isinstance(X, pd.DataFrame):
            if reset:
                self.n_features_in_ = X.shape[1]
                self.feature_names_in_ = np.asarray(X.columns, dtype=object)
            elif X.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                    f"{self.n_features_in_} features as input"
                )
            return X
        from sklearn.utils.validation import validate_data

        return validate_data(self, X, reset=reset, ensure_all_finite=False)

    def fit(self, X: Any, y: Any, **fit_params: Any) -> LabelEncodedClassifier:
        """Encode the labels, then fit a clone of ``classifier`` on the codes."""
        from sklearn.base import clone
        from sklearn.preprocessing import LabelEncoder
        from sklearn.utils.multiclass import check_classification_targets
        from sklearn.utils.validation import check_consistent_length, column_or_1d

        X = self._checked(X, reset=True)
        y = column_or_1d(y, warn=True)
        check_consistent_length(X, y)
        check_classification_targets(y)
        self.encoder_ = LabelEncoder().fit(y)
        self.classes_ = self.encoder_.classes_
        self.classifier_ = clone(self.classifier).fit(X, self.encoder_.transform(y), **fit_params)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "classifier_")
        return np.asarray(self.classes_[np.argmax(self.predict_proba(X), axis=1)])

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_``."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "classifier_")
        return np.asarray(self.classifier_.predict_proba(self._checked(X, reset=False)))

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags


def _model(config: Mapping[str, Any], task: str, extra: Mapping[str, Any]) -> Any:
    import xgboost as xgb

    cls = xgb.XGBRegressor if task == "regression" else xgb.XGBClassifier
    return cls(**dict(config), **extra)


def build(config: Mapping[str, Any], task: str, n_classes: int, seed: int, fidelity: float) -> Any:
    """An unfitted pipeline: tree preprocessing, then the XGBoost estimator.

    Args:
        config: A validated config (the estimator's tuned keyword arguments).
        task: ``binary``, ``multiclass`` or ``regression``.
        n_classes: Number of classes (XGBoost infers it; kept for the common signature).
        seed: Random state.
        fidelity: Unused here: the CV loop subsamples rows.

    Returns:
        A scikit-learn ``Pipeline``; trials fit it on label codes ``0..k-1``.
    """
    from sklearn.pipeline import Pipeline

    model = _model(config, task, fixed_params(seed))
    return Pipeline([("pre", _preprocessor()), ("model", model)])


def estimator(config: Mapping[str, Any], task: str, random_state: int | None) -> Any:
    """The estimator a user fits: as :func:`build`, on every core (``n_jobs`` default),
    and for classification any labels (:class:`LabelEncodedClassifier`)."""
    from sklearn.pipeline import Pipeline

    extra = {**fixed_params(0), "random_state": random_state}
    del extra["n_jobs"]
    model = _model(config, task, extra)
    if task != "regression":
        model = LabelEncodedClassifier(model)
    return Pipeline([("pre", _preprocessor()), ("model", model)])


def relative_cost(config: Mapping[str, Any], default: Mapping[str, Any]) -> float:
    """Affine in the trees and in the depth, as measured (5,000 x 20, hist, one thread:
    depth 1 took 0.28 and depth 15 2.5 times depth 6's time)."""
    trees = 0.3 + 0.7 * cost_ratio(config, default, "n_estimators")
    depth = 0.15 + 0.85 * cost_ratio(config, default, "max_depth")
    return trees * depth


FAMILY = Family(
    name="xgboost",
    space=SPACE,
    build=build,
    fidelity_unit="rows",
    description=SPACE.description,
    estimator=estimator,
    cost=relative_cost,
    interactions=INTERACTIONS,
)
