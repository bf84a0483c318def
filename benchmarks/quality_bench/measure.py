"""Measurements: :class:`Bench` measures configs on a held-out dataset with the history's
own protocol and keeps every measurement and record in the resumable JSON."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.quality_bench.history import History
from benchmarks.quality_bench.metrics import _sha, canonical
from benchmarks.quality_bench.settings import SCHEMA, BenchSettings

# ---------------------------------------------------------------------------------------
# Measurements


@dataclass(frozen=True)
class Measurement:
    """One config measured (or found in the history) on one dataset."""

    key: str
    status: str
    score: float | None
    seconds: float
    source: str

    @property
    def ok(self) -> bool:
        """Whether it produced a score."""
        return self.status == "ok" and self.score is not None


class Bench:
    """The state of a benchmark: settings, history, measurements and records.

    Everything is kept in one JSON document that is saved atomically as work completes;
    loading it again resumes where it stopped.
    """

    def __init__(
        self,
        settings: BenchSettings,
        history: History,
        path: Path,
        *,
        progress: bool = True,
        save_every: float = 20.0,
    ) -> None:
        self.settings = settings
        self.history = history
        self.path = path
        self.progress = progress
        self.save_every = save_every
        self._last_save = time.monotonic()
        self._data_cache: dict[str, Any] = {}
        self._bar: Any = None
        self.doc: dict[str, Any] = {
            "schema": SCHEMA,
            "created_at": _now(),
            "measurements": {},
            "records": {},
        }
        if path.exists():
            old = json.loads(path.read_text())
            if old.get("schema") == SCHEMA and old.get("protocol") == self.protocol():
                self.doc["created_at"] = old.get("created_at", self.doc["created_at"])
                self.doc["measurements"] = old.get("measurements", {})
                self.doc["search_datasets"] = old.get("search_datasets", {})
                self.doc["commands"] = old.get("commands", [])
                self.doc["records"] = {
                    _record_id(r["family"], r["dataset"], r["method"]): r
                    for r in old.get("records", [])
                }
        self.doc.update(
            protocol=self.protocol(),
            settings=settings.to_dict(),
            history=history.info(),
            environment=_environment(),
        )
        self._history_index = self._index_history()
        self._tasks = {
            str(k): str(v) for k, v in history.frame.groupby("dataset_name")["task"].first().items()
        }

    # -- bookkeeping --------------------------------------------------------------------

    def protocol(self) -> dict[str, Any]:
        """What makes two measurements comparable."""
        return {
            "folds": self.settings.folds,
            "cv_seed": self.settings.cv_seed,
            "metric": "primary (roc_auc binary, accuracy multiclass, r2 regression)",
            "fidelity": 1.0,
        }

    def save(self, *, force: bool = True) -> None:
        """Write the JSON atomically (at most every ``save_every`` s unless forced)."""
        now = time.monotonic()
        if not force and now - self._last_save < self.save_every:
            return
        self._last_save = now
        doc = dict(self.doc)
        doc["updated_at"] = _now()
        for rec in self.doc["records"].values():
            _compact_trials(rec)
        doc["records"] = sorted(
            self.doc["records"].values(), key=lambda r: (r["family"], r["dataset"], r["method"])
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True, default=_json_default) + "\n")
        os.replace(tmp, self.path)

    def record(self, family: str, dataset: str, method: str) -> dict[str, Any] | None:
        """The stored record of a method on a dataset, if any."""
        return self.doc["records"].get(_record_id(family, dataset, method))

    def put(self, rec: dict[str, Any]) -> None:
        """Store a record and save."""
        self.doc["records"][_record_id(rec["family"], rec["dataset"], rec["method"])] = rec
        self.save()

    def _index_history(self) -> dict[tuple[str, str, str], tuple[str, float | None, float]]:
        from hyperprior.training.spaces import get_space

        out: dict[tuple[str, str, str], tuple[str, float | None, float]] = {}
        frame = self.history.frame
        full = frame[frame["fidelity"] >= 1.0 - 1e-9]
        for row in full.itertuples(index=False):
            try:
                config = get_space(row.family).validate(row.config, row.task)
            except ValueError:
                continue
            score = float(row.score) if row.status == "ok" and row.score == row.score else None
            out[(row.family, row.dataset_name, canonical(config))] = (
                str(row.status),
                score,
                float(row.cost_seconds or 0.0),
            )
        return out

    def data(self, dataset: str) -> Any:
        """The loaded dataset (the last few are kept)."""
        if dataset not in self._data_cache:
            from hyperprior.training.datasets import load_dataset

            if len(self._data_cache) >= 3:
                self._data_cache.pop(next(iter(self._data_cache)))
            self._data_cache[dataset] = load_dataset(dataset)
        return self._data_cache[dataset]

    def task(self, dataset: str) -> str:
        """The dataset's task, from the history."""
        return self._tasks[dataset]

    # -- measuring ------------------------------------------------------------------------

    def prepare(self, family: str, config: Mapping[str, Any], task: str) -> dict[str, Any]:
        """A valid config, with ``n_estimators`` clipped in quick mode."""
        from hyperprior.training.spaces import get_space

        out = get_space(family).validate(dict(config), task)
        cap = self.settings.max_estimators
        if cap is not None and int(out.get("n_estimators", 0)) > cap:
            out["n_estimators"] = cap
        return out

    def measure(
        self,
        family: str,
        dataset: str,
        config: Mapping[str, Any],
        *,
        extras: Mapping[str, Any] | None = None,
        fresh: bool = False,
        source: str = "measured",
    ) -> Measurement:
        """Measure a config at full fidelity with the history's protocol, or look it up.

        Args:
            family: The family.
            dataset: The held-out dataset.
            config: A config (validated and, in quick mode, capped here).
            extras: Estimator arguments outside the family's space (``flaml_native``).
            fresh: Measure even when the history has this config (reproducibility check).
            source: Recorded with a new measurement.
        """
        task = self.task(dataset)
        cfg = self.prepare(family, config, task)
        extras = dict(extras or {})
        text = canonical(cfg)
        key = _sha(
            f"{family}|{dataset}|{text}|{canonical(extras)}|{self.settings.max_estimators}", 20
        )
        store = self.doc["measurements"]
        hit = store.get(key)
        if hit is not None and not (fresh and hit.get("source") == "history"):
            return _as_measurement(key, hit)
        known = None
        if not extras and self.settings.max_estimators is None:
            known = self._history_index.get((family, dataset, text))
        if known is not None and not fresh:
            status, score, seconds = known
            store[key] = self._entry(family, dataset, cfg, extras, status, score, seconds, None)
            store[key]["source"] = "history"
            return _as_measurement(key, store[key])
        if self._bar is not None:
            where = f"{family} {dataset.split('/')[-1]}: measuring"
            self._bar.set_postfix_str(where, refresh=False)
        status, score, seconds, error = self._evaluate(family, dataset, cfg, extras, task)
        entry = self._entry(family, dataset, cfg, extras, status, score, seconds, error)
        entry["source"] = source
        if known is not None:
            entry["history_score"] = known[1]
        store[key] = entry
        self.save(force=False)
        return _as_measurement(key, entry)

    def add_measured(
        self,
        family: str,
        dataset: str,
        config: Mapping[str, Any],
        *,
        status: str,
        score: float | None,
        seconds: float,
        source: str,
    ) -> Measurement | None:
        """Keep a measurement made elsewhere with the same protocol (refinement).

        Returns ``None`` (and keeps nothing) for a config the quick mode's
        ``n_estimators`` cap would have changed: its score is not that config's.
        """
        from hyperprior.training.spaces import get_space

        task = self.task(dataset)
        cfg = get_space(family).validate(dict(config), task)
        if cfg != self.prepare(family, cfg, task):
            return None
        key = _sha(f"{family}|{dataset}|{canonical(cfg)}||{self.settings.max_estimators}", 20)
        store = self.doc["measurements"]
        if key not in store:
            store[key] = self._entry(family, dataset, cfg, {}, status, score, seconds, None)
            store[key]["source"] = source
        return _as_measurement(key, store[key])

    def _entry(
        self,
        family: str,
        dataset: str,
        config: Mapping[str, Any],
        extras: Mapping[str, Any],
        status: str,
        score: float | None,
        seconds: float,
        error: str | None,
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "family": family,
            "dataset": dataset,
            "config": dict(config),
            "status": status,
            "score": score,
            "seconds": round(float(seconds), 3),
        }
        if extras:
            entry["extras"] = dict(extras)
        if error:
            entry["error"] = error[:500]
        return entry

    def _evaluate(
        self,
        family: str,
        dataset: str,
        config: Mapping[str, Any],
        extras: Mapping[str, Any],
        task: str,
    ) -> tuple[str, float | None, float, str | None]:
        from hyperprior.training.executor import time_limit
        from hyperprior.training.families import get_family
        from hyperprior.training.families.base import evaluate_family

        data = self.data(dataset)
        fam = get_family(family)
        if extras:
            fam = _with_extras(fam, extras)
        started = time.perf_counter()
        try:
            with time_limit(self.settings.trial_time_limit):
                result = evaluate_family(
                    fam,
                    config,
                    data.X,
                    data.y,
                    task,
                    fidelity=1.0,
                    folds=self.settings.folds,
                    seed=self.settings.cv_seed,
                )
        except Exception as exc:  # the time limit fires outside evaluate's own guard
            return "failed", None, time.perf_counter() - started, f"{type(exc).__name__}: {exc}"
        score = float(result.score) if result.ok and result.score is not None else None
        return result.status, score, float(result.cost_seconds), result.error


