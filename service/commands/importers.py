"""``hyperprior import optuna|csv|mlflow``: past runs into the history.

Runs are recorded through the SDK (`client.Client`): to a service with ``--url``, else
straight into the local database. Every imported run has an id derived from where it
came from, so importing the same source twice stores nothing the second time.

Exit status: 0 imported (or nothing new), 2 bad input (the message names the row and
column, or the option; or other data under a stored dataset name), 3 the service or
database cannot be reached, 4 the service refused (no or bad API key, a run id reused
with other content).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from hyperprior.service.commands import CommandError, plural
from hyperprior.service.commands.db import add_database_url_option, database_url
from hyperprior.vocabulary import DIRECTIONS, TASKS

EXIT_UNAVAILABLE = 3
EXIT_REFUSED = 4

_EPILOG = """\
exit status: 0 imported (or nothing new), 2 bad input (other data under a stored
dataset name too), 3 service or database unreachable, 4 refused by the service (API
key, conflicting run id).

The dataset of Optuna and MLflow runs is described by one of:
  --data FILE --target COL        meta-features computed from the data, locally
  --n-rows N --n-features N ...   the basic counts only
  (neither)                       a dataset of that --dataset name already stored
A description of data stored under its name adds the runs to that dataset (and fills
in the meta-features it lacked); other data under a stored name is refused (exit 2)
unless --dataset-version gives it a version of its own.
"""


def _target_options(parser: argparse.ArgumentParser) -> None:
    target = parser.add_argument_group("where the runs go")
    target.add_argument("--url", help="a hyperprior service, e.g. http://127.0.0.1:8000")
    target.add_argument(
        "--api-key",
        default=os.environ.get("HYPERPRIOR_API_KEY"),
        help="API key with scope write for --url (default: $HYPERPRIOR_API_KEY)",
    )
    target.add_argument(
        "--retries",
        type=int,
        default=5,
        metavar="N",
        help="resend a batch up to N times on connection errors and 503 (default 5)",
    )
    add_database_url_option(parser)
    output = parser.add_argument_group("output")
    output.add_argument("--json", action="store_true", help="print a JSON summary")
    output.add_argument(
        "--dry-run", action="store_true", help="read and check the runs, record nothing"
    )
    output.add_argument("--no-progress", action="store_true", help="no progress bar")


def _dataset_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("the dataset the runs were measured on")
    group.add_argument("--dataset", required=True, metavar="NAME", help="the dataset's name")
    group.add_argument("--task", choices=TASKS, help="the task (inferred from --data)")
    group.add_argument("--data", type=Path, metavar="FILE", help="the data (.csv or .parquet)")
    group.add_argument("--target", metavar="COL", help="the target column of --data")
    group.add_argument("--n-rows", type=int, metavar="N", help="rows of the dataset")
    group.add_argument("--n-features", type=int, metavar="N", help="features of the dataset")
    group.add_argument("--n-classes", type=int, metavar="K", help="classes (classification)")
    group.add_argument(
        "--dataset-version",
        type=_version,
        metavar="N",
        help="the stored version of --dataset (default: the one holding the same data, else 1)",
    )


def _version(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a version (1, 2 ...)")
    return value


def register(subparsers: Any) -> None:
    """Add ``hyperprior import`` and its subcommands."""
    parser = subparsers.add_parser(
        "import",
        help="import past runs from Optuna, a CSV table or MLflow",
        description="Import past runs into the history, so the surrogate learns from them. "
        "Importing the same source again stores nothing new.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sources = parser.add_subparsers(dest="import_source", required=True, metavar="SOURCE")

    optuna = sources.add_parser(
        "optuna",
        help="the finished trials of an Optuna study",
        description="Read a study through Optuna's own API (any storage Optuna reads: "
        "sqlite:///study.db, postgresql://..., or a journal file ending in .log). Complete "
        "trials become ok runs, failed trials failed runs; pruned and running trials are "
        "skipped. Needs the optuna package.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    optuna.add_argument("--storage", required=True, metavar="URL", help="the study's storage")
    optuna.add_argument("--study", required=True, metavar="NAME", help="the study's name")
    optuna.add_argument("--family", required=True, help="the model family the study tuned")
    optuna.add_argument(
        "--metric", default="objective", help="what the objective returns (default: objective)"
    )
    optuna.add_argument(
        "--objective-index", type=int, default=0, help="the score's objective (multi-objective)"
    )
    _dataset_options(optuna)
    _target_options(optuna)
    optuna.set_defaults(handler=run_optuna)

    table = sources.add_parser(
        "csv",
        help="a CSV table of past runs",
        description="Columns (one row per run): dataset, task, n_rows, n_features, "
        "[n_classes], [mf_<meta-feature>...], [dataset_version], family, config (a JSON object) or "
        "param_<name> columns, metric, [direction], score (empty for failed runs), "
        "[fidelity=1], [cost_seconds=0], [status=ok], [error], [source=import], [id]. "
        "Errors name the row (and file line) and the column.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    table.add_argument("file", type=Path, help="the CSV file")
    _target_options(table)
    table.set_defaults(handler=run_csv)

    mlflow = sources.add_parser(
        "mlflow",
        help="runs of an MLflow file store (an mlruns directory)",
        description="Read an MLflow file store directly (MLflow itself is not needed): "
        "params become the config (only the family's hyperparameters), the last value of "
        "--metric the score; failed and killed runs become failed runs. A tracking server "
        "or a database backend is not read: export to CSV instead.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mlflow.add_argument("directory", type=Path, help="the mlruns directory")
    mlflow.add_argument("--experiment", help="only this experiment (name or id)")
    mlflow.add_argument("--family", required=True, help="the model family of the runs")
    mlflow.add_argument("--metric", required=True, help="the logged metric that is the score")
    mlflow.add_argument("--direction", choices=DIRECTIONS, help="default: from the metric's name")
    _dataset_options(mlflow)
    _target_options(mlflow)
    mlflow.set_defaults(handler=run_mlflow)


# ----------------------------------------------------------------------------- helpers


def _client(args: argparse.Namespace) -> Any:
    from hyperprior.client import Client, HyperpriorError

    if args.url and args.database_url:
        raise CommandError("give --url or --database-url, not both")
    try:
        if args.url:
            return Client(args.url, api_key=args.api_key, retries=args.retries)
        client = Client.local(database_url=database_url(args))
        client.retries = max(0, args.retries)
        return client
    except HyperpriorError as error:
        raise _Exit(EXIT_UNAVAILABLE, str(error)) from None


class _Exit(Exception):
    """Stop with this status and message (not a usage error)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _dataset(args: argparse.Namespace, client: Any) -> Any:
    """The runs' dataset: computed from --data, given counts, or a stored one by name."""
    from hyperprior.client import Description, HyperpriorError

    if args.data is not None:
        from hyperprior.service.commands.suggest import read_table

        if not args.target:
            raise CommandError("--data needs --target (the target column)")
        frame = read_table(args.data)
        if args.target not in frame.columns:
            raise CommandError(f"no column {args.target!r} in {args.data}")
        try:
            return client.describe(
                frame.drop(columns=[args.target]),
                frame[args.target],
                args.task,
                name=args.dataset,
                version=args.dataset_version,
            )
        except HyperpriorError as error:
            raise CommandError(str(error)) from None
    if args.n_rows is not None or args.n_features is not None:
        if args.n_rows is None or args.n_features is None or args.task is None:
            raise CommandError("--n-rows needs --n-features and --task too")
        meta: dict[str, Any] = {"n_rows": args.n_rows, "n_features": args.n_features}
        if args.n_classes is not None:
            meta["n_classes"] = args.n_classes
        elif args.task == "binary":
            meta["n_classes"] = 2
        return Description(
            name=args.dataset, task=args.task, meta_features=meta, version=args.dataset_version
        )
    try:
        found = client.datasets(name=args.dataset, task=args.task)
    except HyperpriorError as error:
        raise _Exit(_status_of(error), str(error)) from None
    if args.dataset_version is not None:
        found = [d for d in found if int(d.get("version", 1)) == args.dataset_version]
    if len(found) == 1:
        args.stored_task = str(found[0]["task"])
        return int(found[0]["id"])
    if not found:
        raise CommandError(
            f"no stored dataset named {args.dataset!r}"
            + (f" with task {args.task}" if args.task else "")
            + (f" and version {args.dataset_version}" if args.dataset_version else "")
            + ": describe it with --data FILE --target COL, or --n-rows/--n-features/--task"
        )
    stored = ", ".join(
        f"id {d['id']} ({d['task']}, version {d.get('version', 1)}, {d['n_rows']} rows)"
        for d in found
    )
    raise CommandError(
        f"{len(found)} stored datasets are named {args.dataset!r}: {stored}; pick one with "
        "--task and --dataset-version, or describe the data with --data/--n-rows"
    )


