"""Seeded generators for the corners real tables rarely reach.

Real offline tables are mostly a few thousand rows of a few dozen columns. The
surrogate also has to see what happens to hyperparameters when there are far more
features than rows, one positive in a hundred, categorical columns with thousands of
levels, mostly noise, no signal at all, missing values everywhere, or 100k rows.

A synthetic dataset is named ``synthetic/<kind>-<task>-<rows>x<features>[-s<seed>]``
(``synthetic/imbalanced-binary-20000x20-s0``); the name alone determines the data, so
:func:`training.datasets.load_dataset` accepts any such name, not only those of
:data:`SYNTHETIC`.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from training.datasets._types import TASKS, CatalogEntry, LoadedDataset

KINDS: dict[str, str] = {
    "high-dim": "far more features than rows; 10 informative, the rest noise",
    "imbalanced": "binary: 1% positives; multiclass: class shares falling by 0.45x per class",
    "high-cardinality": "half the columns categorical with 10 to rows/5 levels (Zipf-like)",
    "noise": "5 informative features, all others pure noise",
    "pure-noise": "target independent of every feature (nothing to learn)",
    "missing": "30% of every feature value missing at random",
    "many-classes": "multiclass with 30 classes",
    "large": "many rows, a smooth nonlinear signal",
}

SYNTHETIC: list[str] = [
    "synthetic/high-dim-binary-200x2000-s0",
    "synthetic/high-dim-regression-300x1000-s0",
    "synthetic/high-dim-multiclass-400x1500-s0",
    "synthetic/imbalanced-binary-20000x20-s0",
    "synthetic/imbalanced-multiclass-10000x20-s0",
    "synthetic/high-cardinality-binary-10000x12-s0",
    "synthetic/high-cardinality-regression-20000x12-s0",
    "synthetic/noise-binary-2000x100-s0",
    "synthetic/noise-regression-2000x100-s0",
    "synthetic/pure-noise-binary-2000x20-s0",
    "synthetic/pure-noise-regression-2000x20-s0",
    "synthetic/missing-binary-5000x20-s0",
    "synthetic/many-classes-multiclass-20000x30-s0",
    "synthetic/large-binary-100000x20-s0",
    "synthetic/large-regression-100000x20-s0",
    "synthetic/large-multiclass-100000x20-s0",
]

_NAME_RE = re.compile(
    r"^synthetic/(?P<kind>[a-z-]+?)-(?P<task>binary|multiclass|regression)"
    r"-(?P<rows>\d+)x(?P<features>\d+)(?:-s(?P<seed>\d+))?$"
)
_MAX_ROWS = 2_000_000
_MAX_FEATURES = 20_000


def is_synthetic(name: str) -> bool:
    """Whether ``name`` is in the synthetic namespace (it may still be malformed)."""
    return name.startswith("synthetic/")


def parse_name(name: str) -> tuple[str, str, int, int, int]:
    """Split a synthetic name into ``(kind, task, n_rows, n_features, seed)``.

    Raises:
        KeyError: Not a well-formed synthetic name or an unknown kind.
    """
    match = _NAME_RE.match(name)
    if match is None or match["kind"] not in KINDS:
        raise KeyError(
            f"bad synthetic name {name!r}: expected synthetic/<kind>-<task>-<rows>x<features>"
            f"[-s<seed>] with kind in {sorted(KINDS)}"
        )
    seed = int(match["seed"] or 0)
    return match["kind"], match["task"], int(match["rows"]), int(match["features"]), seed


def synthetic_name(kind: str, task: str, n_rows: int, n_features: int, seed: int) -> str:
    """The canonical name of a synthetic dataset."""
    return f"synthetic/{kind}-{task}-{n_rows}x{n_features}-s{seed}"


def synthetic_entry(name: str) -> CatalogEntry:
    """A catalog entry describing a synthetic dataset (nothing is generated).

    Raises:
        KeyError: Malformed name.
    """
    kind, task, n_rows, n_features, _ = parse_name(name)
    return CatalogEntry(
        name=name,
        source="synthetic",
        ref=name.removeprefix("synthetic/"),
        target="y",
        task=task,
        drop_columns=(),
        rows=n_rows,
        features=n_features,
        notes=KINDS[kind],
        group=f"synthetic/{kind}",
    )


def _basis(X: np.ndarray) -> np.ndarray:
    """Standardised nonlinear terms of the informative features: the raw signal."""
    n, k = X.shape
    transforms = (lambda v: v, np.sin, lambda v: v * v - 1.0, np.abs)
    terms = [transforms[j % len(transforms)](X[:, j]) for j in range(k)]
    if k >= 2:
        terms.append(X[:, 0] * X[:, 1])
    if not terms:
        return np.zeros((n, 1))
    basis = np.column_stack(terms)
    std = basis.std(axis=0)
    return (basis - basis.mean(axis=0)) / np.where(std > 0, std, 1.0)


def _labels_from_basis(
    basis: np.ndarray, task: str, rng: np.random.Generator, options: dict[str, Any]
) -> np.ndarray:
    n, q = basis.shape
    noise = float(options.get("noise", 0.5))
    if task == "multiclass":
        n_classes = int(options.get("n_classes", 5))
        # Each class prefers its own random direction in the signal space.
        scores = 2.0 * basis @ rng.standard_normal((q, n_classes)) / np.sqrt(q)
        scores += noise * rng.gumbel(size=(n, n_classes))
        shares = np.asarray(options.get("class_shares", np.ones(n_classes)), dtype=float)
        shares = shares / shares.sum()
        # Random directions favour some classes; tune per-class offsets until the
        # class shares are the intended ones (so "imbalanced" means what it says).
        bias = np.log(shares)
        for _ in range(50):
            counts = np.bincount((scores + bias).argmax(axis=1), minlength=n_classes)
            bias += 0.5 * np.log(shares / np.maximum(counts / n, 0.5 / n))
        return (scores + bias).argmax(axis=1).astype("int64")
    z = basis @ (rng.uniform(0.5, 1.5, q) * rng.choice([-1.0, 1.0], q))
    z = (z - z.mean()) / (z.std() or 1.0)
    scored = z + noise * rng.standard_normal(n)
    if task == "regression":
        return scored
    rate = float(options.get("positive_rate", 0.5))
    # An exact share of positives, whatever the signal's distribution.
    return (scored > np.quantile(scored, 1.0 - rate)).astype("int64")


def _categorical_column(
    rng: np.random.Generator, n_rows: int, n_levels: int
) -> tuple[pd.Categorical, np.ndarray]:
    """Zipf-like level frequencies; returns the column and each row's level effect."""
    weights = 1.0 / np.arange(1, n_levels + 1) ** 1.1
    codes = rng.choice(n_levels, size=n_rows, p=weights / weights.sum())
    effects = rng.standard_normal(n_levels)
    width = len(str(n_levels - 1))
    categories = [f"L{i:0{width}d}" for i in range(n_levels)]
    return pd.Categorical.from_codes(codes, categories=categories), effects[codes]


