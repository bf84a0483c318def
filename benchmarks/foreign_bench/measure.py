"""Measuring: :class:`Bench` measures configs on a dataset of the collection in worker
processes and keeps every measurement in the resumable JSON."""

from __future__ import annotations

import concurrent.futures as cf
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.foreign_bench.collection import load
from benchmarks.foreign_bench.settings import CV_SEED, FOLDS, MAX_ROWS, SAMPLE_SEED, SCHEMA
from benchmarks.quality_bench.metrics import (
    _sha,
    canonical,
)

# ---------------------------------------------------------------------------------------
# Measuring


def _key(family: str, dataset: str, config_text: str) -> str:
    return _sha(f"{family}|{dataset}|{config_text}", 20)


def _measure_worker(job: tuple[str, str, str, float | None]) -> dict[str, Any]:
    """Process-pool side: one config, 3-fold CV, seed 0, the project's trial code."""
    from hyperprior.training.executor import time_limit
    from hyperprior.training.families import evaluate

    dataset, family, config_text, limit = job
    data = load(dataset)
    started = time.perf_counter()
    try:
        with time_limit(limit):
            result = evaluate(
                family,
                json.loads(config_text),
                data.X,
                data.y,
                data.task,
                fidelity=1.0,
                folds=FOLDS,
                seed=CV_SEED,
            )
    except Exception as exc:  # the time limit fires outside evaluate's own guard
        return {
            "status": "failed",
            "score": None,
            "seconds": round(time.perf_counter() - started, 3),
            "error": f"{type(exc).__name__}: {exc}"[:300],
        }
    ok = result.ok and result.score is not None and math.isfinite(float(result.score))
    out: dict[str, Any] = {
        "status": "ok" if ok else "failed",
        "score": float(result.score) if ok else None,
        "seconds": round(float(result.cost_seconds), 3),
    }
    if result.error:
        out["error"] = str(result.error)[:300]
    return out


class Bench:
    """Measurements and records, in one JSON document saved as work completes."""

    def __init__(self, path: Path, *, workers: int, time_limit: float | None) -> None:
        self.path = path
        self.workers = max(1, workers)
        self.time_limit = time_limit
        self.doc: dict[str, Any] = {"schema": SCHEMA, "measurements": {}, "records": {}}
        if path.exists():
            old = json.loads(path.read_text())
            if old.get("schema") == SCHEMA and old.get("protocol") == self.protocol():
                self.doc["measurements"] = old.get("measurements", {})
                self.doc["records"] = old.get("records", {})
                self.doc["created_at"] = old.get("created_at")
        self.doc.setdefault("created_at", _now())
        self.doc["protocol"] = self.protocol()
        self._last_save = 0.0

    @staticmethod
    def protocol() -> dict[str, Any]:
        """What makes two measurements comparable."""
        return {
            "folds": FOLDS,
            "cv_seed": CV_SEED,
            "metric": "primary (roc_auc binary, accuracy multiclass, r2 regression)",
            "fidelity": 1.0,
            "max_rows": MAX_ROWS,
            "sample_seed": SAMPLE_SEED,
        }

    def save(self, *, force: bool = True) -> None:
        """Write the JSON atomically (at most every 20 s unless forced)."""
        now = time.monotonic()
        if not force and now - self._last_save < 20.0:
            return
        self._last_save = now
        self.doc["updated_at"] = _now()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.doc, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, self.path)

    def prepare(self, family: str, config: Mapping[str, Any], task: str) -> tuple[str, dict]:
        """The validated config and its canonical text."""
        from hyperprior.training.spaces import get_space

        cfg = get_space(family).validate(dict(config), task)
        return canonical(cfg), cfg

    def key_of(self, dataset: str, family: str, config: Mapping[str, Any]) -> str:
        """The measurement key of a config (validated first)."""
        text, _ = self.prepare(family, config, load(dataset).task)
        return _key(family, dataset, text)

    def measure_all(
        self, jobs: Sequence[tuple[str, str, Mapping[str, Any], str]], *, progress: bool
    ) -> None:
        """Measure every (dataset, family, config, source) not measured yet."""
        todo: dict[str, tuple[str, str, str, dict, str]] = {}
        for dataset, family, config, source in jobs:
            text, cfg = self.prepare(family, config, load(dataset).task)
            key = _key(family, dataset, text)
            if key not in self.doc["measurements"] and key not in todo:
                todo[key] = (dataset, family, text, cfg, source)
        if not todo:
            return
        started = time.monotonic()
        done = 0
        with cf.ProcessPoolExecutor(max_workers=self.workers) as pool:
            futures = {
                pool.submit(_measure_worker, (d, f, t, self.time_limit)): k
                for k, (d, f, t, _, _) in todo.items()
            }
            try:
                for future in cf.as_completed(futures):
                    key = futures[future]
                    dataset, family, _, cfg, source = todo[key]
                    try:
                        out = future.result()
                    except (cf.process.BrokenProcessPool, cf.CancelledError):
                        # The pool went down (interrupted, or a worker killed): nothing
                        # is known about this config; keep nothing, a re-run measures it.
                        continue
                    except Exception as exc:  # noqa: BLE001 - a raising trial failed
                        out = {
                            "status": "failed",
                            "score": None,
                            "seconds": 0.0,
                            "error": f"{type(exc).__name__}: {exc}"[:300],
                        }
                    self.doc["measurements"][key] = {
                        "dataset": dataset,
                        "family": family,
                        "config": cfg,
                        "source": source,
                        **out,
                    }
                    done += 1
                    if progress:
                        score = out["score"]
                        print(
                            f"  [{done}/{len(todo)} {time.monotonic() - started:5.0f}s] "
                            f"{family:13s} {dataset:26s} {source:16s} "
                            f"{'failed' if score is None else f'{score:.4f}'} "
                            f"({out['seconds']:.1f}s)",
                            flush=True,
                        )
                    self.save(force=False)
            except KeyboardInterrupt:
                for f in futures:
                    f.cancel()
                self.save()
                raise
        self.save()

    def score(self, key: str | None) -> float | None:
        """The measured score of a key (None: failed or unknown)."""
        if key is None:
            return None
        m = self.doc["measurements"].get(key)
        return None if m is None or m["status"] != "ok" else m["score"]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
