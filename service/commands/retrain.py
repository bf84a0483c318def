"""``hyperprior retrain``: fit the surrogates now, or on a schedule (``--schedule``)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from hyperprior.service.commands import CommandError, plural
from hyperprior.service.commands.db import add_database_url_option, database_url, require_database
from hyperprior.training.families import FAMILIES


def register(subparsers: Any) -> None:
    """Add ``hyperprior retrain``."""
    parser = subparsers.add_parser(
        "retrain",
        help="retrain the surrogates (promoted only if not worse), now or on a schedule",
        description=(
            "Fit a new surrogate per family on the whole run history, measure it by grouped "
            "cross-validation by dataset, register it, and activate it only if its top-1 "
            "regret is not worse than the active model's on the same data (plus "
            "--tolerance). With --schedule, keep running and retrain at the times of the "
            "cron expression (the docker-compose 'retrainer' service)."
        ),
    )
    parser.add_argument(
        "--family",
        action="append",
        metavar="NAME",
        help=(
            f"retrain only this family (repeatable; built-in: {', '.join(FAMILIES)}, or one "
            "declared with POST /v1/families; default: all of them)"
        ),
    )
    parser.add_argument(
        "--force", action="store_true", help="activate the new model whatever its metrics"
    )
    parser.add_argument(
        "--primary-only",
        action="store_true",
        help="only the primary-metric surrogates (by default, each metric that runs on at "
        "least 20 datasets measured, such as log_loss or rmse, also gets one)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        help="allowed regret increase (default: $HYPERPRIOR_RETRAIN_TOLERANCE or 0)",
    )
    parser.add_argument(
        "--schedule", action="store_true", help="run forever, retraining at the cron times"
    )
    parser.add_argument(
        "--cron", help="cron expression in UTC (default: $HYPERPRIOR_RETRAIN_CRON or 0 3 * * *)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON lines")
    parser.add_argument(
        "--export",
        type=Path,
        metavar="DIR",
        help="afterwards, write the active surrogates to DIR (FAMILY.txt + FAMILY.json)",
    )
    parser.add_argument(
        "--install",
        type=Path,
        metavar="DIR",
        help="instead of training, register the surrogates in DIR for families without an "
        "active one (sha256 checked)",
    )
    add_database_url_option(parser)
    parser.set_defaults(handler=run)


def _print(result: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result.to_dict(), sort_keys=True, default=str), flush=True)
        return
    m = result.metrics
    name = f"{result.family}@{result.target}" if result.target else result.family
    line = f"{name:14s} {result.outcome:10s}"
    if result.candidate_id is not None:
        line += f" model {result.candidate_id}"
        line += f"  regret@1 {m.get('regret_at_1', float('nan')):.4f}"
        line += f" (default {m.get('default_regret', float('nan')):.4f})"
        line += f"  ndcg@5 {m.get('ndcg_at_5', float('nan')):.4f}"
        line += f"  spearman {m.get('spearman', float('nan')):.4f}"
        line += (
            f"  {plural(result.n_runs, 'run')} / {plural(result.n_datasets, 'dataset')}"
            f"  {result.seconds:.1f}s"
        )
    print(line, flush=True)
    print(f"{'':14s} {result.reason}", flush=True)


def run(args: argparse.Namespace) -> int:
    """Retrain once, or forever on the schedule."""
    from hyperprior.db import migrate
    from hyperprior.db.engine import make_engine
    from hyperprior.db.store import Store
    from hyperprior.service.scheduler import RetrainScheduler, validate_cron
    from hyperprior.service.settings import Settings
    from hyperprior.training.retrain import retrain_family

    settings = Settings()
    url = database_url(args)
    require_database(url)
    migrate.verify_schema(url)
    store = Store(make_engine(url))
    declared = tuple(f.name for f in store.list_families())
    known = (*FAMILIES, *declared)
    unknown = [name for name in args.family or () if name not in known]
    if unknown:
        raise CommandError(
            f"unknown family {unknown[0]!r}; known: {', '.join(known)} (declare your own with "
            "`hyperprior families declare FILE.json`)"
        )
    families = tuple(args.family or known)
    tolerance = settings.retrain_tolerance if args.tolerance is None else args.tolerance
    if tolerance < 0:
        raise CommandError("--tolerance must be >= 0")

    if args.schedule:
        if args.force:
            raise CommandError("--force applies to a single retrain, not to --schedule")
        try:
            cron = validate_cron(args.cron or settings.retrain_cron)
        except ValueError as error:
            raise CommandError(str(error)) from None
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        scheduler = RetrainScheduler(
            store,
            cron=cron,
            # None: every family, declared ones included as they come.
            families=tuple(args.family) if args.family else None,
            tolerance=tolerance,
            lock_ttl_seconds=settings.retrain_lock_ttl_s,
            keep_retired=settings.surrogate_keep_retired,
            on_result=lambda result: _print(result, args.json),
            catch_up=settings.retrain_catch_up,
        )
        which = ", ".join(args.family) if args.family else "every family"
        print(f"retraining {which} at '{cron}' (UTC); Ctrl-C to stop", flush=True)
        scheduler.run_forever()
        return 0

    if args.install is not None:
        from hyperprior.training.retrain import install_shipped

        if not args.install.is_dir():
            raise CommandError(f"{args.install} is not a directory")
        for family, new_id in install_shipped(store, args.install).items():
            state = f"registered as {new_id} (active)" if new_id else "kept the active one"
            print(f"{family:14s} {state}")
        return 0

    status = 0
    for family in families:
        for result in retrain_family(
            store,
            family,
            targets=not args.primary_only,
            tolerance=tolerance,
            force=args.force,
            lock_ttl_seconds=settings.retrain_lock_ttl_s,
            keep_retired=settings.surrogate_keep_retired,
        ):
            _print(result, args.json)
            if result.outcome == "locked":
                status = 1
    if args.export is not None:
        from hyperprior.training.retrain import export_active

        for path in export_active(store, args.export, families):
            print(f"wrote {path} and {path.with_suffix('.txt')}")
    return status
