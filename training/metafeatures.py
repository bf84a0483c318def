"""Dataset meta-features: what the surrogate knows about a dataset.

:func:`compute_metafeatures` turns a DataFrame and its target into a flat dict of
floats (counts are ints). A meta-feature that is undefined for the data (class
statistics for regression, skewness without numeric columns, a landmarker that could
not be scored) is left out rather than invented; :func:`validate_metafeatures` turns
such gaps into ``None`` and rejects impossible values.

Conventions: columns are numeric or categorical as in :mod:`hyperprior.training.preprocess`
(object, string, category and bool columns are categorical); logarithms are natural;
skewness and kurtosis are the biased Fisher-Pearson moments (``scipy.stats.skew`` and
``scipy.stats.kurtosis`` with ``bias=True``; kurtosis is *excess*, 0 for a normal),
over numeric columns that are not constant, on a seeded subsample of at most
:data:`MOMENT_ROWS` rows. Landmarkers are cheap models scored by 2-fold CV on a seeded
(stratified) subsample of at most :data:`LANDMARK_ROWS` rows, in the task's primary
metric (ROC AUC, accuracy or R²); their features are median-imputed numeric columns
plus categorical codes, standardised.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from hyperprior.training.preprocess import (
    categorical_columns,
    numeric_array,
    numeric_columns,
    prepare_frame,
)
from hyperprior.training.spaces import check_task, is_classification

__all__ = [
    "CORE",
    "COUNTS",
    "DESCRIPTIONS",
    "LANDMARKERS",
    "LANDMARK_ROWS",
    "MOMENT_ROWS",
    "REQUIRED",
    "compute_metafeatures",
    "validate_metafeatures",
]

MOMENT_ROWS = 10_000
LANDMARK_ROWS = 2_000

DESCRIPTIONS: Mapping[str, str] = {
    "n_rows": "Rows with a target.",
    "n_features": "Feature columns.",
    "n_numeric": "Numeric (non-bool) feature columns.",
    "n_categorical": "Categorical feature columns (object, string, category, bool).",
    "n_classes": "Distinct target classes (classification only).",
    "log_n_rows": "Natural log of n_rows.",
    "log_n_features": "Natural log of n_features.",
    "ratio_features_rows": "n_features / n_rows (dimensionality).",
    "frac_numeric": "n_numeric / n_features.",
    "frac_categorical": "n_categorical / n_features.",
    "missing_cells_frac": "Fraction of feature cells that are missing.",
    "missing_cols_frac": "Fraction of feature columns with at least one missing value.",
    "missing_rows_frac": "Fraction of rows with at least one missing feature.",
    "class_prob_min": "Share of the rarest class.",
    "class_prob_max": "Share of the most common class.",
    "class_entropy": "Entropy of the class distribution, in nats.",
    "class_entropy_norm": "Class entropy / log(n_classes): 1 for balanced classes.",
    "imbalance_ratio": "class_prob_min / class_prob_max: 1 balanced, near 0 imbalanced.",
    "cat_card_min": "Fewest distinct values of a categorical column.",
    "cat_card_mean": "Mean distinct values per categorical column.",
    "cat_card_max": "Most distinct values of a categorical column.",
    "onehot_width": "Sum of categorical cardinalities (width of a full one-hot encoding).",
    "skew_mean": "Mean skewness of the numeric columns.",
    "skew_min": "Smallest skewness of a numeric column.",
    "skew_max": "Largest skewness of a numeric column.",
    "kurt_mean": "Mean excess kurtosis of the numeric columns.",
    "kurt_min": "Smallest excess kurtosis of a numeric column.",
    "kurt_max": "Largest excess kurtosis of a numeric column.",
    "target_skew": "Skewness of the target (regression only).",
    "target_kurtosis": "Excess kurtosis of the target (regression only).",
    "lm_stump": "Landmarker: depth-1 decision tree, primary metric.",
    "lm_1nn": "Landmarker: 1-nearest neighbour, primary metric.",
    "lm_nb": "Landmarker: Gaussian naive Bayes, primary metric (classification only).",
    "lm_linear": "Landmarker: logistic regression / ridge, primary metric.",
    "lm_gbdt": "Landmarker: histogram gradient boosting, 50 rounds (10-37 from 4 classes "
    "on), primary metric.",
    "lm_tree": "Landmarker: one fully grown decision tree, primary metric.",
    "lm_rf": "Landmarker: random forest of 20 fully grown trees, primary metric.",
    "lm_gbdt_short": "Landmarker: histogram gradient boosting with a fifth of lm_gbdt's "
    "rounds (at least 2), primary metric.",
}
"""Every meta-feature this module knows, one line each, in a stable order."""

REQUIRED: tuple[str, ...] = ("n_rows", "n_features")
"""Meta-features a dataset description must provide."""

COUNTS: tuple[str, ...] = (
    "n_rows",
    "n_features",
    "n_numeric",
    "n_categorical",
    "n_classes",
    "cat_card_min",
    "cat_card_max",
    "onehot_width",
)
"""Meta-features that are non-negative integers."""

LANDMARKERS: tuple[str, ...] = (
    "lm_stump",
    "lm_1nn",
    "lm_nb",
    "lm_linear",
    "lm_gbdt",
    "lm_tree",
    "lm_rf",
    "lm_gbdt_short",
)
"""The landmarker meta-features (each in its task's primary metric)."""

CORE: tuple[str, ...] = (
    "log_n_rows",
    "log_n_features",
    "ratio_features_rows",
    "frac_categorical",
    "n_classes",
    "missing_cells_frac",
    "missing_cols_frac",
    "missing_rows_frac",
    "class_prob_min",
    "class_prob_max",
    "class_entropy_norm",
    "imbalance_ratio",
    "cat_card_mean",
    "cat_card_max",
    "onehot_width",
    "skew_mean",
    "skew_max",
    "kurt_mean",
    "kurt_max",
    "target_skew",
    "target_kurtosis",
    *LANDMARKERS,
)
"""The surrogate's meta-feature inputs, in column order. Raw counts are left out:
trees are invariant to the log, and the ratios carry the rest."""

_FRACTIONS = (
    "frac_numeric",
    "frac_categorical",
    "missing_cells_frac",
    "missing_cols_frac",
    "missing_rows_frac",
    "class_prob_min",
    "class_prob_max",
    "class_entropy_norm",
    "imbalance_ratio",
)
_CLASSIFICATION_ONLY = (
    "n_classes",
    "class_prob_min",
    "class_prob_max",
    "class_entropy",
    "class_entropy_norm",
    "imbalance_ratio",
    "lm_nb",
)
_REGRESSION_ONLY = ("target_skew", "target_kurtosis")


# ---------------------------------------------------------------------------- compute


def _moments(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column-wise biased skewness and excess kurtosis, NaN-aware; NaN if undefined."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    count = np.sum(~np.isnan(a), axis=0)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(a, axis=0)
        d = a - mean
        m2 = np.nanmean(d**2, axis=0)
        m3 = np.nanmean(d**3, axis=0)
        m4 = np.nanmean(d**4, axis=0)
        # Float noise makes a constant column's variance tiny but positive.
        flat = (count < 3) | ~(np.sqrt(m2) > 1e-12 * np.maximum(1.0, np.abs(mean)))
        skew = np.where(flat, np.nan, m3 / m2**1.5)
        kurt = np.where(flat, np.nan, m4 / m2**2 - 3.0)
    return skew, kurt


def _stats(prefix: str, values: np.ndarray, out: dict[str, float]) -> None:
    values = values[np.isfinite(values)]
    if len(values):
        out[f"{prefix}_mean"] = float(values.mean())
        out[f"{prefix}_min"] = float(values.min())
        out[f"{prefix}_max"] = float(values.max())


def _subsample(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    if n <= size:
        return np.arange(n)
    return np.sort(rng.choice(n, size=size, replace=False))


def _stratified_subsample(codes: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    n = len(codes)
    if n <= size:
        return np.arange(n)
    parts = []
    for c in np.unique(codes):
        members = np.flatnonzero(codes == c)
        # Proportional, but two per class so that 2-fold CV can stratify.
        k = min(len(members), max(2, round(size * len(members) / n)))
        parts.append(rng.choice(members, size=k, replace=False))
    return np.sort(np.concatenate(parts))


def _landmark_matrix(X: pd.DataFrame) -> np.ndarray:
    P = prepare_frame(X)
    cols = []
    for c in P.columns:
        s = P[c]
        if s.dtype.kind == "f":
            v = s.to_numpy(dtype=np.float64, copy=True)
            med = np.nanmedian(v) if np.isfinite(v).any() else 0.0
            v[np.isnan(v)] = med
        else:
            v = pd.factorize(s)[0].astype(np.float64)
        cols.append(v)
    if not cols:
        return np.zeros((len(P), 1))
    M = np.column_stack(cols)
    std = M.std(axis=0)
    return (M - M.mean(axis=0)) / np.where(std > 0, std, 1.0)


def gbdt_rounds(n_classes: int) -> int:
    """Boosting rounds of the ``lm_gbdt`` landmarker: 50, fewer from 4 classes on
    (multiclass boosting grows a tree per class and round), at least 10."""
    return 50 if n_classes <= 3 else max(10, 150 // n_classes)


def _landmarkers(M: np.ndarray, y: np.ndarray, task: str, seed: int) -> dict[str, float]:
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.metrics import accuracy_score, r2_score, roc_auc_score
    from sklearn.model_selection import KFold, StratifiedKFold
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    classification = is_classification(task)
    models: dict[str, Any]
    if classification:
        counts = np.bincount(y)
        rounds = gbdt_rounds(int(np.count_nonzero(counts)))
        models = {
            "lm_stump": DecisionTreeClassifier(max_depth=1, random_state=seed),
            "lm_1nn": KNeighborsClassifier(n_neighbors=1),
            "lm_nb": GaussianNB(),
            "lm_linear": LogisticRegression(max_iter=200),
            # Tells signal that needs feature selection and interactions (where boosting
            # capacity pays) from noise; the 1-NN misses it among irrelevant columns.
            # A tree per class and round: about 150 trees in all, so many classes stay cheap.
            # No early stopping (it would only start above 10,000 rows anyway): lm_gbdt_short
            # is read off this model's first rounds.
            "lm_gbdt": HistGradientBoostingClassifier(
                max_iter=rounds, early_stopping=False, random_state=seed
            ),
            # The fully grown tree and forest tell noise (a deep tree overfits it) from
            # fine structure.
            "lm_tree": DecisionTreeClassifier(random_state=seed),
            "lm_rf": RandomForestClassifier(n_estimators=20, random_state=seed, n_jobs=1),
        }
        short_rounds = max(2, rounds // 5)
        splitter: Any = (
            StratifiedKFold(2, shuffle=True, random_state=seed)
            if counts[counts > 0].min() >= 2
            else KFold(2, shuffle=True, random_state=seed)
        )
    else:
        models = {
            "lm_stump": DecisionTreeRegressor(max_depth=1, random_state=seed),
            "lm_1nn": KNeighborsRegressor(n_neighbors=1),
            "lm_linear": Ridge(alpha=1.0),
            "lm_gbdt": HistGradientBoostingRegressor(
                max_iter=50, early_stopping=False, random_state=seed
            ),
            "lm_tree": DecisionTreeRegressor(random_state=seed),
            "lm_rf": RandomForestRegressor(n_estimators=20, random_state=seed, n_jobs=1),
        }
        short_rounds = 10
        splitter = KFold(2, shuffle=True, random_state=seed)
    splits = list(splitter.split(M, y))

    def score(fitted: Any, y_true: np.ndarray, pred: np.ndarray) -> float:
        """``pred``: class probabilities for binary, predictions otherwise."""
        if task == "binary":
            classes = list(fitted.classes_)
            p1 = pred[:, classes.index(1)] if 1 in classes else np.zeros(len(y_true))
            return float(roc_auc_score(y_true, p1))
        if task == "multiclass":
            return float(accuracy_score(y_true, pred))
        return float(r2_score(y_true, pred))

    out: dict[str, float] = {}
    for name, model in models.items():
        try:
            scores: dict[str, list[float]] = {name: []}
            for tr, va in splits:
                model.fit(M[tr], y[tr])
                if task == "binary":
                    scores[name].append(score(model, y[va], model.predict_proba(M[va])))
                else:
                    scores[name].append(score(model, y[va], model.predict(M[va])))
                if name == "lm_gbdt":
                    # Against lm_gbdt: whether boosting longer pays. The staged prediction
                    # after its first rounds is bit-identical to a short model's, unrefit.
                    staged = (
                        model.staged_predict_proba(M[va])
                        if task == "binary"
                        else model.staged_predict(M[va])
                    )
                    pred = next(itertools.islice(staged, short_rounds - 1, None))
                    scores.setdefault("lm_gbdt_short", []).append(score(model, y[va], pred))
            for key, values in scores.items():
                value = float(np.mean(values))
                if math.isfinite(value):
                    out[key] = value
        except Exception:  # an unscorable landmarker is simply absent
            continue
    return out


def infer_task(y: Any) -> str:
    """The task a target implies, when the user did not say.

    ``binary`` for two distinct values; ``regression`` for numbers that are not all
    integers or have more than 20 distinct values; otherwise ``multiclass``.
    """
    values = pd.Series(y).dropna()
    n_unique = int(values.nunique())
    if n_unique == 2:
        return "binary"
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if numeric:
        integral = bool((values == values.round()).all())
        if not integral or n_unique > 20:
            return "regression"
    return "multiclass"


def compute_metafeatures(
    X: pd.DataFrame,
    y: pd.Series | np.ndarray,
    task: str,
    *,
    seed: int = 0,
    landmarkers: bool = True,
) -> dict[str, float]:
    """Meta-features of a dataset (see :data:`DESCRIPTIONS`).

    Args:
        X: Features, any dtypes, ``NaN`` allowed.
        y: Target aligned with ``X``; rows with a missing target are ignored.
        task: ``binary``, ``multiclass`` or ``regression``.
        seed: Seeds the subsamples and the landmarkers' folds.
        landmarkers: Compute the ``lm_*`` landmarkers (the only part that fits models).

    Returns:
        Name -> value; counts are ints. Undefined ones are absent (see module doc).

    Raises:
        ValueError: on an unknown task, no rows, no columns, fewer than two classes
            for classification or a non-numeric regression target.
    """
    check_task(task)
    if not isinstance(X, pd.DataFrame):
        raise TypeError(f"X must be a pandas DataFrame, got {type(X).__name__}")
    y_values = np.asarray(y.to_numpy() if isinstance(y, pd.Series) else y, dtype=object)
    if len(y_values) != len(X):
        raise ValueError(f"y has {len(y_values)} values for {len(X)} rows")
    keep = ~pd.isna(y_values)
    if not keep.all():
        X = X.loc[keep]
        y_values = y_values[keep]
    n_rows, n_features = X.shape
    if n_rows == 0 or n_features == 0:
        raise ValueError(f"need at least one row and one feature, got {X.shape}")
    # Positional labels: the caller's may be duplicated or not strings.
    X = X.set_axis(pd.RangeIndex(n_features), axis=1)
    rng = np.random.default_rng(seed)
    cats = categorical_columns(X)
    nums = numeric_columns(X)
    mf: dict[str, Any] = {
        "n_rows": int(n_rows),
        "n_features": int(n_features),
        "n_numeric": len(nums),
        "n_categorical": len(cats),
    }

    # Missing values, on every row: isna is a single vectorised pass.
    na = X.isna().to_numpy()
    mf["missing_cells_frac"] = float(na.mean())
    mf["missing_cols_frac"] = float(na.any(axis=0).mean())
    mf["missing_rows_frac"] = float(na.any(axis=1).mean())

    if cats:
        card = np.array([X[c].nunique(dropna=True) for c in cats], dtype=np.int64)
        mf["cat_card_min"] = int(card.min())
        mf["cat_card_mean"] = float(card.mean())
        mf["cat_card_max"] = int(card.max())
        mf["onehot_width"] = int(card.sum())
    else:
        mf["onehot_width"] = 0

    if nums:
        rows = _subsample(n_rows, MOMENT_ROWS, rng)
        sub = X.iloc[rows]
        block = np.column_stack([numeric_array(sub[c]) for c in nums])
        skew, kurt = _moments(block)
        _stats("skew", skew, mf)
        _stats("kurt", kurt, mf)

    if is_classification(task):
        try:
            codes, uniques = pd.factorize(y_values, sort=True)
        except TypeError:
            codes, uniques = pd.factorize(y_values.astype(str), sort=True)
        k = len(uniques)
        if k < 2:
            raise ValueError(f"classification needs at least 2 classes, y has {k}")
        p = np.bincount(codes, minlength=k) / n_rows
        entropy = float(-np.sum(p * np.log(p)))
        mf["n_classes"] = int(k)
        mf["class_prob_min"] = float(p.min())
        mf["class_prob_max"] = float(p.max())
        mf["class_entropy"] = entropy
        # Floating point makes balanced classes come out a hair above 1.
        mf["class_entropy_norm"] = min(1.0, entropy / math.log(k))
        mf["imbalance_ratio"] = float(p.min() / p.max())
        target = codes.astype(np.int64)
    else:
        try:
            target = y_values.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError("a regression target must be numeric") from exc
        t_skew, t_kurt = _moments(np.where(np.isfinite(target), target, np.nan))
        if np.isfinite(t_skew[0]):
            mf["target_skew"] = float(t_skew[0])
            mf["target_kurtosis"] = float(t_kurt[0])

    if landmarkers:
        if is_classification(task):
            rows = _stratified_subsample(target, LANDMARK_ROWS, rng)
        else:
            rows = _subsample(n_rows, LANDMARK_ROWS, rng)
        finite = np.isfinite(target[rows]) if target.dtype.kind == "f" else slice(None)
        rows = rows[finite]
        if len(rows) >= 4:
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=1), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                M = _landmark_matrix(X.iloc[rows])
                mf.update(_landmarkers(M, target[rows], task, seed))

    mf["log_n_rows"] = math.log(n_rows)
    mf["log_n_features"] = math.log(n_features)
    mf["ratio_features_rows"] = n_features / n_rows
    mf["frac_numeric"] = len(nums) / n_features
    mf["frac_categorical"] = len(cats) / n_features
    return {name: mf[name] for name in DESCRIPTIONS if name in mf}


# ---------------------------------------------------------------------------- validate


def _as_number(name: str, value: Any, errors: list[str]) -> float | None:
    if isinstance(value, bool | np.bool_) or not isinstance(
        value, int | float | np.integer | np.floating
    ):
        errors.append(f"{name}={value!r} is not a number")
        return None
    out = float(value)
    if not math.isfinite(out):
        errors.append(f"{name}={value!r} is not finite")
        return None
    return out


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def validate_metafeatures(task: str, mf: Mapping[str, Any]) -> dict[str, Any]:
    """Check a meta-feature dict (e.g. sent by a client) and complete what follows.

    Args:
        task: ``binary``, ``multiclass`` or ``regression``.
        mf: Name -> number (or ``None`` for unknown); must hold :data:`REQUIRED`.

    Returns:
        A new dict with every name of :data:`DESCRIPTIONS` (in that order; ``None``
        where unknown or not applicable to the task) followed by any extra names
        given. Derivable ones are filled in: logs and ratios from the counts,
        ``n_numeric``/``n_categorical`` from each other, fractions, normalised entropy
        and imbalance ratio from the class statistics. Counts are ints.

    Raises:
        ValueError: listing every problem: a missing required name, a value that is
            not a finite number, a negative or fractional count, ``n_classes < 2``
            for classification (``!= 2`` for binary), a fraction outside ``[0, 1]``,
            a landmarker outside its metric's range, or values that contradict each
            other (``n_numeric + n_categorical != n_features``, a log that is not the
            log of its count...).
    """
    check_task(task)
    if not isinstance(mf, Mapping):
        raise ValueError(f"meta-features must be a mapping, got {type(mf).__name__}")
    errors: list[str] = []
    values: dict[str, float | None] = {}
    for name, raw in mf.items():
        if raw is None:
            continue
        values[str(name)] = _as_number(str(name), raw, errors)
    classification = is_classification(task)
    for name in _REGRESSION_ONLY if classification else _CLASSIFICATION_ONLY:
        values.pop(name, None)  # not applicable to the task: treated as unknown

    for name in REQUIRED:
        if mf.get(name) is None:
            errors.append(f"{name} is required")
    for name in COUNTS:
        v = values.get(name)
        if v is None:
            continue
        if v < 0 or not v.is_integer():
            errors.append(f"{name}={v:g} must be a non-negative integer")
    for name in ("n_rows", "n_features"):
        v = values.get(name)
        if v is not None and v < 1:
            errors.append(f"{name}={v:g} must be at least 1")
    n_classes = values.get("n_classes")
    if classification and n_classes is not None:
        if n_classes < 2:
            errors.append(f"n_classes={n_classes:g} must be at least 2 for classification")
        elif task == "binary" and n_classes != 2:
            errors.append(f"n_classes={n_classes:g} must be 2 for a binary task")
    for name in _FRACTIONS:
        v = values.get(name)
        if v is not None and -1e-9 <= v <= 1.0 + 1e-9:
            values[name] = min(1.0, max(0.0, v))  # rounding error, not a wrong value
        elif v is not None:
            errors.append(f"{name}={v:g} must be in [0, 1]")
    for name in LANDMARKERS:
        v = values.get(name)
        if v is None:
            continue
        if task == "regression" and v > 1.0:
            errors.append(f"{name}={v:g} is an R² and must be <= 1")
        if task != "regression" and not 0.0 <= v <= 1.0:
            errors.append(f"{name}={v:g} must be in [0, 1]")
    for name in ("ratio_features_rows", "class_entropy", "cat_card_mean"):
        v = values.get(name)
        if v is not None and v < 0:
            errors.append(f"{name}={v:g} must be non-negative")
    if errors:
        raise ValueError("invalid meta-features: " + "; ".join(errors))

    _derive(values, errors)
    if errors:
        raise ValueError("invalid meta-features: " + "; ".join(errors))

    out: dict[str, Any] = {}
    for name in DESCRIPTIONS:
        v = values.get(name)
        out[name] = None if v is None else (int(v) if name in COUNTS else float(v))
    for name, v in values.items():
        if name not in DESCRIPTIONS:
            out[name] = v
    return out


def _derive(values: dict[str, float | None], errors: list[str]) -> None:
    """Fill derivable meta-features in place; report contradictions in ``errors``."""

    def put(name: str, value: float) -> None:
        given = values.get(name)
        if given is None:
            values[name] = value
        elif not _close(given, value):
            errors.append(f"{name}={given:g} contradicts the value derived from others, {value:g}")

    n_rows = values.get("n_rows")
    n_features = values.get("n_features")
    n_num = values.get("n_numeric")
    n_cat = values.get("n_categorical")
    if n_rows is None or n_features is None:  # reported as missing already
        return
    put("log_n_rows", math.log(n_rows))
    put("log_n_features", math.log(n_features))
    put("ratio_features_rows", n_features / n_rows)
    if n_num is not None and n_cat is None:
        put("n_categorical", n_features - n_num)
    elif n_cat is not None and n_num is None:
        put("n_numeric", n_features - n_cat)
    elif n_num is not None and n_cat is not None:
        put("n_features", n_num + n_cat)
    n_num, n_cat = values.get("n_numeric"), values.get("n_categorical")
    for name, v in (("n_numeric", n_num), ("n_categorical", n_cat)):
        if v is not None and not 0 <= v <= n_features:
            errors.append(f"{name}={v:g} must be between 0 and n_features={n_features:g}")
    if n_num is not None:
        put("frac_numeric", n_num / n_features)
    if n_cat is not None:
        put("frac_categorical", n_cat / n_features)
    if n_cat == 0 and values.get("onehot_width") is None:
        values["onehot_width"] = 0.0

    p_min, p_max = values.get("class_prob_min"), values.get("class_prob_max")
    if p_min is not None and p_max is not None:
        if p_min > p_max:
            errors.append(f"class_prob_min={p_min:g} exceeds class_prob_max={p_max:g}")
        elif p_max > 0:
            put("imbalance_ratio", p_min / p_max)
    k = values.get("n_classes")
    entropy = values.get("class_entropy")
    if k is not None and k >= 2:
        if entropy is not None:
            if entropy > math.log(k) * (1 + 1e-9):
                errors.append(f"class_entropy={entropy:g} exceeds log(n_classes)={math.log(k):g}")
            put("class_entropy_norm", min(1.0, entropy / math.log(k)))
        elif values.get("class_entropy_norm") is not None:
            put("class_entropy", values["class_entropy_norm"] * math.log(k))  # type: ignore[operator]
