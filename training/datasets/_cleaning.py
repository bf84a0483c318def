"""Turn a raw table into model-ready ``X, y``: the same rules for every catalog entry.

The rules are deliberately generic so that ``catalog.csv`` only has to say what is
specific to a table (its target, its id and leak columns, how the target is derived).
Everything done to a table is written to a log so that ``verify`` can show it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

# A multiclass target needs enough rows per class for stratified 3-fold CV and for a
# learning curve at a fraction of the rows; rarer classes are dropped (and logged).
MIN_CLASS_ROWS = 10
MAX_CLASSES = 30

# A string column whose values are mostly distinct is an id, a name or free text:
# a tree cannot generalise from it and it would only blow up the category count.
NEAR_UNIQUE_RATIO = 0.5
# Below this many distinct values a string column is kept however short the table.
NEAR_UNIQUE_MIN_LEVELS = 20
# Share of non-missing values that must parse for a string column to become numeric
# or a date; the rest becomes NaN.
PARSE_SHARE = 0.9

_DATE_RE = re.compile(
    r"^\d{4}-\d{1,2}-\d{1,2}"  # date
    r"([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?)?"  # optional time
    r"(Z|[+-]\d{2}:?\d{2})?$"  # optional zone
)
# LightGBM rejects feature names with JSON punctuation.
_BAD_NAME_CHARS = re.compile(r'[\[\]{}":,]')


@dataclass
class Cleaned:
    """Result of :func:`clean`: features, encoded target, class labels and a log."""

    X: pd.DataFrame
    y: pd.Series
    classes: tuple[str, ...]
    log: list[str] = field(default_factory=list)


def _label(value: object) -> str:
    """A class label as text; integral floats print without the trailing ``.0``."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    return str(value)


def _parse_number(text: str) -> float:
    try:
        return float(text)
    except ValueError as exc:
        raise ValueError(f"bad number {text!r} in target rule") from exc


def _binary(hit: pd.Series, *, positive: str, negative: str, missing: pd.Series) -> pd.Series:
    """A two-level categorical, negative first so the positive class is coded 1."""
    values = pd.Categorical(
        np.where(hit.to_numpy(dtype=bool), positive, negative), categories=[negative, positive]
    )
    return pd.Series(values, index=hit.index).where(~missing)


def apply_target_rule(raw: pd.Series, rule: str) -> tuple[pd.Series, str]:
    """Derive the target from its raw column.

    Rules (empty means the column as it is):

    - ``gt:V`` / ``ge:V``: binary, ``raw > V`` / ``raw >= V`` (a count into "any").
    - ``eq:V``: binary, ``raw == V`` compared as text.
    - ``top:K``: multiclass, keep the ``K`` most frequent classes, drop the other rows.
    - ``log1p``: regression on ``log(1 + raw)`` (skewed amounts such as expenditures).

    Args:
        raw: The raw target column (missing values stay missing).
        rule: The rule text.

    Returns:
        The derived target (NaN where it is unknown or the row is dropped) and a log
        line (empty if nothing was done).

    Raises:
        ValueError: Unknown rule.
    """
    if not rule:
        return raw, ""
    kind, _, arg = rule.partition(":")
    missing = raw.isna()
    if kind in {"gt", "ge"}:
        threshold = _parse_number(arg)
        values = pd.to_numeric(raw, errors="raise")
        hit = values > threshold if kind == "gt" else values >= threshold
        op = ">" if kind == "gt" else ">="
        derived = _binary(hit, positive=f"{op}{arg}", negative=f"not {op}{arg}", missing=missing)
        return derived, f"target = {raw.name} {op} {arg}"
    if kind == "eq":
        text = raw.map(_label, na_action="ignore")
        derived = _binary(text == arg, positive=arg, negative=f"not {arg}", missing=missing)
        return derived, f"target = ({raw.name} == {arg!r})"
    if kind == "log1p" and not arg:
        values = pd.to_numeric(raw, errors="raise")
        if (values.dropna() <= -1).any():
            raise ValueError(f"log1p rule on {raw.name!r}: values <= -1")
        return np.log1p(values), f"target = log1p({raw.name})"
    if kind == "top":
        k = int(arg)
        counts = raw.map(_label, na_action="ignore").value_counts()
        keep = set(counts.sort_index().sort_values(ascending=False, kind="stable").index[:k])
        text = raw.map(_label, na_action="ignore")
        derived = raw.where(text.isin(keep))
        dropped = int((~text.isin(keep) & ~missing).sum())
        return derived, f"kept the {k} most frequent classes; dropped {dropped} rows of others"
    raise ValueError(f"unknown target rule {rule!r}")


