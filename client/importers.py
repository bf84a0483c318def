"""Past runs from where they already are: Optuna storages, CSV tables, MLflow ``mlruns``.

Each reader returns runs in the API's form (ready for `Client.record`), with ids that
depend only on where the run came from, so importing the same source twice stores
every run once.

CSV columns (one row per run; names are case-sensitive):

=================  ========  ==========================================================
column             required  meaning
=================  ========  ==========================================================
``dataset``        yes       the dataset's name
``dataset_version``          the stored version of that name (default: the one with the
                             same n_rows/n_features/n_classes, else 1; see below)
``task``           yes       ``binary``, ``multiclass`` or ``regression``
``n_rows``         yes       rows of the dataset (an integer)
``n_features``     yes       feature columns (an integer)
``n_classes``                classes (classification)
``mf_<name>``                any other meta-feature (a number), e.g. ``mf_missing_cells_frac``
``family``         yes       the model family, e.g. ``lightgbm``
``config``         one of    the config as a JSON object
``param_<name>``   one of    one hyperparameter per column (JSON values: ``0.1``, ``true``,
                             ``"sqrt"``; bare words are strings; empty: not set)
``metric``         yes       what ``score`` measures, e.g. ``roc_auc``
``direction``                ``maximize`` or ``minimize`` (default: from the metric's name)
``score``          yes*      the measured value (*empty only when ``status`` is ``failed``)
``fidelity``                 share of the data or epochs used, in (0, 1] (default 1)
``cost_seconds``             wall-clock seconds (default 0)
``status``                   ``ok`` (default) or ``failed``
``error``                    why it failed
``source``                   ``import`` (default), ``user``, ``bootstrap`` or ``verification``
``id``                       a UUID (default: derived from the row's content)
=================  ========  ==========================================================

Rows of one dataset name describe one dataset: rows with the same name and task but
other counts (n_rows, n_features, n_classes) than a dataset stored under that name are
refused (409) unless ``dataset_version`` gives them a version of their own; other
meta-features fill in what the stored dataset lacks.

MLflow: the *file store* layout (``mlruns/<experiment id>/<run id>/{meta.yaml, params/,
metrics/}``) is read directly, so MLflow itself is not needed (nor installed by
hyperprior). A tracking server or a database backend is not read: export its runs
with ``mlflow`` to CSV in the format above instead.
"""

from __future__ import annotations

import csv
import io
import json
import math
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperprior.client.types import Description, direction_of, family_params
from hyperprior.vocabulary import DIRECTIONS, RUN_SOURCES, RUN_STATUSES, TASKS

__all__ = [
    "CSV_REQUIRED",
    "IMPORT_NAMESPACE",
    "MlflowRun",
    "RejectedRun",
    "RunTableError",
    "check_runs",
    "read_mlflow_runs",
    "runs_from_csv",
    "runs_from_mlflow",
    "runs_from_optuna",
]

# Fixed for good: changing it would make a second import store every run again.
IMPORT_NAMESPACE = uuid.UUID("a3e9c0f2-51d4-4b7e-8f0a-2c6d1e9b7a45")

CSV_REQUIRED = ("dataset", "task", "n_rows", "n_features", "family", "metric", "score")
_MAX_PROBLEMS = 20


class RunTableError(ValueError):
    """A table of runs that cannot be imported; the message names each bad row and column.

    Attributes:
        problems: ``(row, column, message)`` for each problem found (rows count from
            1, the header not included; ``line`` in the message is the file's line).
    """

    def __init__(self, source: str, problems: Sequence[tuple[int | None, str | None, str]]):
        self.problems = list(problems)
        lines = []
        for row, column, message in self.problems[:_MAX_PROBLEMS]:
            where = []
            if row is not None:
                where.append(f"row {row} (line {row + 1})")
            if column is not None:
                where.append(f"column {column!r}")
            lines.append(f"{', '.join(where)}: {message}" if where else message)
        more = len(self.problems) - _MAX_PROBLEMS
        if more > 0:
            lines.append(f"... and {more} more")
        super().__init__(f"{source}: " + "; ".join(lines))


