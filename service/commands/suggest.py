"""``hyperprior suggest DATA.csv --target COL --family F``: suggestions for a local file."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hyperprior.service.commands import CommandError
from hyperprior.service.commands.db import add_database_url_option, database_url, require_database
from hyperprior.training.families import FAMILIES
from hyperprior.training.metafeatures import infer_task
from hyperprior.vocabulary import TASKS

if TYPE_CHECKING:
    import pandas as pd

    from hyperprior.client import Client, Suggestions


def register(subparsers: Any) -> None:
    """Add ``hyperprior suggest``."""
    parser = subparsers.add_parser(
        "suggest",
        help="suggest hyperparameters for a CSV or Parquet file",
        description=(
            "Compute the file's meta-features locally (the data never leaves this machine) "
            "and print the suggested configs: from a running service with --url, else "
            "straight from the local database and its active surrogate."
        ),
    )
    parser.add_argument("data", type=Path, help="a .csv or .parquet file")
    parser.add_argument("--target", required=True, help="the target column")
    parser.add_argument("--family", required=True, choices=tuple(FAMILIES), help="model family")
    parser.add_argument(
        "--task", choices=TASKS, help="the task (default: inferred from the target)"
    )
    parser.add_argument("--n", type=int, default=5, help="how many suggestions (1-50)")
    parser.add_argument(
        "--metric",
        help="the metric you will judge by (log_loss, f1_macro, balanced_accuracy, rmse, "
        "mae ...): ranked by it when the history has a surrogate of it",
    )
    parser.add_argument("--seed", type=int, help="same seed, same suggestions")
    parser.add_argument(
        "--fixed",
        action="append",
        default=[],
        metavar="PARAM=VALUE",
        help="force a parameter on every suggestion (VALUE is JSON, e.g. num_leaves=63)",
    )
    parser.add_argument("--json", action="store_true", help="print the API's JSON")
    parser.add_argument("--url", help="a hyperprior service, e.g. http://127.0.0.1:8000")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("HYPERPRIOR_API_KEY"),
        help="API key for --url when the service wants one (default: $HYPERPRIOR_API_KEY)",
    )
    parser.add_argument(
        "--refine",
        action="store_true",
        help="then verify the suggestions on the file by successive halving, in local "
        "processes, and record the runs to --url or the local database",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar for --refine")
    parser.add_argument(
        "--budget",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="wall-clock budget of --refine's trials (default 120)",
    )
    add_database_url_option(parser)
    parser.set_defaults(handler=run)


def read_table(path: Path) -> Any:
    """A DataFrame from a CSV or Parquet file."""
    import pandas as pd

    if not path.exists():
        raise CommandError(f"{path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except Exception as error:  # noqa: BLE001 - any reader error is the user's file
        raise CommandError(f"cannot read {path}: {error}") from None


def _parse_fixed(items: list[str]) -> dict[str, Any]:
    fixed: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise CommandError(f"--fixed expects PARAM=VALUE, got {item!r}")
        try:
            fixed[name] = json.loads(raw)
        except json.JSONDecodeError:
            fixed[name] = raw  # a bare word is a string choice (max_features=sqrt)
    return fixed


#: Fewest labelled rows worth refining on (as the refinement upload API asks).
MIN_REFINE_ROWS = 30


def _rows(count: int) -> str:
    return f"{count} row{'' if count == 1 else 's'}"


def check_target(y: Any, name: str, task: str | None, *, refine: bool = False) -> str:
    """Check a target column before any work; return the task (given or inferred).

    The same checks as a refinement upload (`hyperprior.service.uploads.check_target`): a constant
    target (one class, with or without missing values), a task that does not fit the
    target, and with ``refine`` too few rows or a class too small to cross-validate.

    Raises:
        CommandError: One line that says what is wrong and what to do.
    """
    from hyperprior.service.uploads import task_mismatch

    labelled = y.dropna()
    values = labelled.unique()
    if len(values) < 2:
        missing = len(y) - len(labelled)
        raise CommandError(
            f"the target {name!r} has a single value ({_plain(values[0])!s} in every row"
            + (f"; {_rows(missing)} without a value" if missing else "")
            + "): nothing to learn; pick another --target"
        )
    if task is not None:
        problem = task_mismatch(labelled, task)
        if problem is not None:
            raise CommandError(f"--task {task}: {problem}")
    task = task or infer_task(labelled)
    if refine:
        if task != "regression":
            counts = labelled.astype(str).value_counts()
            if int(counts.min()) < 2:
                raise CommandError(
                    f"class {counts.idxmin()} has {_rows(int(counts.min()))}: --refine "
                    "cross-validates, which needs at least 2 rows of every class "
                    "(add rows, or drop that class)"
                )
        if len(labelled) < MIN_REFINE_ROWS:
            raise CommandError(
                f"--refine needs at least {MIN_REFINE_ROWS} rows with a target to compare "
                f"configs by cross-validation; the file has {len(labelled)}"
            )
    return task


def _plain(value: Any) -> Any:
    """numpy scalars as plain Python values, so messages read 1, not np.int64(1)."""
    return value.item() if hasattr(value, "item") else value


def read_data(args: argparse.Namespace) -> tuple[pd.DataFrame, pd.Series, str]:
    """Features, target and task of the file in ``args``, checked before any work."""
    frame = read_table(args.data)
    if args.target not in frame.columns:
        raise CommandError(f"no column {args.target!r} in {args.data}")
    y = frame[args.target]
    X = frame.drop(columns=[args.target])
    if X.shape[1] == 0 or y.notna().sum() < 2:
        raise CommandError(f"{args.data} needs feature columns and at least two target values")
    task = check_target(y, args.target, args.task, refine=bool(getattr(args, "refine", False)))
    return X, y, task


def open_client(args: argparse.Namespace) -> Client:
    """The SDK client the command asks: the service of ``--url``, else the local database
    (which must exist and be at the newest schema: this command creates none)."""
    from hyperprior.client import Client

    if args.url:
        return Client(args.url, api_key=args.api_key)
    from hyperprior.db import migrate

    url = database_url(args)
    require_database(url)
    migrate.verify_schema(url)
    return _sdk_call(args, lambda: Client.local(database_url=url))


def ask(client: Client, args: argparse.Namespace, X: Any, y: Any, task: str) -> Suggestions:
    """Describe the data (here: it never leaves this machine) and ask for suggestions."""
    from hyperprior.client import HyperpriorError, HyperpriorWarning

    try:
        description = client.describe(X, y, task, name=args.data.stem)
    except HyperpriorError as error:  # what the checks of read_data cannot foresee
        cause = error.message.removeprefix("cannot describe the data: ")
        raise CommandError(f"cannot describe {args.data}: {cause}") from None
    with warnings.catch_warnings():
        # An empty local history is said below, in the CLI's own words.
        warnings.simplefilter("ignore", HyperpriorWarning)
        suggestions = _sdk_call(
            args,
            lambda: client.suggest(
                description,
                None,
                args.family,
                n=args.n,
                seed=args.seed,
                fixed=_parse_fixed(args.fixed) or None,
                metric=args.metric or None,
            ),
        )
    if client.mode == "local" and suggestions.surrogate is None and client.stats()["runs"] == 0:
        problem = (
            f"the database {database_url(args)} holds no runs, so it can only suggest the "
            "library default: load the shipped history with `hyperprior db seed`, or point "
            "--database-url at the service's database"
        )
        if not args.refine:
            raise CommandError(problem)
        # Refining the default alone still measures something and starts a history.
        print(f"hyperprior: warning: {problem}", file=sys.stderr)
    return suggestions


def _sdk_call(args: argparse.Namespace, call: Callable[[], Any]) -> Any:
    """``call()``, with the SDK's errors as one line: ``URL answered 422: ...``."""
    from hyperprior.client import HyperpriorError

    try:
        return call()
    except HyperpriorError as error:
        if args.url and error.status_code is not None:
            raise CommandError(f"{args.url} answered {error}") from None
        raise CommandError(str(error)) from None


