"""Synthetic run histories whose best config is known by construction.

Used by the surrogate's tests and the retrain scale benchmark: every dataset gets random
meta-features, and the quality of a config is a smooth function of the config's
unit-cube encoding whose optimum moves with the data: along the first dimensions it
shifts with ``log n_rows`` (e.g. the best learning rate), along the next with
``log n_features`` (e.g. the best number of leaves), and the remaining dimensions
matter less and less. Scores are ``base + scale * quality + noise`` with a different
base and scale per dataset, so raw scores are not comparable across datasets, as on
real data. :meth:`SyntheticHistory.true_quality` scores any config on any meta-features,
so a test can check how good a suggestion really is.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import qmc

from hyperprior.training.features import N_FEATURES, N_ROWS
from hyperprior.vocabulary import TASKS

_NAMESPACE = uuid.UUID("0b7b6d1e-2f6f-4b7e-9a43-58c2f1d0a9b1")


def _primary(task: str) -> tuple[str, str]:
    from hyperprior.training.families import primary_metric

    return primary_metric(task), "maximize"


@dataclass(frozen=True)
class SyntheticHistory:
    """A quality landscape for one family; see the module docstring.

    Attributes:
        family: the family whose space the configs come from.
        seed: fixes the landscape (which dimensions move with what, and how much).
    """

    family: str
    seed: int = 0

    def _space(self) -> Any:
        from hyperprior.training.spaces import get_space

        return get_space(self.family)

    def _landscape(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        d = len(self._space().dim_names)
        rng = np.random.default_rng(self.seed)
        weights = 1.0 / (1.0 + np.arange(d)) ** 1.2
        centre = rng.uniform(0.3, 0.7, d)
        rows_slope = np.zeros(d)
        feat_slope = np.zeros(d)
        rows_slope[0] = -0.18  # the first dimension's optimum falls as the data grows
        if d > 1:
            feat_slope[1] = 0.16  # the second one's rises with the number of features
        if d > 2:
            rows_slope[2] = 0.12
        return weights, centre, rows_slope, feat_slope

    def optimum(self, meta: Mapping[str, float], fidelity: float = 1.0) -> np.ndarray:
        """The unit-cube point of the best config on data described by ``meta``."""
        _, centre, rows_slope, feat_slope = self._landscape()
        z_rows = (np.log(float(meta[N_ROWS]) * fidelity) - np.log(3000.0)) / 1.5
        z_feat = (np.log(float(meta[N_FEATURES])) - np.log(20.0)) / 1.2
        return np.clip(centre + rows_slope * z_rows + feat_slope * z_feat, 0.03, 0.97)

    def true_quality(
        self,
        configs: Sequence[Mapping[str, Any]],
        meta: Mapping[str, float],
        fidelity: float = 1.0,
    ) -> np.ndarray:
        """Noise-free quality (higher is better, at most 0) of each config on ``meta``."""
        space = self._space()
        unit = np.asarray(space.encode_many(list(configs)), dtype=np.float64)
        return self._quality(unit, meta, fidelity)

    def _quality(self, unit: np.ndarray, meta: Mapping[str, float], fidelity: float) -> np.ndarray:
        weights = self._landscape()[0]
        best = self.optimum(meta, fidelity)
        u = np.nan_to_num(unit.reshape(len(unit), -1), nan=0.5)
        return -((u - best) ** 2 * weights).sum(axis=1) - 0.4 * (1.0 - fidelity)

    def sample_meta(self, rng: np.random.Generator, task: str) -> dict[str, float | int]:
        """Random valid meta-features for a dataset of ``task`` (the rest are unknown)."""
        from hyperprior.training.metafeatures import validate_metafeatures

        n_rows = int(np.round(np.exp(rng.uniform(np.log(150), np.log(200_000)))))
        n_features = int(np.round(np.exp(rng.uniform(np.log(2), np.log(400)))))
        given: dict[str, float | int] = {
            N_ROWS: n_rows,
            N_FEATURES: n_features,
            "missing_cells_frac": float(rng.uniform(0.0, 0.2)),
            "skew_mean": float(rng.normal(0.0, 1.0)),
        }
        if task != "regression":
            given["n_classes"] = 2 if task == "binary" else int(rng.integers(3, 10))
        checked = validate_metafeatures(task, given)
        # Counts stay ints: clients send them so, and the API checks them strictly.
        return {k: v for k, v in checked.items() if v is not None}

    def frame(
        self,
        n_datasets: int,
        runs_per_dataset: int,
        *,
        reduced_fidelity: float | None = 0.25,
        n_reduced: int = 8,
        noise: float = 0.03,
        failure_rate: float = 0.02,
        tasks: Sequence[str] = TASKS,
        start: int = 0,
    ) -> pd.DataFrame:
        """A run history shaped like ``Store.runs_frame`` (ok and failed runs).

        Args:
            n_datasets: how many datasets.
            runs_per_dataset: full-fidelity runs per dataset, the first the default.
            reduced_fidelity: fidelity of the extra low-fidelity runs (None: none).
            n_reduced: how many of each dataset's configs are also run at that fidelity.
            noise: score noise relative to the dataset's scale.
            failure_rate: fraction of runs that fail.
            tasks: tasks cycled over the datasets.
            start: index of the first dataset (to build disjoint histories).

        Returns:
            One row per run.
        """
        space = self._space()
        rng = np.random.default_rng(self.seed * 1_000_003 + start + 17)
        d = len(space.dim_names)
        frames: list[pd.DataFrame] = []
        sobol = qmc.Sobol(d, scramble=True, seed=self.seed + start)
        pool = sobol.random(max(64, 1 << int(np.ceil(np.log2(max(runs_per_dataset, 2) * 4)))))
        for i in range(start, start + n_datasets):
            task = tasks[i % len(tasks)]
            meta = self.sample_meta(rng, task)
            metric, direction = _primary(task)
            picks = rng.choice(len(pool), size=max(runs_per_dataset - 1, 0), replace=False)
            configs = [space.default(task)] + space.decode_many(pool[picks], task)
            unit = np.asarray(space.encode_many(configs), dtype=np.float64)
            fids = [1.0] * len(configs)
            if reduced_fidelity is not None and n_reduced > 0:
                configs = configs + configs[:n_reduced]
                unit = np.vstack([unit, unit[:n_reduced]])
                fids = fids + [reduced_fidelity] * min(n_reduced, len(fids))
            fid_arr = np.asarray(fids)
            q = np.empty(len(configs))
            for f in np.unique(fid_arr):
                q[fid_arr == f] = self._quality(unit[fid_arr == f], meta, float(f))
            base, scale = rng.uniform(0.55, 0.9), rng.uniform(0.05, 0.6)
            score = base + scale * (q + noise * rng.standard_normal(len(q)))
            if direction == "minimize":
                score = 2.0 - score
            failed = rng.uniform(size=len(q)) < failure_rate
            name = f"synthetic-{self.family}-{i:05d}"
            n = len(configs)
            columns: dict[str, Any] = {
                "id": [str(uuid.uuid5(_NAMESPACE, f"{name}|{self.seed}|{j}")) for j in range(n)],
                "dataset_id": [i] * n,
                "dataset_name": [name] * n,
                "task": [task] * n,
                "family": [self.family] * n,
                "config": configs,
                "metric": [metric] * n,
                "direction": [direction] * n,
                "score": np.where(failed, np.nan, score),
                "fidelity": fid_arr,
                "cost_seconds": rng.uniform(0.1, 5.0, n),
                "status": np.where(failed, "failed", "ok"),
                "source": ["bootstrap"] * n,
            }
            for key, value in meta.items():
                columns[f"mf_{key}"] = [value] * n
            frames.append(pd.DataFrame(columns))
        return pd.concat(frames, ignore_index=True)


def new_runs(frame: pd.DataFrame) -> list[Any]:
    """The runs of a synthetic frame as ``hyperprior.db.entities.NewRun`` objects, for a store."""
    from hyperprior.db.entities import DatasetSpec, NewRun

    mf_cols = [c for c in frame.columns if c.startswith("mf_")]
    specs: dict[Any, Any] = {}
    runs = []
    for row in frame.to_dict("records"):
        spec = specs.get(row["dataset_id"])
        if spec is None:
            meta = {c[3:]: row[c] for c in mf_cols if row[c] == row[c]}  # drop NaN
            spec = DatasetSpec(name=row["dataset_name"], task=row["task"], meta_features=meta)
            specs[row["dataset_id"]] = spec
        ok = row["status"] == "ok"
        runs.append(
            NewRun(
                id=uuid.UUID(row["id"]),
                family=row["family"],
                config=row["config"],
                metric=row["metric"],
                direction=row["direction"],
                score=float(row["score"]) if ok else None,
                fidelity=float(row["fidelity"]),
                cost_seconds=float(row["cost_seconds"]),
                source=row["source"],
                status=row["status"],
                error=None if ok else "synthetic failure",
                dataset=spec,
                metrics=row.get("metrics") if ok else None,
            )
        )
    return runs


class FrameReader:
    """A history reader over an in-memory runs frame (what tests hand the policy)."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self._frame = frame

    def runs_frame(self, *, family: str | None = None, status: str | None = "ok") -> pd.DataFrame:
        """The runs of ``family`` (all when None) with ``status`` (all when None)."""
        frame = self._frame
        if family is not None:
            frame = frame[frame["family"] == family]
        if status is not None:
            frame = frame[frame["status"] == status]
        return frame.reset_index(drop=True).copy()