def _parse_value(text: str) -> Any:
    """A cell as a JSON value where it is one, else the text (``sqrt``, ``True``)."""
    text = text.strip()
    if text in ("True", "False"):
        return text == "True"
    if text == "None":
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def _count(text: str) -> int:
    value = float(text)
    if not value.is_integer() or value < 0:
        raise ValueError(f"{text!r} is not a non-negative integer")
    return int(value)


def _version(text: str) -> int:
    value = _count(text)
    if value < 1:
        raise ValueError(f"{text!r} is not a version (1, 2 ...)")
    return value


def _choice(options: Sequence[str]) -> Any:
    def parse(value: str) -> str:
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value

    return parse


def _content_id(kind: str, parts: Sequence[Any], occurrence: int) -> str:
    key = json.dumps([kind, *parts, occurrence], sort_keys=True, default=str)
    return str(uuid.uuid5(IMPORT_NAMESPACE, key))


def runs_from_csv(
    source: str | Path | io.TextIOBase, *, name: str | None = None
) -> list[dict[str, Any]]:
    """Read a table of past runs (see the module docstring for the columns).

    Args:
        source: A path, or an open text file.
        name: How errors name the source (default: the path).

    Returns:
        The runs, in file order.

    Raises:
        RunTableError: Naming every bad row and column (the first 20), or a missing
            required column.
    """
    if isinstance(source, str | Path):
        label = name or str(source)
        try:
            with open(source, newline="", encoding="utf-8-sig") as handle:
                return _read_table(handle, label)
        except FileNotFoundError:
            raise RunTableError(label, [(None, None, "no such file")]) from None
        except UnicodeDecodeError as error:
            raise RunTableError(label, [(None, None, f"not UTF-8 text: {error}")]) from None
    return _read_table(source, name or "table")


def _read_table(handle: Any, label: str) -> list[dict[str, Any]]:
    reader = csv.DictReader(handle)
    columns = reader.fieldnames or []
    problems: list[tuple[int | None, str | None, str]] = []
    missing = [c for c in CSV_REQUIRED if c not in columns]
    if "config" not in columns and not any(c.startswith("param_") for c in columns):
        missing.append("config (or param_<name> columns)")
    if missing:
        raise RunTableError(
            label,
            [(None, None, f"missing column(s): {', '.join(missing)}; found: {', '.join(columns)}")],
        )
    param_columns = [c for c in columns if c.startswith("param_")]
    mf_columns = [c for c in columns if c.startswith("mf_")]
    runs: list[dict[str, Any]] = []
    seen: Counter[str] = Counter()
    for row_number, row in enumerate(reader, start=1):
        if None in row:  # more cells than header names
            problems.append(
                (
                    row_number,
                    None,
                    f"{len(columns) + len(row[None])} cells for {len(columns)} columns",
                )
            )
            continue
        row_problems: list[tuple[int | None, str | None, str]] = []

        def cell(column: str, *, _row: dict[str, Any] = row) -> str:
            return (_row.get(column) or "").strip()

        def need(
            column: str,
            parse: Any,
            *,
            _problems: list[Any] = row_problems,
            _line: int = row_number,
        ) -> Any:
            text = cell(column)
            if not text:
                _problems.append((_line, column, "is empty"))
                return None
            try:
                return parse(text)
            except ValueError as error:
                _problems.append((_line, column, f"{text!r}: {error}"))
                return None

        def optional(
            column: str,
            parse: Any,
            default: Any,
            *,
            _problems: list[Any] = row_problems,
            _line: int = row_number,
        ) -> Any:
            text = cell(column)
            if not text:
                return default
            try:
                return parse(text)
            except ValueError as error:
                _problems.append((_line, column, f"{text!r}: {error}"))
                return default

        task = need("task", _choice(TASKS))
        version = optional("dataset_version", _version, None)
        meta: dict[str, Any] = {
            "n_rows": need("n_rows", _count),
            "n_features": need("n_features", _count),
        }
        n_classes = optional("n_classes", _count, None)
        if n_classes is not None:
            meta["n_classes"] = n_classes
        for column in mf_columns:
            value = optional(column, _number, None)
            if value is not None:
                meta[column.removeprefix("mf_")] = value
        config: dict[str, Any] = {}
        if "config" in columns and cell("config"):
            try:
                parsed = json.loads(cell("config"))
            except ValueError as error:
                row_problems.append((row_number, "config", f"not JSON: {error}"))
            else:
                if isinstance(parsed, dict):
                    config.update(parsed)
                else:
                    row_problems.append((row_number, "config", "must be a JSON object"))
        for column in param_columns:
            text = cell(column)
            if text:
                config[column.removeprefix("param_")] = _parse_value(text)
        status = optional("status", _choice(RUN_STATUSES), "ok")
        metric = need("metric", str)
        score = optional("score", _number, None) if status == "failed" else need("score", _number)
        direction = optional("direction", _choice(DIRECTIONS), direction_of(metric or ""))
        fidelity = optional("fidelity", _number, 1.0)
        if fidelity is not None and not 0.0 < fidelity <= 1.0:
            row_problems.append((row_number, "fidelity", f"{fidelity:g} must be in (0, 1]"))
        cost = optional("cost_seconds", _number, 0.0)
        if cost is not None and cost < 0:
            row_problems.append((row_number, "cost_seconds", f"{cost:g} must be >= 0"))
        source = optional("source", _choice(RUN_SOURCES), "import")
        run_id = optional("id", lambda t: str(uuid.UUID(t)), None)
        dataset = cell("dataset")
        family = cell("family")
        if not dataset:
            row_problems.append((row_number, "dataset", "is empty"))
        if not family:
            row_problems.append((row_number, "family", "is empty"))
        if row_problems:
            problems.extend(row_problems)
            continue
        if run_id is None:
            parts = [dataset, task, family, config, metric, score, fidelity, status]
            if version is not None:  # only then, so ids of older files do not change
                parts.append({"dataset_version": version})
            digest = json.dumps(parts, sort_keys=True, default=str)
            seen[digest] += 1
            run_id = _content_id("csv", parts, seen[digest])
        run: dict[str, Any] = {
            "id": run_id,
            "dataset": {"name": dataset, "task": task, "meta_features": meta},
            "family": family,
            "config": config,
            "metric": metric,
            "direction": direction,
            "score": score,
            "fidelity": fidelity,
            "cost_seconds": cost,
            "status": status,
            "source": source,
        }
        if version is not None:
            run["dataset"]["version"] = version
        if cell("error"):
            run["error"] = cell("error")
        elif status == "failed":
            run["error"] = "failed (imported)"
        runs.append(run)
    if problems:
        raise RunTableError(label, problems)
    return runs


