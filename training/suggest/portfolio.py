"""The portfolio: the best measured configs per dataset, and a nearest-neighbour index
over the datasets' standardised meta-features."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hyperprior.training.features import core_metafeatures, normalise_quality, oriented_scores
from hyperprior.training.surrogate import Surrogate
from hyperprior.vocabulary import canonical_json


def _squash(x: np.ndarray) -> np.ndarray:
    # Counts span orders of magnitude; a signed log keeps one huge dataset from
    # dominating the standardisation.
    return np.sign(x) * np.log1p(np.abs(x))


@dataclass(frozen=True)
class Neighbor:
    """A dataset of the history near the query."""

    dataset: str
    name: str
    task: str
    distance: float


@dataclass(frozen=True)
class PortfolioEntry:
    """One good config measured on one dataset of the history."""

    dataset: str
    config: dict[str, Any]
    quality: float


class Portfolio:
    """Best measured configs per dataset, indexed by standardised meta-features.

    Args:
        family: the model family.
        datasets: per dataset key: ``name``, ``task``, ``meta`` (core meta-features),
            ``entries`` (list of ``{"config", "quality"}``, best first).
    """

    def __init__(self, family: str, datasets: Mapping[str, Mapping[str, Any]]) -> None:
        self.family = family
        self.names = list(core_metafeatures())
        self.keys = sorted(datasets)
        self._datasets = {k: datasets[k] for k in self.keys}
        raw = np.array(
            [
                [_as_float(datasets[k].get("meta", {}).get(m)) for m in self.names]
                for k in self.keys
            ],
            dtype=np.float64,
        ).reshape(len(self.keys), len(self.names))
        z = _squash(raw)
        known = np.isfinite(z)
        counts = known.sum(axis=0)
        safe = np.where(known, z, 0.0)
        # Mean and std over the datasets that know each meta-feature (all-unknown: 0, 1).
        self.center = safe.sum(axis=0) / np.maximum(counts, 1)
        var = (np.where(known, z - self.center, 0.0) ** 2).sum(axis=0) / np.maximum(counts, 1)
        scale = np.sqrt(var)
        self.scale = np.where(scale > 1e-9, scale, 1.0)
        self.matrix = (z - self.center) / self.scale
        # What nearest() compares: an unknown meta-feature of a dataset counts as the median.
        self._known = np.nan_to_num(self.matrix, nan=0.0)
        self.tasks = np.array([str(datasets[k].get("task", "")) for k in self.keys], dtype=object)
        # Each task's datasets, by index (comparing strings per request costs more).
        self._of_task = {str(t): np.flatnonzero(self.tasks == t) for t in set(self.tasks.tolist())}

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def from_frame(cls, runs: pd.DataFrame, family: str, *, per_dataset: int = 3) -> Portfolio:
        """Build from a runs frame: each dataset's best full-fidelity ok configs.

        Args:
            runs: ``Store.runs_frame`` rows (any family; other families are ignored).
            family: the family.
            per_dataset: how many configs to keep per dataset.
        """
        frame = runs[runs["family"] == family] if "family" in runs.columns else runs
        if "fidelity" in frame.columns:
            frame = frame[pd.to_numeric(frame["fidelity"], errors="coerce") >= 1.0 - 1e-9]
        frame = frame.reset_index(drop=True)
        if frame.empty:
            return cls(family, {})
        key = frame["dataset_id"].astype(str)
        metric = frame["metric"].astype(str) if "metric" in frame.columns else ""
        group = pd.factorize(key + "|" + metric, sort=True)[0]
        scores = oriented_scores(frame)
        quality = normalise_quality(scores, group, method="rank")
        # A dataset with fewer runs than a ranking needs (one run of a family declared a
        # minute ago) still shows which config worked there: its percentile by score.
        rough = pd.Series(scores).groupby(group).rank(pct=True).to_numpy()
        quality = np.where(np.isfinite(quality), quality, rough)
        frame = frame.assign(_key=key, _q=quality, _s=scores)
        frame = frame[frame["_s"].notna() & np.isfinite(frame["_q"])]
        mf_cols = {m: f"mf_{m}" for m in core_metafeatures() if f"mf_{m}" in frame.columns}
        datasets: dict[str, dict[str, Any]] = {}
        order = frame.sort_values(
            ["_key", "_q", "id" if "id" in frame else "_key"],
            ascending=[True, False, True],
            kind="mergesort",
        )
        for k, rows in order.groupby("_key", sort=True):
            first = rows.iloc[0]
            entries, seen = [], set()
            for config, q in zip(rows["config"], rows["_q"], strict=True):
                text = canonical_json(dict(config))
                if text in seen:
                    continue
                seen.add(text)
                entries.append({"config": dict(config), "quality": round(float(q), 6)})
                if len(entries) >= per_dataset:
                    break
            datasets[str(k)] = {
                "name": str(first.get("dataset_name", k)),
                "task": str(first.get("task", "")),
                "meta": {m: _as_float(first[c]) for m, c in mf_cols.items()},
                "entries": entries,
            }
        return cls(family, datasets)

    def to_json(self) -> dict[str, Any]:
        """JSON-able form (stored in a surrogate's metadata)."""
        return {
            k: {
                "name": d["name"],
                "task": d["task"],
                "meta": {
                    m: (None if v is None or not math.isfinite(v) else v)
                    for m, v in d.get("meta", {}).items()
                },
                "entries": d["entries"],
            }
            for k, d in self._datasets.items()
        }

    @classmethod
    def from_json(cls, family: str, data: Mapping[str, Any]) -> Portfolio:
        """Inverse of :meth:`to_json`."""
        return cls(family, data)

    def standardise(self, meta: Mapping[str, Any]) -> np.ndarray:
        """Query meta-features in the index's standardised space (NaN where unknown)."""
        raw = np.array([_as_float(meta.get(m)) for m in self.names], dtype=np.float64)
        return (_squash(raw) - self.center) / self.scale

    def nearest(self, meta: Mapping[str, Any], task: str, k: int) -> list[Neighbor]:
        """The ``k`` nearest datasets, preferring those of the same task.

        Distance is the RMS difference of standardised meta-features over the ones the
        query gives (a dataset's unknown ones count as the median).
        """
        if not len(self) or k <= 0:
            return []
        q = self.standardise(meta)
        used = np.isfinite(q)
        if not used.any():
            return []
        diff = self._known[:, used] - q[used]
        dist = np.sqrt((diff**2).mean(axis=1))
        pool = self._of_task.get(task)
        if pool is None:  # no dataset of this task: every dataset
            pool = np.arange(len(self))
        # Ties (identical meta-features) break by dataset key for determinism.
        order = pool[np.lexsort((pool, dist[pool]))]  # keys are sorted: index breaks ties
        return [
            Neighbor(
                dataset=self.keys[i],
                name=str(self._datasets[self.keys[i]]["name"]),
                task=str(self.tasks[i]),
                distance=round(float(dist[i]), 4),
            )
            for i in order[:k]
        ]

    def entries_of(self, dataset: str) -> list[PortfolioEntry]:
        """All kept configs of one dataset, best first."""
        return [
            PortfolioEntry(dataset, dict(e["config"]), float(e["quality"]))
            for e in self._datasets[dataset]["entries"]
        ]

    def name_of(self, dataset: str) -> str:
        """The human-readable name of a dataset key."""
        return str(self._datasets[dataset]["name"])

    def entries(self, neighbors: Sequence[Neighbor], per_dataset: int) -> list[PortfolioEntry]:
        """The best configs of ``neighbors``, nearest dataset first."""
        out = []
        for nb in neighbors:
            for e in self._datasets[nb.dataset]["entries"][:per_dataset]:
                out.append(PortfolioEntry(nb.dataset, dict(e["config"]), float(e["quality"])))
        return out


def _as_float(value: Any) -> float:
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out if math.isfinite(out) else math.nan


def with_portfolio(surrogate: Surrogate, portfolio: Portfolio) -> Surrogate:
    """A copy of ``surrogate`` whose metadata carries ``portfolio`` (same model text)."""
    meta = dict(surrogate.metadata)
    meta["portfolio"] = portfolio.to_json()
    return Surrogate(surrogate.text, meta)
