"""The seed run history shipped with the package, and its export and load.

Layout of ``training/seed/``:

* ``datasets.parquet``: one row per dataset: ``name``, ``task``, ``meta_features`` (JSON).
* ``runs.parquet``: one row per run; datasets are referenced by name, so the seed does
  not depend on any database's ids.
* ``manifest.json``: the command that made it, package versions, date and counts.

Loading is idempotent: run ids are fixed, so a second load only finds duplicates.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from hyperprior.db.store import DatasetSpec, NewRun, Store
from hyperprior.training.bootstrap import BootstrapConfig
from hyperprior.vocabulary import canonical_json, finite_or_none

SEED_DIR = Path(__file__).resolve().parent / "seed"

_RUN_COLUMNS = [
    "id",
    "dataset",
    "family",
    "config",
    "metric",
    "direction",
    "score",
    "fidelity",
    "cost_seconds",
    "status",
    "error",
    "source",
    "metrics",
]


@dataclass(frozen=True)
class SeedLoadResult:
    """What a seed load did."""

    runs: int
    inserted: int
    duplicates: int
    datasets: int


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in (
        "hyperprior",
        "lightgbm",
        "xgboost-cpu",
        "scikit-learn",
        "tensorflow-cpu",
        "pandas",
        "numpy",
    ):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def export_seed(
    store: Store,
    directory: Path = SEED_DIR,
    *,
    command: str = "",
    sources: tuple[str, ...] = ("bootstrap",),
) -> dict[str, Any]:
    """Write the store's runs of ``sources`` as the seed history and return the manifest.

    Args:
        store: the database to export from.
        directory: where to write ``datasets.parquet``, ``runs.parquet`` and the manifest.
        command: the command line that produced the runs, recorded in the manifest.
        sources: which run sources to export.

    Returns:
        The manifest that was written.
    """
    frame = store.runs_frame(status=None)
    frame = frame[frame["source"].isin(sources)]
    directory.mkdir(parents=True, exist_ok=True)

    mf_cols = [c for c in frame.columns if c.startswith("mf_")]
    ds_rows = []
    for name, group in frame.groupby("dataset_name", sort=True):
        first = group.iloc[0]
        mf = {
            c[3:]: float(first[c]) for c in mf_cols if finite_or_none(first[c]) is not None
        }
        ds_rows.append(
            {"name": name, "task": first["task"], "meta_features": json.dumps(mf, sort_keys=True)}
        )
    datasets = pd.DataFrame(ds_rows, columns=["name", "task", "meta_features"])

    runs = pd.DataFrame(
        {
            "id": frame["id"].astype(str),
            "dataset": frame["dataset_name"],
            "family": frame["family"],
            "config": [canonical_json(c) for c in frame["config"]],
            "metric": frame["metric"],
            "direction": frame["direction"],
            "score": frame["score"].astype(float),
            "fidelity": frame["fidelity"].astype(float),
            "cost_seconds": frame["cost_seconds"].astype(float),
            "status": frame["status"],
            "error": frame["error"],
            "source": frame["source"],
            "metrics": [
                None if not isinstance(m, dict) else json.dumps(m, sort_keys=True)
                for m in frame["metrics"]
            ],
        }
    )[_RUN_COLUMNS].sort_values(["dataset", "family", "id"], kind="stable")

    datasets.to_parquet(directory / "datasets.parquet", index=False, compression="zstd")
    runs.to_parquet(directory / "runs.parquet", index=False, compression="zstd")

    counts_runs: dict[str, dict[str, int]] = {}
    sizes = runs.groupby(["family", "fidelity", "status"]).size()
    for (family, fidelity, status), n in sizes.items():
        counts_runs.setdefault(str(family), {})[f"fidelity={fidelity:g},{status}"] = int(n)
    manifest = {
        "created_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "command": command,
        "versions": _versions(),
        "datasets": int(len(datasets)),
        "datasets_by_task": {str(k): int(v) for k, v in datasets["task"].value_counts().items()},
        "runs": int(len(runs)),
        "runs_by_family": {str(k): int(v) for k, v in runs["family"].value_counts().items()},
        "runs_by_family_fidelity_status": counts_runs,
        "configs_per_dataset_family_full_fidelity": {
            str(fam): {
                "min": int(s.min()),
                "median": float(s.median()),
            }
            for fam, s in runs[runs["fidelity"] == 1.0]
            .groupby(["family", "dataset"])
            .size()
            .groupby(level=0)
        },
        "coverage": coverage(runs, datasets),
        # Wall-clock seconds per trial, summed: CPU seconds for one-thread trials on an
        # otherwise idle core.
        "trial_cpu_seconds": float(runs["cost_seconds"].sum()),
        "trial_seconds_by_family": {
            str(k): round(float(v), 1)
            for k, v in runs.groupby("family")["cost_seconds"].sum().items()
        },
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def coverage(runs: pd.DataFrame, datasets: pd.DataFrame) -> dict[str, Any]:
    """How many datasets reach the target number of full-fidelity configs, per family.

    Args:
        runs: seed runs (``dataset``, ``family``, ``config``, ``fidelity``).
        datasets: seed datasets (``name``, ``task``).

    Returns:
        ``targets`` (configs per family), ``datasets_at_target`` per family and task,
        and ``every_family`` (datasets where every family present in the seed is at
        its target), with its split by task.
    """
    full = runs[runs["fidelity"] >= 1.0 - 1e-9]
    configs = full.groupby(["family", "dataset"])["config"].nunique()
    families = sorted(runs["family"].unique())
    # What a seed should hold per (dataset, family): the bootstrap's default counts.
    targets = {f: BootstrapConfig().configs_for(f) for f in families}
    task_of = dict(zip(datasets["name"], datasets["task"], strict=True))
    at_target: dict[str, set[str]] = {
        f: {d for (fam, d), n in configs.items() if fam == f and n >= targets[f]} for f in families
    }

    def by_task(names: set[str]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for name in names:
            task = str(task_of.get(name, "unknown"))
            counts[task] = counts.get(task, 0) + 1
        return dict(sorted(counts.items()))

    every = set.intersection(*at_target.values()) if at_target else set()
    return {
        "targets": targets,
        "datasets_at_target": {
            f: {"total": len(at_target[f]), "by_task": by_task(at_target[f])} for f in families
        },
        "every_family": {"total": len(every), "by_task": by_task(every)},
    }


def read_seed(directory: Path = SEED_DIR) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The seed's datasets and runs frames; empty frames when no seed is shipped."""
    ds_path, runs_path = directory / "datasets.parquet", directory / "runs.parquet"
    if not ds_path.exists() or not runs_path.exists():
        return pd.DataFrame(columns=["name", "task", "meta_features"]), pd.DataFrame(
            columns=_RUN_COLUMNS
        )
    return pd.read_parquet(ds_path), pd.read_parquet(runs_path)


