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

The code lives in the package ``benchmarks/quality_bench/`` (settings, metrics, history,
measure, methods, report, cli); this script is its entry point and re-exports its
public names, so ``from benchmarks import quality`` keeps working.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.quality_bench.cli import (  # noqa: E402
    add_arguments,
    run,
    run_from_args,
    search_subset,
    settings_from_args,
)
from benchmarks.quality_bench.history import (  # noqa: E402
    History,
    load_history,
    select_datasets,
)
from benchmarks.quality_bench.measure import (  # noqa: E402
    Bench,
    Measurement,
)
from benchmarks.quality_bench.methods import (  # noqa: E402
    HeldOut,
    RefineContext,
    RefineOutcome,
    Refiner,
    TrainingRefiner,
    corpus_method,
    default_refiner,
    held_out,
    refine_method,
    run_corpus,
    run_random,
    run_refine,
    run_search,
    run_zero_shot,
)
from benchmarks.quality_bench.metrics import (  # noqa: E402
    canonical,
    expected_min_of_k,
    map_flaml,
    regret,
    trials_equivalent,
)
from benchmarks.quality_bench.report import (  # noqa: E402
    markdown,
    plots,
    summarise,
    write_reports,
)
from benchmarks.quality_bench.settings import (  # noqa: E402
    ALL_METHODS,
    CURVE_METHODS,
    DEFAULT_OPTIMIZERS,
    FAMILIES,
    FLAML_ESTIMATORS,
    GRIDS,
    OPTIMIZERS,
    POINT_METHODS,
    QUICK_DATASETS,
    RESULTS,
    SCHEMA,
    BenchSettings,
    history_protocol,
    quick_settings,
)

__all__ = [
    "ALL_METHODS",
    "Bench",
    "BenchSettings",
    "CURVE_METHODS",
    "DEFAULT_OPTIMIZERS",
    "FAMILIES",
    "FLAML_ESTIMATORS",
    "GRIDS",
    "HeldOut",
    "History",
    "Measurement",
    "OPTIMIZERS",
    "POINT_METHODS",
    "QUICK_DATASETS",
    "RESULTS",
    "RefineContext",
    "RefineOutcome",
    "Refiner",
    "SCHEMA",
    "TrainingRefiner",
    "add_arguments",
    "canonical",
    "corpus_method",
    "default_refiner",
    "expected_min_of_k",
    "held_out",
    "history_protocol",
    "load_history",
    "map_flaml",
    "markdown",
    "plots",
    "quick_settings",
    "refine_method",
    "regret",
    "run",
    "run_corpus",
    "run_from_args",
    "run_random",
    "run_refine",
    "run_search",
    "run_zero_shot",
    "search_subset",
    "select_datasets",
    "settings_from_args",
    "summarise",
    "trials_equivalent",
    "write_reports",
]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python benchmarks/quality.py``."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_from_args(args, argv)


if __name__ == "__main__":
    sys.exit(main())