# ----------------------------------------------------------------------------- checks


@dataclass(frozen=True)
class RejectedRun:
    """A run an importer leaves out because its config does not fit the family's space.

    Attributes:
        index: Its position among the runs read (a CSV row is ``index + 1``).
        run_id: Its id.
        problems: ``field: message`` for each refused value.
    """

    index: int
    run_id: str
    problems: tuple[str, ...]


def check_runs(
    runs: Sequence[Mapping[str, Any]], *, task: str | None = None
) -> tuple[list[dict[str, Any]], list[RejectedRun], list[str]]:
    """Split runs in the API's form by the check ``POST /v1/runs`` makes.

    Importing is best effort: a run the service would refuse (unknown key, wrong type,
    a value the library rejects) is left out and reported instead of failing the whole
    import. Runs of families hyperprior does not know pass unchecked.

    Args:
        runs: Runs as the readers return them.
        task: The task of runs that name a stored dataset by ``dataset_id``.

    Returns:
        ``(kept, rejected, flagged)``: the runs to record, the ones left out, and the
        values kept but flagged (``run N (id ...): field: message``).
    """
    from hyperprior.training.ingest import check_config

    kept: list[dict[str, Any]] = []
    rejected: list[RejectedRun] = []
    flagged: list[str] = []
    for index, run in enumerate(runs):
        dataset = run.get("dataset")
        run_task = dataset.get("task") if isinstance(dataset, Mapping) else task
        verdict = check_config(str(run.get("family")), run.get("config"), run_task)
        if verdict is None or verdict.ok:
            kept.append(dict(run))
            if verdict is not None:
                flagged += [
                    f"run {index + 1} (id {run.get('id')}): {field}: {message}"
                    for field, message in verdict.warnings
                ]
            continue
        rejected.append(
            RejectedRun(
                index=index,
                run_id=str(run.get("id")),
                problems=tuple(f"{field}: {message}" for field, message in verdict.errors),
            )
        )
    return kept, rejected, flagged


