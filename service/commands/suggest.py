"""``hyperprior suggest DATA.csv --target COL --family F``: suggestions for a local file."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hyperprior.service.commands import CommandError
from hyperprior.service.commands.db import add_database_url_option, database_url, require_database
from hyperprior.training.metafeatures import infer_task

_FAMILIES = ("lightgbm", "random_forest", "linear", "keras_mlp")
_TASKS = ("binary", "multiclass", "regression")


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
    parser.add_argument("--family", required=True, choices=_FAMILIES, help="model family")
    parser.add_argument(
        "--task", choices=_TASKS, help="the task (default: inferred from the target)"
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


def build_request(args: argparse.Namespace) -> dict[str, Any]:
    """The POST /v1/suggestions body for the file in ``args``."""
    from hyperprior.training.metafeatures import compute_metafeatures

    frame = read_table(args.data)
    if args.target not in frame.columns:
        raise CommandError(f"no column {args.target!r} in {args.data}")
    y = frame[args.target]
    X = frame.drop(columns=[args.target])
    if X.shape[1] == 0 or y.notna().sum() < 2:
        raise CommandError(f"{args.data} needs feature columns and at least two target values")
    task = check_target(y, args.target, args.task, refine=bool(getattr(args, "refine", False)))
    try:
        meta = compute_metafeatures(X, y, task, seed=0)
    except ValueError as error:  # what the checks above cannot foresee
        raise CommandError(f"cannot describe {args.data}: {error}") from None
    body: dict[str, Any] = {
        "family": args.family,
        "task": task,
        "dataset": {
            "name": args.data.stem,
            "meta_features": {
                k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in meta.items()
            },
        },
        "n": args.n,
    }
    if args.seed is not None:
        body["seed"] = args.seed
    if args.metric:
        body["metric"] = args.metric
    fixed = _parse_fixed(args.fixed)
    if fixed:
        body["fixed"] = fixed
    return body


def _ask_service(url: str, body: dict[str, Any], api_key: str | None = None) -> dict[str, Any]:
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.post(
            url.rstrip("/") + "/v1/suggestions", json=body, headers=headers, timeout=60.0
        )
    except httpx.HTTPError as error:
        raise CommandError(f"cannot reach {url}: {error}") from None
    if response.status_code != 200:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text
        if isinstance(detail, list):
            detail = "; ".join(str(d.get("msg", d)) for d in detail)
        raise CommandError(f"{url} answered {response.status_code}: {detail}")
    answer: dict[str, Any] = response.json()
    return answer


def _ask_locally(args: argparse.Namespace, body: dict[str, Any]) -> dict[str, Any]:
    from hyperprior.db import migrate
    from hyperprior.db.engine import make_engine
    from hyperprior.db.store import Store
    from hyperprior.service.routes.suggestions import SuggestionCreate, to_public
    from hyperprior.training.suggest import SuggestionEngine, SuggestionError, SuggestionRequest

    url = database_url(args)
    require_database(url)
    migrate.verify_schema(url)
    store = Store(make_engine(url))
    if store.find_active_surrogate(str(body["family"])) is None and store.stats().runs == 0:
        problem = (
            f"the database {url} holds no runs, so it can only suggest the library "
            "default: load the shipped history with `hyperprior db seed`, or point "
            "--database-url at the service's database"
        )
        if not args.refine:
            raise CommandError(problem)
        # Refining the default alone still measures something and starts a history.
        print(f"hyperprior: warning: {problem}", file=sys.stderr)
    request = SuggestionCreate.model_validate(body)
    try:
        result = SuggestionEngine(store, store).suggest(
            SuggestionRequest(
                family=request.family,
                task=request.task,
                meta_features=request.dataset.meta_features.as_mapping(),
                n=request.n,
                seed=request.seed,
                fixed=request.fixed,
                metric=request.metric,
                dataset_name=request.dataset.name,
            )
        )
    except SuggestionError as error:
        raise CommandError(str(error)) from None
    answer: dict[str, Any] = to_public(result).model_dump(mode="json")
    return answer


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
    body = build_request(args)
    answer = _ask_service(args.url, body, args.api_key) if args.url else _ask_locally(args, body)
    if args.refine:
        from hyperprior.service.jobs import refine_command

        with _progress_bar(args) as progress:
            answer["refined"] = refine_command(args, body, answer, progress=progress)
    print(json.dumps(answer, indent=2) if args.json else format_table(answer))
    if args.refine and not args.json:
        from hyperprior.service.jobs import format_refinement

        print(format_refinement(answer["refined"]))
    if args.refine and answer["refined"].get("config") is None:
        # Nothing verified is a failure, whatever was printed above: say why, exit 2.
        notes = answer["refined"].get("notes") or ["no config was measured"]
        raise CommandError(f"--refine verified no config: {notes[-1]}")
    return 0


@contextlib.contextmanager
def _progress_bar(args: argparse.Namespace) -> Iterator[Callable[[Any], None] | None]:
    """A tqdm bar of --refine's trials on stderr (off with --no-progress or --json)."""
    if args.no_progress or args.json:
        yield None
        return
    from tqdm import tqdm

    with tqdm(desc="refine", unit="trial", total=None, file=sys.stderr) as bar:

        def update(progress: Any) -> None:
            # The plan grows and shrinks as trials finish: track its current size.
            bar.total = max(progress.trials_planned, progress.trials_done)
            bar.n = progress.trials_done
            best = progress.best_score
            bar.set_postfix(
                rung=f"{progress.rung + 1}/{progress.rungs}",
                best="-" if best is None else f"{best:.4f}",
                refresh=False,
            )
            bar.refresh()

        yield update