def make_synthetic(
    kind: str,
    n_rows: int,
    n_features: int,
    seed: int,
    *,
    task: str = "binary",
    shuffle_seed: int | None = None,
    **options: Any,
) -> LoadedDataset:
    """Generate a synthetic dataset; the same arguments always give the same data.

    Args:
        kind: One of :data:`KINDS`.
        n_rows: Rows.
        n_features: Feature columns.
        seed: Seed of the generator.
        task: ``binary``, ``multiclass`` or ``regression``.
        shuffle_seed: Seed of a final row shuffle (rows are exchangeable already, so
            this only mirrors ``load_dataset(seed=...)``); ``None`` keeps the order.
        **options: Overrides: ``noise`` (0.5), ``positive_rate``, ``n_classes``,
            ``missing_rate`` (0.3), ``n_informative``.

    Returns:
        The dataset, named by :func:`synthetic_name`.

    Raises:
        ValueError: Unknown kind or task, or sizes out of range.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown synthetic kind {kind!r}; expected one of {sorted(KINDS)}")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    if not 20 <= n_rows <= _MAX_ROWS or not 1 <= n_features <= _MAX_FEATURES:
        raise ValueError(f"sizes out of range: {n_rows} rows x {n_features} features")
    if kind == "many-classes" and task != "multiclass":
        raise ValueError("kind 'many-classes' needs task 'multiclass'")
    options = dict(options)
    rng = np.random.default_rng(seed)

    if kind == "imbalanced":
        options.setdefault("positive_rate", 0.01)
        n_classes = int(options.setdefault("n_classes", 6))
        options.setdefault("class_shares", 0.45 ** np.arange(n_classes))
    if kind == "many-classes":
        options.setdefault("n_classes", 30)
        options.setdefault("noise", 0.3)

    default_informative = {"high-dim": 10, "noise": 5}.get(kind, min(n_features, 8))
    n_informative = min(n_features, int(options.get("n_informative", default_informative)))

    columns: dict[str, Any] = {}
    if kind == "high-cardinality":
        n_cat = max(1, n_features // 2)
        n_num = n_features - n_cat
        levels = np.unique(np.geomspace(10, max(11, n_rows // 5), num=n_cat).astype(int)).tolist()
        levels += [levels[-1]] * (n_cat - len(levels))
        numeric = rng.standard_normal((n_rows, n_num))
        effects = []
        for j in range(n_num):
            columns[f"num_{j}"] = numeric[:, j]
        for j, n_levels in enumerate(levels):
            column, effect = _categorical_column(rng, n_rows, int(n_levels))
            columns[f"cat_{j}"] = column
            if j < 3:
                effects.append(effect)
        basis = np.column_stack([_basis(numeric[:, : min(n_num, 4)]), *effects])
    else:
        X = rng.standard_normal((n_rows, n_features))
        basis = _basis(X[:, :n_informative])
        if kind == "missing":
            rate = float(options.get("missing_rate", 0.3))
            X[rng.random(X.shape) < rate] = np.nan
        for j in range(n_features):
            columns[f"x{j}"] = X[:, j]

    y_values = _labels_from_basis(basis, task, rng, options)
    if kind == "pure-noise":
        # Labels shuffled away from their rows: no feature carries any signal.
        y_values = rng.permutation(y_values)
    frame = pd.DataFrame(columns)
    y = pd.Series(y_values, name="y")
    classes: tuple[str, ...] = ()
    if task != "regression":
        present = np.unique(y_values)
        remap = {int(old): new for new, old in enumerate(present)}
        y = y.map(remap).astype("int64")
        classes = tuple(str(int(c)) for c in present)
    else:
        y = y.astype("float64")

    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(n_rows)
        frame = frame.iloc[order].reset_index(drop=True)
        y = y.iloc[order].reset_index(drop=True)
    return LoadedDataset(
        name=synthetic_name(kind, task, n_rows, n_features, seed),
        task=task,
        X=frame,
        y=y,
        source="synthetic",
        classes=classes,
    )


def make_synthetic_by_name(name: str, *, shuffle_seed: int | None = None) -> LoadedDataset:
    """Generate the dataset a synthetic name describes.

    The returned dataset keeps ``name`` as given (so a name without ``-s<seed>``
    round-trips).

    Raises:
        KeyError: Malformed name.
    """
    kind, task, n_rows, n_features, seed = parse_name(name)
    try:
        data = make_synthetic(kind, n_rows, n_features, seed, task=task, shuffle_seed=shuffle_seed)
    except ValueError as exc:
        raise KeyError(f"bad synthetic name {name!r}: {exc}") from exc
    return LoadedDataset(
        name=name, task=data.task, X=data.X, y=data.y, source=data.source, classes=data.classes
    )
