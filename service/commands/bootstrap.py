"""``hyperprior bootstrap``: real trials over the dataset catalog, recorded as runs."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from typing import Any

from hyperprior.service.commands import CommandError, plural
from hyperprior.service.commands.db import add_database_url_option, database_url, require_database
from hyperprior.training.families import FAMILIES
from hyperprior.vocabulary import TASKS


def _csv(kind: type, allowed: tuple[str, ...] | None = None) -> Any:
    def parse(text: str) -> tuple[Any, ...]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError("expected a comma-separated list")
        if allowed is not None:
            unknown = [t for t in items if t not in allowed]
            if unknown:
                raise argparse.ArgumentTypeError(
                    f"unknown {', '.join(unknown)} (choose from {', '.join(allowed)})"
                )
        try:
            return tuple(kind(t) for t in items)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def register(subparsers: Any) -> None:
    """Add ``hyperprior bootstrap``."""
    parser = subparsers.add_parser(
        "bootstrap",
        help="run real trials over the dataset catalog and record them as runs",
        description=(
            "Run the library default plus a scrambled Sobol sample of each family's space "
            "on every selected catalog dataset, at full fidelity and (for the first few "
            "configs) at reduced fidelities, and record every trial as a run with source "
            "'bootstrap'. On large datasets (--large-rows) only the first configs run at full "
            "fidelity and every config at the reduced ones. "
            "Resumable: trials already stored are skipped, so running the same "
            "command twice measures nothing new."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--families",
        type=_csv(str, tuple(FAMILIES)),
        default=tuple(FAMILIES),
        metavar="F[,F...]",
        help="model families to run",
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        metavar="NAME",
        help="catalog names, run in the order given (`hyperprior bootstrap --list` shows the "
        "catalog); default: the whole catalog, cheapest first",
    )
    parser.add_argument("--task", choices=TASKS, help="only datasets of this task")
    parser.add_argument("--min-rows", type=int, help="only datasets with at least this many rows")
    parser.add_argument("--max-rows", type=int, help="only datasets with at most this many rows")
    parser.add_argument(
        "--limit-datasets",
        type=int,
        metavar="N",
        help="only the first N datasets of the selection (the N cheapest of the catalog)",
    )
    parser.add_argument(
        "--configs", type=int, default=48, help="configs per (dataset, family), default included"
    )
    parser.add_argument(
        "--keras-configs", type=int, default=16, help="configs per dataset for keras_mlp"
    )
    parser.add_argument(
        "--reduced-fidelities",
        type=_csv(float),
        default=(0.25,),
        metavar="F[,F...]",
        help="reduced fidelities (fraction of rows, or of epochs for keras_mlp)",
    )
    parser.add_argument(
        "--reduced-configs",
        type=int,
        default=12,
        help="how many of each (dataset, family)'s configs also run at reduced fidelities",
    )
    parser.add_argument(
        "--large-rows",
        type=int,
        default=50_000,
        metavar="N",
        help="datasets with at least N rows get the large-data plan: only the first "
        "--large-full-configs configs at full fidelity, every config at the reduced "
        "fidelities (0: no large-data plan)",
    )
    parser.add_argument(
        "--large-full-configs",
        type=int,
        default=8,
        metavar="K",
        help="on large datasets, how many configs (the default and the first K-1 Sobol "
        "ones) run at full fidelity",
    )
    parser.add_argument("--folds", type=int, default=3, help="cross-validation folds")
    parser.add_argument("--seed", type=int, default=0, help="seed of sampling and CV splits")
    parser.add_argument(
        "--time-limit", type=float, default=300.0, help="seconds per trial before it fails"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="local worker processes (0 runs trials in this process)",
    )
    parser.add_argument(
        "--dask-scheduler",
        metavar="ADDRESS",
        # The same variable the API's refinement jobs read (docker-compose sets it).
        default=os.environ.get("HYPERPRIOR_DASK_SCHEDULER") or None,
        help="run trials on this Dask scheduler (tcp://HOST:PORT) instead of local workers "
        '(default: $HYPERPRIOR_DASK_SCHEDULER; "" for local workers)',
    )
    parser.add_argument(
        "--adaptive",
        type=int,
        default=0,
        metavar="N",
        help="after the Sobol sample of --configs, N more configs per (dataset, family) from "
        "a local search around its best stored configs (rounds of 4, steps shrinking), so "
        "each dataset's best known config is near its optimum",
    )
    parser.add_argument(
        "--adaptive-only",
        action="store_true",
        help="with --adaptive: skip the Sobol trials of --configs that are not stored yet "
        "and run only the adaptive ones (configs stored beyond that Sobol plan count as "
        "adaptive), so datasets sampled with fewer configs get their local search now",
    )
    parser.add_argument(
        "--remeasure",
        action="store_true",
        help="instead of new trials, re-run the stored ones that have no metrics (measured "
        "before every metric was recorded) and add their metrics; scores are kept",
    )
    parser.add_argument(
        "--metafeatures",
        action="store_true",
        help="instead of trials, compute the selected stored datasets' meta-features again "
        "and add those their records lack (one added since they were stored); stored "
        "values are kept",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print how many trials would run, run none"
    )
    parser.add_argument(
        "--list",
        action="store_true",
        help="print the selected catalog datasets (name, task, rows, features), run none",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_database_url_option(parser)
    parser.set_defaults(handler=run)


def _print_entries(entries: list[Any], config: Any, *, as_json: bool) -> None:
    # plan: "large" datasets run only the first configs at full fidelity.
    rows = [
        {
            "name": e.name,
            "task": e.task,
            "rows": e.rows,
            "features": e.features,
            "plan": "large" if config.is_large(e.rows) else "full",
        }
        for e in entries
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    width = max(len(r["name"]) for r in rows)
    print(f"{'name':<{width}}  {'task':<10}  {'rows':>7}  {'features':>8}  plan")
    for r in rows:
        print(
            f"{r['name']:<{width}}  {r['task']:<10}  {r['rows']:>7}  {r['features']:>8}  "
            f"{r['plan']}"
        )


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    """Plan the trials, skip those already stored, run the rest."""
    from hyperprior.db import migrate
    from hyperprior.db.engine import make_engine
    from hyperprior.db.store import Store
    from hyperprior.training.bootstrap import (
        BootstrapConfig,
        BootstrapReport,
        bootstrap,
        plan_summary,
        plan_trials,
        refresh_metafeatures,
        run_adaptive,
    )
    from hyperprior.training.datasets import get_entry, list_datasets
    from hyperprior.training.executor import make_executor

    for name in ("configs", "keras_configs", "folds"):
        if getattr(args, name) < 1:
            raise CommandError(f"--{name.replace('_', '-')} must be at least 1")
    if args.folds < 2:
        raise CommandError("--folds must be at least 2")
    if any(not 0 < f < 1 for f in args.reduced_fidelities):
        raise CommandError("--reduced-fidelities must lie strictly between 0 and 1")
    if args.workers < 0:
        raise CommandError("--workers must be 0 or more")
    if args.adaptive < 0:
        raise CommandError("--adaptive must be 0 or more")
    if sum(map(bool, (args.adaptive, args.remeasure, args.metafeatures))) > 1:
        raise CommandError(
            "--adaptive, --remeasure and --metafeatures are separate jobs: run one at a time"
        )
    if args.adaptive_only and not args.adaptive:
        raise CommandError("--adaptive-only needs --adaptive N (how many adaptive configs)")
    if args.large_rows < 0:
        raise CommandError("--large-rows must be 0 (no large-data plan) or more")
    if args.large_full_configs < 1:
        raise CommandError("--large-full-configs must be at least 1 (the default)")

    if args.datasets:
        try:
            entries = [get_entry(n) for n in args.datasets]
        except KeyError as error:
            raise CommandError(str(error.args[0] if error.args else error)) from None
    else:
        entries = list_datasets(task=args.task, min_rows=args.min_rows, max_rows=args.max_rows)
        # Cheapest first, so an interrupted bootstrap still covers many datasets.
        entries = sorted(entries, key=lambda e: (e.rows * max(e.features, 1), e.name))
    if args.limit_datasets is not None:
        entries = entries[: args.limit_datasets]
    if not entries:
        raise CommandError("no catalog dataset matches the selection")

    config = BootstrapConfig(
        families=tuple(args.families),
        n_configs=args.configs,
        n_configs_keras=args.keras_configs,
        reduced_fidelities=tuple(args.reduced_fidelities),
        n_reduced=args.reduced_configs,
        folds=args.folds,
        seed=args.seed,
        time_limit_seconds=args.time_limit,
        large_rows=args.large_rows or None,
        large_full_configs=args.large_full_configs,
    )
    if args.list:
        _print_entries(entries, config, as_json=args.json)
        return 0
    specs = plan_trials(
        [(e.name, e.task) for e in entries], config, rows={e.name: e.rows for e in entries}
    )

    url = database_url(args)
    require_database(url)
    migrate.verify_schema(url)
    store = Store(make_engine(url))
    if args.metafeatures:
        looked, filled = refresh_metafeatures(
            store, [e.name for e in entries], progress=not args.no_progress
        )
        print(
            f"bootstrap: meta-features of {plural(looked, 'stored dataset')} computed again, "
            f"{filled} gained new ones"
        )
        return 0
    if args.dry_run:
        if args.remeasure:
            todo = len(store.runs_without_metrics(s.run_id for s in specs))
            print(
                f"{plural(len(entries), 'dataset')}, {plural(len(specs), 'trial')} planned, "
                f"{todo} to re-measure"
            )
            return 0
        todo = 0
        if not args.adaptive_only:
            done = store.existing_run_ids(s.run_id for s in specs)
            todo = sum(1 for s in specs if s.run_id not in done)
        more = f" (then up to {args.adaptive} adaptive per dataset and family)"
        print(
            f"{plural(len(entries), 'dataset')}, {plural(len(specs), 'trial')} planned, "
            f"{todo} still to run" + (more if args.adaptive else "")
        )
        large = sum(config.is_large(e.rows) for e in entries)
        print(f"plan: {plan_summary(config)} ({large} of the datasets are large)")
        return 0

    executor = make_executor(workers=args.workers, dask_scheduler=args.dask_scheduler)
    # A long bootstrap is often stopped with SIGTERM (kill, docker stop; and background
    # jobs ignore SIGINT): unwind like Ctrl-C, so the trials already measured are stored.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        report = (
            BootstrapReport()
            if args.adaptive_only
            else bootstrap(
                store, specs, executor, progress=not args.no_progress, remeasure=args.remeasure
            )
        )
        if args.adaptive:
            adaptive = run_adaptive(
                store,
                [(e.name, e.task) for e in entries],
                config,
                executor,
                n_adaptive=args.adaptive,
                progress=not args.no_progress,
            )
            report.add(adaptive)
    except KeyboardInterrupt:
        print(
            "bootstrap: interrupted; the trials measured so far are stored "
            "(trials in flight are dropped: the next run measures them)",
            file=sys.stderr,
        )
        raise
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
        executor.close()
    if args.json:
        print(json.dumps(report.__dict__, indent=2))
    else:
        print(
            f"bootstrap: {report.planned} planned, {report.skipped} already stored, "
            f"{report.ran} ran ({report.failed} failed), {report.inserted} recorded"
            + (f", {report.remeasured} re-measured" if args.remeasure else "")
            + f" in {report.seconds:.0f} s",
            file=sys.stdout,
        )
    return 0