def _task(args: argparse.Namespace) -> str | None:
    """The task of the runs' dataset, when `_dataset` found a stored one."""
    return getattr(args, "stored_task", None) or args.task


def _status_of(error: Exception) -> int:
    from hyperprior.client import AuthError, ConflictError, ServiceUnavailable, ValidationError

    if isinstance(error, ServiceUnavailable):
        return EXIT_UNAVAILABLE
    if isinstance(error, ConflictError) and error.run_id is None:
        # Not a reused run id: a dataset name that holds other data, which the user fixes.
        return 2
    if isinstance(error, AuthError | ConflictError):
        return EXIT_REFUSED
    if isinstance(error, ValidationError):
        return 2
    return 1


_MAX_LISTED = 10


def _record(
    args: argparse.Namespace,
    client: Any,
    runs: list[dict[str, Any]],
    skipped: int,
    source: str,
    *,
    unit: str = "run",
    task: str | None = None,
) -> int:
    """Check the runs, record those that fit in batches with a progress bar; print the
    summary. Runs whose config the service would refuse are left out and listed."""
    from tqdm import tqdm

    from hyperprior.client import HyperpriorError
    from hyperprior.client.importers import check_runs

    read = len(runs)
    runs, rejected, flagged = check_runs(runs, task=task)
    if rejected and not runs:
        first = rejected[0]
        raise CommandError(
            f"none of the {plural(read, 'run')} from {source} fits the family's search space "
            f"(e.g. {unit} {first.index + 1}: {first.problems[0]}); nothing recorded"
        )
    if not args.json:
        for bad in rejected[:_MAX_LISTED]:
            print(
                f"hyperprior: warning: skipped {unit} {bad.index + 1} (id {bad.run_id}): "
                + "; ".join(bad.problems),
                file=sys.stderr,
            )
        if len(rejected) > _MAX_LISTED:
            print(
                f"hyperprior: warning: ... and {len(rejected) - _MAX_LISTED} more skipped",
                file=sys.stderr,
            )
    summary: dict[str, Any] = {
        "source": source,
        "read": read,
        "skipped": skipped,
        "inserted": 0,
        "duplicates": 0,
        "target": args.url or "local database",
        "dry_run": bool(args.dry_run),
    }
    # Only when there are some, so the summary of a clean import keeps its shape.
    if rejected:
        summary["invalid"] = [
            {"index": bad.index, "id": bad.run_id, "problems": list(bad.problems)}
            for bad in rejected
        ]
    if flagged:
        summary["flagged"] = flagged
    dataset_ids: dict[int, None] = {}  # first appearance order
    if not args.dry_run and runs:
        bar = tqdm(
            total=len(runs),
            unit="run",
            desc="importing",
            disable=args.no_progress or args.json or not sys.stderr.isatty(),
            file=sys.stderr,
        )
        try:
            for start in range(0, len(runs), 1000):
                batch = runs[start : start + 1000]
                try:
                    result = client.record(batch)
                except HyperpriorError as error:
                    raise _Exit(
                        _status_of(error),
                        f"{error} ({plural(summary['inserted'], 'run')} recorded before)",
                    ) from None
                summary["inserted"] += result.inserted
                summary["duplicates"] += result.duplicates
                dataset_ids.update(dict.fromkeys(result.dataset_ids))
                bar.update(len(batch))
        finally:
            bar.close()
    if dataset_ids:
        summary["dataset_ids"] = list(dataset_ids)
    notes = []
    if skipped:
        notes.append(f"{skipped} skipped (not finished)")
    if rejected:
        notes.append(f"{len(rejected)} skipped (invalid config, listed above)")
    if flagged:
        notes.append(
            f"{len(flagged)} value(s) outside the search space or without effect, stored "
            "(see --json)"
        )
    tail = "".join(f"; {note}" for note in notes)
    if args.json:
        print(json.dumps(summary, indent=2))
    elif args.dry_run:
        print(f"read {plural(read, 'run')} from {source}{tail}; nothing recorded")
    else:
        ids = ", ".join(str(i) for i in dataset_ids)
        into = f" ({'dataset' if len(dataset_ids) == 1 else 'datasets'} {ids})" if ids else ""
        print(
            f"imported {plural(len(runs), 'run')} from {source} into {summary['target']}"
            f"{into}: {summary['inserted']} new, {summary['duplicates']} already stored{tail}"
        )
    return 0


