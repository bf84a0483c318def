"""The run history the benchmark holds datasets out of: loading it and choosing the
held-out datasets."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.quality_bench.metrics import _sha
from benchmarks.quality_bench.settings import BenchSettings

# ---------------------------------------------------------------------------------------
# History


@dataclass
class History:
    """The run history the benchmark learns from and normalises by."""

    frame: Any  # pandas.DataFrame, one row per run, with dataset_name, task, mf_* columns
    source: str
    until: str | None
    fingerprint: str

    @property
    def datasets(self) -> list[str]:
        """Dataset names, sorted."""
        return sorted(self.frame["dataset_name"].astype(str).unique())

    def info(self) -> dict[str, Any]:
        """What the JSON says about the history."""
        f = self.frame
        return {
            "source": self.source,
            "until": self.until,
            "fingerprint": self.fingerprint,
            "runs": int(len(f)),
            "datasets": int(f["dataset_name"].nunique()),
            "runs_by_family": {str(k): int(v) for k, v in f.groupby("family").size().items()},
        }


def load_history(
    *, seed_dir: Path | None, database_url: str | None, until: str | None, families: Sequence[str]
) -> History:
    """The runs of ``families`` from a database (read-only) or a seed directory.

    Args:
        seed_dir: A seed directory (``training/seed``).
        database_url: A database URL (takes precedence).
        until: ISO timestamp: runs created later are ignored, so a growing database
            gives the same history on every resume (database only).
        families: Families to keep.
    """
    import pandas as pd

    from benchmarks.surrogate_cv import load_runs

    args = argparse.Namespace(database_url=database_url, seed_dir=str(seed_dir))
    frame = load_runs(args)
    frame = frame[frame["family"].isin(list(families))]
    source = database_url or str(seed_dir)
    if database_url:
        source = _redact(database_url)
        if until is None:
            until = pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds")
        created = pd.to_datetime(frame["created_at"], utc=True)
        frame = frame[created <= pd.Timestamp(until)]
    else:
        until = None
    frame = frame.reset_index(drop=True)
    ids = "\n".join(sorted(frame["id"].astype(str)))
    return History(frame=frame, source=source, until=until, fingerprint=_sha(ids, 20))


def _redact(url: str) -> str:
    # A password in a URL must not end up in a committed JSON.
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def _meta_of(history: History, dataset: str) -> dict[str, float]:
    frame = history.frame
    first = frame[frame["dataset_name"] == dataset].iloc[0]
    return {
        c[3:]: float(first[c])
        for c in frame.columns
        if c.startswith("mf_") and first[c] == first[c] and first[c] is not None
    }


def select_datasets(history: History, settings: BenchSettings) -> list[str]:
    """The held-out datasets: as named, else a seeded sample of the eligible ones.

    Eligible: in the history with full-fidelity runs of every family, and at most
    ``max_rows`` rows.
    """
    import numpy as np

    frame = history.frame
    full = frame[frame["fidelity"] >= 1.0 - 1e-9]
    per_family = [set(full[full["family"] == f]["dataset_name"]) for f in settings.families]
    eligible = sorted(set.intersection(*per_family)) if per_family else []
    if settings.max_rows is not None:
        rows = full.groupby("dataset_name")["mf_n_rows"].first()
        eligible = [d for d in eligible if float(rows.get(d, math.inf)) <= settings.max_rows]
    if settings.datasets is not None:
        missing = [d for d in settings.datasets if d not in eligible]
        if missing:
            raise ValueError(
                f"not in the history with full-fidelity runs of {list(settings.families)}: "
                f"{missing}"
            )
        return list(settings.datasets)
    if settings.n_datasets is None or settings.n_datasets >= len(eligible):
        return eligible
    rng = np.random.default_rng(settings.selection_seed)
    return sorted(str(d) for d in rng.choice(eligible, size=settings.n_datasets, replace=False))
