"""The one preprocessing every family and the meta-features share.

Two steps:

1. :func:`prepare_frame`, once per dataset (stateless, so it cannot leak across CV
   folds): column names made unique and safe for LightGBM, ``±inf`` turned into
   ``NaN``, datetimes and timedeltas into seconds, every other non-numeric column
   (object, string, category, bool) into strings with missing values as their own
   category :data:`MISSING_TOKEN`.
2. A fitted-per-fold transformer, by model kind:

   - :func:`tree_preprocessor` (LightGBM, random forest): numeric columns pass through
     with their ``NaN`` (both libraries split on missing values natively);
     categoricals become ordinal codes, at most :data:`MAX_CATEGORIES_TREE` per column
     with the rare ones (fewer than :data:`MIN_FREQUENCY` rows) pooled, unseen ones
     ``NaN``. For LightGBM the codes are handed over as pandas ``category`` columns so
     it uses its native categorical splits.
   - :func:`dense_preprocessor` (linear, MLP): numeric columns median-imputed with a
     missing-indicator column per column that had missing values, then standardised;
     categoricals one-hot encoded, at most :data:`MAX_CATEGORIES_DENSE` per column
     with the rare ones pooled into an "infrequent" column (unseen ones go there too).

The category caps keep ID-like and free-text columns from blowing up the width: such
a column collapses into a handful of frequent values plus "infrequent".
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "MAX_CATEGORIES_DENSE",
    "MAX_CATEGORIES_TREE",
    "MIN_FREQUENCY",
    "MISSING_TOKEN",
    "categorical_columns",
    "dense_preprocessor",
    "is_categorical",
    "numeric_array",
    "numeric_columns",
    "prepare_frame",
    "tree_preprocessor",
]

MISSING_TOKEN = "__missing__"
MIN_FREQUENCY = 5
MAX_CATEGORIES_TREE = 64
MAX_CATEGORIES_DENSE = 32

_CAT_PREFIX = "cat__"


def _is_temporal(dtype: Any) -> bool:
    return pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype)


def is_categorical(series: pd.Series) -> bool:
    """Whether a column is treated as categorical: anything but a non-bool number, a
    datetime or a timedelta (those two become numeric seconds)."""
    dtype = series.dtype
    if _is_temporal(dtype):
        return False
    return not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)


def categorical_columns(X: pd.DataFrame) -> list[str]:
    """Names of the categorical columns of ``X`` (object, string, category, bool)."""
    return [c for i, c in enumerate(X.columns) if is_categorical(X.iloc[:, i])]


def numeric_columns(X: pd.DataFrame) -> list[str]:
    """Names of the numeric columns of ``X`` (numbers, datetimes, timedeltas)."""
    return [c for i, c in enumerate(X.columns) if not is_categorical(X.iloc[:, i])]


def numeric_array(series: pd.Series) -> np.ndarray:
    """A numeric column as a new ``float64`` array: missing and ``±inf`` as ``NaN``,
    datetimes as seconds since the epoch (UTC), timedeltas as seconds."""
    dtype = series.dtype
    if pd.api.types.is_datetime64_any_dtype(dtype):
        if getattr(dtype, "tz", None) is not None:
            series = series.dt.tz_convert("UTC").dt.tz_localize(None)
        values = series.to_numpy(dtype="datetime64[ns]")
        missing = np.isnat(values)
        arr = values.astype(np.int64).astype(np.float64) / 1e9
    elif pd.api.types.is_timedelta64_dtype(dtype):
        values = series.to_numpy(dtype="timedelta64[ns]")
        missing = np.isnat(values)
        arr = values.astype(np.int64).astype(np.float64) / 1e9
    else:
        arr = series.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
        missing = ~np.isfinite(arr)
    arr[missing] = np.nan
    return arr


def _safe_names(columns: pd.Index) -> list[str]:
    # LightGBM refuses JSON special characters in feature names; duplicates would make
    # column selection ambiguous.
    out: list[str] = []
    seen: set[str] = set()
    for i, c in enumerate(columns):
        name = re.sub(r"[^0-9A-Za-z_]+", "_", str(c)).strip("_") or f"f{i}"
        base, k = name, 1
        while name in seen:
            name = f"{base}_{k}"
            k += 1
        seen.add(name)
        out.append(name)
    return out


def prepare_frame(X: pd.DataFrame) -> pd.DataFrame:
    """A cleaned copy of ``X`` that every preprocessor of this module accepts.

    Numeric columns become ``float64`` (see :func:`numeric_array`); every other
    column becomes strings with missing values as :data:`MISSING_TOKEN`.

    Args:
        X: Features, any dtypes.

    Returns:
        A new frame with a fresh ``RangeIndex`` and safe, unique column names.
    """
    if not isinstance(X, pd.DataFrame):
        raise TypeError(f"X must be a pandas DataFrame, got {type(X).__name__}")
    columns: dict[str, Any] = {}
    for i, name in enumerate(_safe_names(X.columns)):
        s = X.iloc[:, i]  # by position: labels may be duplicated
        if is_categorical(s):
            values = s.astype(object).to_numpy()
            missing = pd.isna(values)
            columns[name] = np.where(missing, MISSING_TOKEN, values.astype(str)).astype(object)
        else:
            columns[name] = numeric_array(s)
    return pd.DataFrame(columns, index=pd.RangeIndex(len(X)))


def _select_numeric(X: pd.DataFrame) -> list[str]:
    return numeric_columns(X)


def _select_categorical(X: pd.DataFrame) -> list[str]:
    return categorical_columns(X)


def _to_category(X: pd.DataFrame) -> pd.DataFrame:
    # LightGBM picks up pandas categoricals by itself and remembers each column's
    # categories at fit time, so codes unseen in training fall back to "missing".
    X = X.copy()
    for c in X.columns:
        if c.startswith(_CAT_PREFIX):
            X[c] = X[c].astype("category")
    return X


def tree_preprocessor(*, pandas_categorical: bool = False) -> Any:
    """An unfitted transformer for tree models (see the module docstring).

    Args:
        pandas_categorical: Output a DataFrame whose ordinal columns have ``category``
            dtype (for LightGBM); otherwise a float array (for scikit-learn trees).

    Returns:
        A scikit-learn transformer for frames from :func:`prepare_frame`.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder

    ct = ColumnTransformer(
        [
            ("num", "passthrough", _select_numeric),
            (
                "cat",
                OrdinalEncoder(
                    handle_unknown="use_encoded_value",
                    unknown_value=np.nan,
                    min_frequency=MIN_FREQUENCY,
                    max_categories=MAX_CATEGORIES_TREE,
                    dtype=np.float64,
                ),
                _select_categorical,
            ),
        ],
        remainder="drop",
        sparse_threshold=0.0,
    )
    if not pandas_categorical:
        return ct
    ct.set_output(transform="pandas")
    return Pipeline([("columns", ct), ("category", FunctionTransformer(_to_category))])


def dense_preprocessor() -> Any:
    """An unfitted transformer for linear models and MLPs (see the module docstring).

    Returns:
        A scikit-learn transformer producing a dense float array.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = Pipeline(
        [
            ("impute", SimpleImputer(strategy="median", add_indicator=True)),
            ("scale", StandardScaler()),
        ]
    )
    onehot = OneHotEncoder(
        handle_unknown="infrequent_if_exist",
        min_frequency=MIN_FREQUENCY,
        max_categories=MAX_CATEGORIES_DENSE,
        sparse_output=False,
        dtype=np.float64,
    )
    return ColumnTransformer(
        [("num", numeric, _select_numeric), ("cat", onehot, _select_categorical)],
        remainder="drop",
        sparse_threshold=0.0,
    )