def _run(args: argparse.Namespace, work: Any) -> int:
    client = None
    try:
        client = _client(args)
        return int(work(client))
    except _Exit as stop:
        print(f"hyperprior: error: {stop}", file=sys.stderr)
        return stop.status
    finally:
        if client is not None:
            client.close()


# ----------------------------------------------------------------------------- handlers


def run_optuna(args: argparse.Namespace) -> int:
    """Import an Optuna study."""
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise CommandError(
            "reading Optuna studies needs the optuna package: pip install optuna"
        ) from None
    from hyperprior.client.importers import runs_from_optuna

    def work(client: Any) -> int:
        dataset = _dataset(args, client)
        try:
            runs, skipped = runs_from_optuna(
                args.storage,
                args.study,
                dataset=dataset,
                family=args.family,
                metric=args.metric,
                objective_index=args.objective_index,
            )
        except KeyError as error:
            raise CommandError(str(error).strip("'\"")) from None
        except Exception as error:  # noqa: BLE001 - Optuna's storage errors vary by backend
            raise CommandError(f"cannot read {args.storage}: {error}") from None
        return _record(args, client, runs, skipped, f"study {args.study!r}", task=_task(args))

    return _run(args, work)


def run_csv(args: argparse.Namespace) -> int:
    """Import a CSV table of runs."""
    from hyperprior.client.importers import RunTableError, runs_from_csv

    try:
        runs = runs_from_csv(args.file)
    except RunTableError as error:
        raise CommandError(str(error)) from None
    return _run(args, lambda client: _record(args, client, runs, 0, str(args.file), unit="row"))


def run_mlflow(args: argparse.Namespace) -> int:
    """Import an MLflow file store."""
    from hyperprior.client.importers import runs_from_mlflow

    def work(client: Any) -> int:
        dataset = _dataset(args, client)
        try:
            runs, skipped = runs_from_mlflow(
                args.directory,
                dataset=dataset,
                family=args.family,
                metric=args.metric,
                experiment=args.experiment,
                direction=args.direction,
            )
        except FileNotFoundError as error:
            raise CommandError(str(error)) from None
        return _record(args, client, runs, skipped, str(args.directory), task=_task(args))

    return _run(args, work)