def _sanitize_names(columns: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for column in columns:
        name = _BAD_NAME_CHARS.sub("_", column).strip() or "col"
        base, i = name, 1
        while name in seen:
            i += 1
            name = f"{base}_{i}"
        seen.add(name)
        out.append(name)
    return out


def _looks_like_dates(values: pd.Series) -> bool:
    sample = values.iloc[:: max(1, len(values) // 200)].astype(str).str.strip()
    return bool(len(sample)) and sample.str.match(_DATE_RE).mean() >= PARSE_SHARE


def _clean_text_column(column: pd.Series, log: list[str]) -> pd.Series | None:
    """Clean one string/object column; ``None`` means drop it."""
    name = column.name
    present = column.dropna()
    if present.empty:
        return column
    # Mixed objects (numbers and strings) compare badly; text is what they are.
    text = present.map(str)
    if _looks_like_dates(text):
        stamps = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
        if stamps.notna().mean() >= PARSE_SHARE:
            days = (stamps - pd.Timestamp("1970-01-01", tz="UTC")) / pd.Timedelta(days=1)
            log.append(f"{name}: date-like text -> days since 1970")
            return days.reindex(column.index).astype("float64")
    numbers = pd.to_numeric(text, errors="coerce")
    if numbers.notna().mean() >= PARSE_SHARE:
        bad = int(numbers.isna().sum())
        suffix = f" ({bad} unparsable -> NaN)" if bad else ""
        log.append(f"{name}: numeric text -> float{suffix}")
        return numbers.reindex(column.index).astype("float64")
    levels = text.nunique()
    if levels > NEAR_UNIQUE_MIN_LEVELS and levels > NEAR_UNIQUE_RATIO * len(text):
        log.append(f"{name}: dropped, near-unique text ({levels} values in {len(text)} rows)")
        return None
    return pd.Series(pd.Categorical(text.reindex(column.index)), index=column.index, name=name)


def _is_row_id(column: pd.Series) -> bool:
    """An integer column holding a consecutive run of distinct values: a row number.

    Only columns that were numbers in the raw table qualify: a daily date is distinct
    and consecutive too, yet it is a time, not a row number.
    """
    n = len(column)
    if n < 100 or column.isna().any() or not ptypes.is_numeric_dtype(column):
        return False
    values = column.to_numpy(dtype="float64")
    if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
        return False
    return bool(len(np.unique(values)) == n and values.max() - values.min() + 1 == n)


def clean_features(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Apply the generic feature rules to ``frame`` (target already removed).

    Dates become days since 1970, numeric text becomes float, other text becomes
    ``category`` (NaN kept) unless it is near-unique (dropped); booleans become ints,
    nullable numbers become float; constant columns and row-number columns are dropped.

    Args:
        frame: Raw feature columns.

    Returns:
        The cleaned frame and a log of what was done.
    """
    log: list[str] = []
    out: dict[str, pd.Series] = {}
    for name in frame.columns:
        column = frame[name]
        if isinstance(column.dtype, pd.CategoricalDtype):
            cleaned: pd.Series | None = column.cat.remove_unused_categories()
        elif ptypes.is_bool_dtype(column.dtype):
            cleaned = column.astype("float64") if column.isna().any() else column.astype("int64")
        elif ptypes.is_datetime64_any_dtype(column.dtype):
            stamps = pd.to_datetime(column, utc=True)
            cleaned = (stamps - pd.Timestamp("1970-01-01", tz="UTC")) / pd.Timedelta(days=1)
            log.append(f"{name}: datetime -> days since 1970")
        elif ptypes.is_numeric_dtype(column.dtype):
            is_plain = isinstance(column.dtype, np.dtype)
            cleaned = column if is_plain else column.astype("float64")
        else:
            cleaned = _clean_text_column(column, log)
        if cleaned is None:
            continue
        if cleaned.nunique(dropna=False) <= 1:
            log.append(f"{name}: dropped, constant")
            continue
        if ptypes.is_numeric_dtype(column.dtype) and _is_row_id(cleaned):
            log.append(f"{name}: dropped, consecutive distinct integers (a row id)")
            continue
        out[name] = cleaned.rename(name)
    cleaned_frame = pd.DataFrame(out, index=frame.index)
    names = _sanitize_names(list(cleaned_frame.columns))
    if names != list(cleaned_frame.columns):
        log.append("renamed columns with characters LightGBM rejects")
        cleaned_frame.columns = names
    return cleaned_frame, log


def _encode_classes(
    y: pd.Series, category_order: list[str] | None
) -> tuple[pd.Series, tuple[str, ...]]:
    """Codes ``0..k-1`` in a stable label order: categories' own order, else sorted."""
    if category_order is not None:
        labels = y.map(_label)
        present = set(labels)
        order = [label for label in category_order if label in present]
    elif ptypes.is_numeric_dtype(y.dtype) or ptypes.is_bool_dtype(y.dtype):
        values = sorted(pd.unique(y))
        order = [_label(v) for v in values]
        labels = y.map(_label)
    else:
        labels = y.map(_label)
        order = sorted(pd.unique(labels))
    codes = labels.map({label: i for i, label in enumerate(order)}).astype("int64")
    return codes, tuple(order)


def clean(
    raw: pd.DataFrame,
    *,
    target: str,
    task: str,
    drop_columns: tuple[str, ...] = (),
    target_rule: str = "",
    seed: int = 0,
) -> Cleaned:
    """Clean a raw table into features and an encoded target, rows shuffled by ``seed``.

    Args:
        raw: The table as its package ships it.
        target: Target column.
        task: ``binary``, ``multiclass`` or ``regression``.
        drop_columns: Columns to remove (ids, leaks); each must exist.
        target_rule: See :func:`apply_target_rule`.
        seed: Seed of the row shuffle (many tables are sorted by target or time).

    Returns:
        The cleaned dataset and a log of every change.

    Raises:
        KeyError: ``target`` or a drop column is not in ``raw``.
        ValueError: The target does not fit ``task`` after cleaning.
    """
    log: list[str] = []
    missing = [c for c in (target, *drop_columns) if c not in raw.columns]
    if missing:
        raise KeyError(f"columns not in table: {missing}; it has {list(raw.columns)}")
    y, rule_log = apply_target_rule(raw[target], target_rule)
    if rule_log:
        log.append(rule_log)
    category_order = None
    if isinstance(y.dtype, pd.CategoricalDtype):
        # Keep the declared level order (R factors are often ordinal) but work on
        # plain values: categoricals count unused levels as classes.
        category_order = [_label(v) for v in y.cat.categories]
        y = y.astype(object)
    keep = y.notna().to_numpy().copy()  # writable: rare classes are masked below
    unknown = int(raw[target].isna().sum())
    if unknown:
        log.append(f"dropped {unknown} rows without a target")

    if task in {"binary", "multiclass"}:
        labels = y[keep].map(_label)
        counts = labels.value_counts()
        rare = counts[counts < MIN_CLASS_ROWS]
        if task == "multiclass" and len(rare):
            log.append(
                f"dropped {len(rare)} classes with < {MIN_CLASS_ROWS} rows "
                f"({int(rare.sum())} rows): {', '.join(sorted(map(str, rare.index)))}"
            )
            keep &= ~y.map(_label).isin(set(rare.index)).to_numpy()
            counts = counts[counts >= MIN_CLASS_ROWS]
        n_classes = len(counts)
        if task == "binary" and n_classes != 2:
            raise ValueError(f"binary target {target!r} has {n_classes} classes: {dict(counts)}")
        if task == "binary" and counts.min() < MIN_CLASS_ROWS:
            raise ValueError(f"binary target {target!r} has a class of {counts.min()} rows")
        if task == "multiclass" and not 3 <= n_classes <= MAX_CLASSES:
            raise ValueError(f"multiclass target {target!r} has {n_classes} classes")
    elif task == "regression":
        if not ptypes.is_numeric_dtype(y.dtype) or ptypes.is_bool_dtype(y.dtype):
            raise ValueError(f"regression target {target!r} is not numeric ({y.dtype})")
        if y[keep].nunique() <= 2:
            raise ValueError(f"regression target {target!r} has <= 2 distinct values")
    else:
        raise ValueError(f"unknown task {task!r}")

    frame = raw.loc[keep].drop(columns=[target, *drop_columns]).reset_index(drop=True)
    y = y[keep].reset_index(drop=True)
    X, feature_log = clean_features(frame)
    log.extend(feature_log)

    if task == "regression":
        y_out = y.astype("float64")
        classes: tuple[str, ...] = ()
    else:
        y_out, classes = _encode_classes(y, category_order)

    order = np.random.default_rng(seed).permutation(len(X))
    X = X.iloc[order].reset_index(drop=True)
    y_out = y_out.iloc[order].reset_index(drop=True).rename(target)
    return Cleaned(X=X, y=y_out, classes=classes, log=log)