def load_seed(
    store: Store,
    directory: Path = SEED_DIR,
    *,
    batch_size: int = 5000,
    progress: Callable[[int], None] | None = None,
) -> SeedLoadResult:
    """Load the seed history into ``store``; a second load inserts nothing.

    Args:
        store: the target database (migrated to head).
        directory: the seed directory.
        batch_size: runs per transaction.
        progress: called with the number of runs handled after each batch.

    Returns:
        How many runs were in the seed, inserted and already present.
    """
    datasets, runs = read_seed(directory)
    specs = {
        row.name: DatasetSpec(
            name=row.name, task=row.task, meta_features=json.loads(row.meta_features)
        )
        for row in datasets.itertuples(index=False)
    }
    inserted = duplicates = 0
    records = runs.to_dict("records")
    for start in range(0, len(records), batch_size):
        batch = [
            NewRun(
                id=r["id"],
                family=r["family"],
                config=json.loads(r["config"]),
                metric=r["metric"],
                direction=r["direction"],
                score=finite_or_none(r["score"]),
                fidelity=float(r["fidelity"]),
                cost_seconds=float(r["cost_seconds"]),
                source=r["source"],
                status=r["status"],
                error=finite_or_none(r["error"]),
                dataset=specs[r["dataset"]],
                metrics=json.loads(m) if isinstance(m := r.get("metrics"), str) else None,
            )
            for r in records[start : start + batch_size]
        ]
        result = store.ingest_runs(batch)
        if result.duplicates:
            # A database seeded before the seed had every metric gains them now.
            store.add_run_metrics({run.id: run.metrics for run in batch if run.metrics})
        inserted += result.inserted
        duplicates += result.duplicates
        if progress is not None:
            progress(len(batch))
    return SeedLoadResult(
        runs=len(records), inserted=inserted, duplicates=duplicates, datasets=len(specs)
    )