def _compact_trials(rec: dict[str, Any]) -> None:
    """Move per-trial distributions (an older layout) to the record, where they are kept once."""
    runs = rec.get("runs")
    if not runs:
        return
    dists = rec.setdefault("distributions", {})
    for trials in runs.values():
        for t in trials:
            for k, v in (t.pop("distributions", None) or {}).items():
                dists.setdefault(k, v)


def _with_extras(fam: Any, extras: Mapping[str, Any]) -> Any:
    """The family, building its estimator with ``extras`` set on the model step."""
    base_build = fam.build

    def build(config: Mapping[str, Any], task: str, n_classes: int, seed: int, fid: float) -> Any:
        estimator = base_build(config, task, n_classes, seed, fid)
        estimator.set_params(**{f"model__{k}": v for k, v in extras.items()})
        return estimator

    return dataclasses.replace(fam, build=build)


def _as_measurement(key: str, entry: Mapping[str, Any]) -> Measurement:
    return Measurement(
        key=key,
        status=str(entry["status"]),
        score=entry.get("score"),
        seconds=float(entry.get("seconds", 0.0)),
        source=str(entry.get("source", "measured")),
    )


def _record_id(family: str, dataset: str, method: str) -> str:
    return f"{family}|{dataset}|{method}"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {value!r}")


def _environment() -> dict[str, Any]:
    from importlib import metadata

    out: dict[str, Any] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    for dist in ("lightgbm", "scikit-learn", "optuna", "flaml", "torch", "numpy", "pandas"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    with contextlib.suppress(OSError):
        out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return out