# ----------------------------------------------------------------------------- Optuna


def runs_from_optuna(
    storage: str,
    study_name: str,
    *,
    dataset: Description | Mapping[str, Any] | int,
    family: str,
    metric: str = "objective",
    objective_index: int = 0,
    params: Sequence[str] | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """The finished trials of an Optuna study as runs (through Optuna's own API).

    Ids and content are those `hyperprior.client.optuna_integration.RecordingCallback` gives
    (source ``user``: trials of your own study are your runs, however they reach the
    history), so a study recorded live and imported later, even in part, is stored
    once and never conflicts.

    Args:
        storage: The study's storage URL (``sqlite:///study.db``, ``postgresql://...``)
            or a journal file path ending in ``.log``.
        study_name: The study.
        dataset: A `Description`, the API's inline dataset, or a stored dataset's id.
        family: The model family.
        metric: What the objective returns.
        objective_index: The objective that is the score (multi-objective studies).
        params: Only these params go into configs (default: the family's space, or all
            params for a family hyperprior does not know).

    Returns:
        The runs and how many trials were skipped (running, waiting, pruned).

    Raises:
        KeyError: No such study (the message lists the storage's studies).
    """
    import optuna

    from hyperprior.client.optuna_integration import trial_to_run

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store: Any = storage
    if storage.endswith(".log") and "://" not in storage:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        store = JournalStorage(JournalFileBackend(storage))
    names = optuna.get_all_study_names(storage=store)
    if study_name not in names:
        raise KeyError(
            f"no study {study_name!r} in {storage}; studies: {', '.join(names) or 'none'}"
        )
    study = optuna.load_study(study_name=study_name, storage=store)
    keep = list(params) if params is not None else family_params(family)
    runs: list[dict[str, Any]] = []
    skipped = 0
    for trial in study.get_trials(deepcopy=False):
        run = trial_to_run(
            study,
            trial,
            dataset=dataset,
            family=family,
            metric=metric,
            source="user",
            objective_index=objective_index,
            params=keep,
        )
        if run is None:
            skipped += 1
        else:
            runs.append(run)
    return runs, skipped


# ----------------------------------------------------------------------------- MLflow

_MLFLOW_OK = {"3", "FINISHED"}
_MLFLOW_FAILED = {"4", "5", "FAILED", "KILLED"}


@dataclass(frozen=True)
class MlflowRun:
    """One run of an MLflow file store, as read from disk.

    Attributes:
        run_id: MLflow's run id.
        experiment: The experiment's name.
        status: MLflow's status name (``FINISHED``, ``FAILED``...).
        params: Param name -> value (parsed from text).
        metrics: Metric name -> its last logged value (highest step, then latest).
        seconds: Wall-clock duration (0 when unknown).
    """

    run_id: str
    experiment: str
    status: str
    params: dict[str, Any]
    metrics: dict[str, float]
    seconds: float


def _yaml(path: Path) -> dict[str, Any]:
    import yaml  # PyYAML: a dependency of dask, always installed with hyperprior

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _last_metric(path: Path) -> float | None:
    best: tuple[int, int, float] | None = None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if len(parts) < 2:
            continue
        try:
            timestamp, value = int(parts[0]), float(parts[1])
            step = int(parts[2]) if len(parts) > 2 else 0
        except ValueError:
            continue
        if best is None or (step, timestamp) >= (best[0], best[1]):
            best = (step, timestamp, value)
    return None if best is None else best[2]


_STATUS_NAMES = {"1": "RUNNING", "2": "SCHEDULED", "3": "FINISHED", "4": "FAILED", "5": "KILLED"}


def read_mlflow_runs(directory: str | Path, *, experiment: str | None = None) -> list[MlflowRun]:
    """Every active run of an MLflow file store (``mlruns``), oldest experiment first.

    Args:
        directory: The ``mlruns`` directory.
        experiment: Only the experiment of this name (or id).

    Raises:
        FileNotFoundError: Not a directory, or no experiment of that name (the
            message lists those found).
    """
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory (expected an mlruns directory)")
    found: list[MlflowRun] = []
    experiments: list[str] = []
    for exp_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        meta = _yaml(exp_dir / "meta.yaml")
        if not meta or meta.get("lifecycle_stage", "active") != "active":
            continue
        name = str(meta.get("name", exp_dir.name))
        experiments.append(name)
        if experiment is not None and experiment not in (name, exp_dir.name):
            continue
        for run_dir in sorted(p for p in exp_dir.iterdir() if p.is_dir()):
            run_meta = _yaml(run_dir / "meta.yaml")
            if not run_meta or run_meta.get("lifecycle_stage", "active") != "active":
                continue
            params = {}
            for param in sorted((run_dir / "params").glob("*")):
                if param.is_file():
                    params[param.name] = _parse_value(param.read_text(encoding="utf-8"))
            metrics = {}
            for metric in sorted((run_dir / "metrics").glob("*")):
                if metric.is_file():
                    value = _last_metric(metric)
                    if value is not None:
                        metrics[metric.name] = value
            start, end = run_meta.get("start_time"), run_meta.get("end_time")
            seconds = (
                max(0.0, (float(end) - float(start)) / 1000.0)
                if isinstance(start, int | float) and isinstance(end, int | float)
                else 0.0
            )
            status = str(run_meta.get("status", ""))
            found.append(
                MlflowRun(
                    run_id=str(run_meta.get("run_id") or run_dir.name),
                    experiment=name,
                    status=_STATUS_NAMES.get(status, status),
                    params=params,
                    metrics=metrics,
                    seconds=seconds,
                )
            )
    if (
        experiment is not None
        and experiment not in experiments
        and not (root / experiment).is_dir()
    ):
        raise FileNotFoundError(
            f"no experiment {experiment!r} in {root}; experiments: "
            f"{', '.join(experiments) or 'none'}"
        )
    return found


def runs_from_mlflow(
    directory: str | Path,
    *,
    dataset: Description | Mapping[str, Any] | int,
    family: str,
    metric: str,
    experiment: str | None = None,
    direction: str | None = None,
    params: Iterable[str] | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Runs of an MLflow file store as hyperprior runs.

    Finished runs that logged ``metric`` become ``ok`` runs scored by its last value;
    failed or killed runs become ``failed`` runs; running ones, and finished ones
    without the metric, are skipped.

    Args:
        directory: The ``mlruns`` directory.
        dataset: A `Description`, the API's inline dataset, or a stored dataset's id.
        family: The model family.
        metric: The logged metric that is the score.
        experiment: Only this experiment (name or id).
        direction: ``maximize`` or ``minimize`` (default: from the metric's name).
        params: Only these params go into configs (default: the family's space, or all
            params for a family hyperprior does not know).

    Returns:
        The runs and how many MLflow runs were skipped.
    """
    keep = set(params) if params is not None else None
    if keep is None:
        names = family_params(family)
        keep = set(names) if names is not None else None
    runs: list[dict[str, Any]] = []
    skipped = 0
    for found in read_mlflow_runs(directory, experiment=experiment):
        if found.status in _MLFLOW_OK and metric in found.metrics:
            status, score = "ok", found.metrics[metric]
        elif found.status in _MLFLOW_FAILED:
            status, score = "failed", None
        else:
            skipped += 1
            continue
        run: dict[str, Any] = {
            "id": str(uuid.uuid5(IMPORT_NAMESPACE, f"mlflow|{found.run_id}")),
            "family": family,
            "config": {k: v for k, v in found.params.items() if keep is None or k in keep},
            "metric": metric,
            "direction": direction or direction_of(metric),
            "score": score,
            "fidelity": 1.0,
            "cost_seconds": found.seconds,
            "source": "import",
            "status": status,
        }
        if status == "failed":
            run["error"] = f"MLflow run {found.run_id} ended {found.status}"
        if isinstance(dataset, int):
            run["dataset_id"] = dataset
        elif isinstance(dataset, Description):
            run["dataset"] = dataset.to_json()
        else:
            run["dataset"] = dict(dataset)
        runs.append(run)
    return runs, skipped