def refine_command(
    client: Client,
    args: argparse.Namespace,
    X: Any,
    y: Any,
    suggestions: Suggestions,
    progress: Callable[[Mapping[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """What ``hyperprior suggest ... --refine`` adds to its answer (as ``"refined"``).

    Verifies the suggestions on the file by successive halving with `Client.refine`:
    the data never leaves this machine (trials run in local worker processes under a
    memory limit), and the measured runs are recorded where the suggestions came from.
    """
    if not args.budget > 0:
        raise CommandError("--budget must be a positive number of seconds")
    failures = _RecordFailures()
    # One warning line below instead of a log line per run the history refused.
    refine_log = logging.getLogger("hyperprior.training.refine")
    refine_log.addHandler(failures)
    try:
        refined = _sdk_call(
            args,
            lambda: client.refine(
                X,
                y,
                args.family,
                args.budget,
                n=args.n,
                seed=args.seed or 0,
                suggestions=suggestions,
                fill=True,
                workers=None,
                memory_limit_mb=4096.0,
                progress=progress,
            ),
        )
    finally:
        refine_log.removeHandler(failures)
    answer = dict(refined.raw)
    measured = sum(1 for t in answer["trials"] if t["status"] != "cut")
    recorded = sum(1 for t in answer["trials"] if t.get("run_id"))
    answer["recorded"] = {"to": args.url or "local database", "runs": recorded}
    if recorded < measured:
        print(
            f"hyperprior: warning: {measured - recorded} of {measured} runs not recorded to "
            f"{args.url or 'the local database'}: {failures.last}",
            file=sys.stderr,
        )
    return answer


class _RecordFailures(logging.Handler):
    """Keeps why the last run could not be recorded; other warnings print as before."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last = "see the notes"

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("could not record") and record.args:
            self.last = str(record.args[0] if isinstance(record.args, tuple) else record.args)
        else:
            print(record.getMessage(), file=sys.stderr)


def format_table(answer: dict[str, Any]) -> str:
    """A human-readable table of an answer."""
    lines = []
    surrogate = answer.get("surrogate")
    if surrogate:
        lines.append(
            f"surrogate {surrogate['id']} (trained {surrogate['trained_at']}, "
            f"{surrogate['n_runs']} runs)"
        )
    else:
        lines.append("no surrogate: library default and portfolio only")
    if answer.get("ranked_by"):
        lines.append(f"ranked by {answer['ranked_by']}")
    if surrogate:
        lines.append(
            "order: a pessimistic score (the mean minus its spread), so 'quality' (the mean) "
            "need not fall with rank"
        )
    if answer.get("distance") is not None:
        threshold = answer.get("distance_threshold")
        lines.append(
            f"distance to the nearest dataset in the history: {answer['distance']:.2f}"
            + ("" if threshold is None else f" (validated up to {threshold:.2f})")
        )
    lines.append(
        f"{'rank':>4}  {'quality':>7}  {'interval':>13}  {'p>default':>9}  {'source':9}  config"
    )
    for s in answer["suggestions"]:
        quality = "" if s["predicted_quality"] is None else f"{s['predicted_quality']:.3f}"
        interval = "" if s["interval"] is None else "[{:.2f}, {:.2f}]".format(*s["interval"])
        p_beats = "" if s.get("p_beats_default") is None else f"{s['p_beats_default']:.2f}"
        config = " ".join(f"{k}={_short(v)}" for k, v in s["config"].items())
        lines.append(
            f"{s['rank']:>4}  {quality:>7}  {interval:>13}  {p_beats:>9}  {s['source']:9}  {config}"
        )
    for warning in answer.get("warnings", []):
        lines.append(f"warning: {warning}")
    return "\n".join(lines)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def run(args: argparse.Namespace) -> int:
    """Print suggestions for the file."""
    if not 1 <= args.n <= 50:
        raise CommandError("--n must be between 1 and 50")
    X, y, task = read_data(args)
    with open_client(args) as client:
        suggestions = ask(client, args, X, y, task)
        answer = suggestions.to_json()
        if args.refine:
            with _progress_bar(args) as progress:
                answer["refined"] = refine_command(
                    client, args, X, y, suggestions, progress=progress
                )
    print(json.dumps(answer, indent=2) if args.json else format_table(answer))
    if args.refine and not args.json:
        print(format_refinement(answer["refined"]))
    if args.refine and answer["refined"].get("config") is None:
        # Nothing verified is a failure, whatever was printed above: say why, exit 2.
        notes = answer["refined"].get("notes") or ["no config was measured"]
        raise CommandError(f"--refine verified no config: {notes[-1]}")
    return 0


def format_refinement(refined: Mapping[str, Any]) -> str:
    """Human-readable lines for a refinement summary (the CLI's table output)."""

    def score(value: Any) -> str:
        return "-" if value is None else f"{value:.4f}"

    zero = refined.get("zero_shot") or {}
    lines = [
        f"refined on your data ({refined['metric']}, {len(refined['trials'])} trials, "
        f"{refined['elapsed_seconds']:.1f} of {refined['budget_seconds']:g} s):",
        f"  library default    {score(refined['default_score'])}",
        f"  top suggestion     {score(zero.get('score'))}",
        f"  refined            {score(refined['score'])}",
    ]
    if refined.get("config") is not None:
        lines.append(
            "  config  "
            + " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in refined["config"].items()
            )
        )
    lines += [f"  note: {note}" for note in refined.get("notes", [])]
    return "\n".join(lines)


@contextlib.contextmanager
def _progress_bar(
    args: argparse.Namespace,
) -> Iterator[Callable[[Mapping[str, Any]], None] | None]:
    """A tqdm bar of --refine's trials on stderr (off with --no-progress or --json)."""
    if args.no_progress or args.json:
        yield None
        return
    from tqdm import tqdm

    with tqdm(desc="refine", unit="trial", total=None, file=sys.stderr) as bar:

        def update(progress: Mapping[str, Any]) -> None:
            # The plan grows and shrinks as trials finish: track its current size.
            bar.total = max(progress["trials_planned"], progress["trials_done"])
            bar.n = progress["trials_done"]
            best = progress["best_score"]
            bar.set_postfix(
                rung=f"{progress['rung'] + 1}/{progress['rungs']}",
                best="-" if best is None else f"{best:.4f}",
                refresh=False,
            )
            bar.refresh()

        yield update
