"""The driver and the command line of the quality benchmark (``benchmarks/quality.py``
and ``hyperprior bench quality``)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.quality_bench.history import _redact, load_history, select_datasets
from benchmarks.quality_bench.measure import Bench
from benchmarks.quality_bench.methods import (
    Refiner,
    _base_record,
    default_refiner,
    run_corpus,
    run_random,
    run_refine,
    run_search,
    run_zero_shot,
)
from benchmarks.quality_bench.report import _fmt, write_reports
from benchmarks.quality_bench.settings import (
    ALL_METHODS,
    FAMILIES,
    OPTIMIZERS,
    POINT_METHODS,
    RESULTS,
    BenchSettings,
    history_protocol,
    quick_settings,
)

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
