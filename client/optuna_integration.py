"""Optuna: warm-start a study with hyperprior's suggestions, record its trials as runs.

::

    import optuna
    from hyperprior.client import Client
    from hyperprior.client.optuna_integration import RecordingCallback, enqueue_suggestions

    client = Client("http://127.0.0.1:8000", api_key="hp_...")
    description = client.describe(X, y, name="churn")
    study = optuna.create_study(direction="maximize", storage="sqlite:///study.db")
    enqueue_suggestions(study, client, X, y, "lightgbm", n=5, search_space={
        "learning_rate": optuna.distributions.FloatDistribution(1e-3, 0.3, log=True),
        "num_leaves": optuna.distributions.IntDistribution(8, 256, log=True),
    })
    study.optimize(objective, n_trials=50, callbacks=[
        RecordingCallback(client, dataset=description, family="lightgbm", metric="roc_auc"),
    ])

Suggestions are mapped onto the study's own distributions: only parameters the search
space knows are enqueued, numbers are clipped into the range and rounded to the step
(and to integers for an ``IntDistribution``), categorical values must be one of the
choices; what cannot be mapped is left to the sampler, with one warning that says what.

A study's distributions are a space: ``declare_family_from_study(client, "my_xgboost",
study)`` declares a family of your own with them (see :func:`space_from_study`).

Recorded runs have a deterministic id (a UUID5 of the study name and the trial
number), so recording a trial twice, or importing the study later with
``hyperprior import optuna``, stores it once.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState

from hyperprior.client.client import Client
from hyperprior.client.errors import HyperpriorError, HyperpriorWarning
from hyperprior.client.types import Description, family_params

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = [
    "OPTUNA_NAMESPACE",
    "RecordingCallback",
    "declare_family_from_study",
    "space_from_study",
    "enqueue_suggestions",
    "map_config",
    "run_id_for",
    "search_space_of",
    "trial_to_run",
]

# Changing it would give re-recorded trials new ids (and duplicate runs): keep it fixed.
OPTUNA_NAMESPACE = uuid.UUID("6b3c1f0e-2f4a-4f57-9d1e-8a0b9c7d5e31")


def run_id_for(study_name: str, trial_number: int) -> uuid.UUID:
    """The run id of a trial: the same for the same study name and trial number."""
    return uuid.uuid5(OPTUNA_NAMESPACE, f"optuna|{study_name}|{int(trial_number)}")


def search_space_of(study: optuna.Study) -> dict[str, BaseDistribution]:
    """The distributions the study's trials have used (the latest wins per name)."""
    space: dict[str, BaseDistribution] = {}
    for trial in study.get_trials(deepcopy=False):
        space.update(trial.distributions)
    return space


def _midpoint(distribution: FloatDistribution | IntDistribution) -> float:
    low, high = float(distribution.low), float(distribution.high)
    return math.sqrt(low * high) if distribution.log else (low + high) / 2


def space_from_study(
    study: optuna.Study | Mapping[str, BaseDistribution],
    *,
    defaults: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A declaration's space (``POST /v1/families``) from a study's distributions.

    ``FloatDistribution`` -> ``float``, ``IntDistribution`` -> ``int`` (``log`` kept,
    ``step`` dropped: suggestions are rounded to integers, not to the step),
    ``CategoricalDistribution`` -> ``categorical``; a range of one value becomes a
    categorical of one choice. The range is where suggestions are drawn; the library's
    own valid range is not known, so recorded values outside it are stored and flagged.

    Args:
        study: A study (the distributions its trials used) or the distributions.
        defaults: The library's defaults of the parameters, for every task. Optuna
            does not know them: a parameter missing here gets the middle of its range
            (geometric for log) or its first choice, which suggestions then treat as
            "the default" to beat: give the real ones where you know them.

    Returns:
        ``{"params": [...]}``, ready for :meth:`Client.declare_family`.
    """
    distributions = search_space_of(study) if isinstance(study, optuna.Study) else dict(study)
    if not distributions:
        raise ValueError("the study has no distributions (no trials yet): nothing to declare")
    given = dict(defaults or {})
    unknown = sorted(set(given) - set(distributions))
    if unknown:
        raise ValueError(f"defaults for {unknown}, which the study has no distribution of")
    params: list[dict[str, Any]] = []
    for name in sorted(distributions):
        dist = distributions[name]
        if isinstance(dist, CategoricalDistribution):
            entry: dict[str, Any] = {"type": "categorical", "choices": list(dist.choices)}
            default = given.get(name, dist.choices[0])
        elif isinstance(dist, FloatDistribution | IntDistribution):
            if dist.low == dist.high:
                entry = {"type": "categorical", "choices": [dist.low]}
                default = given.get(name, dist.low)
            else:
                is_int = isinstance(dist, IntDistribution)
                entry = {"type": "int" if is_int else "float", "low": dist.low}
                entry.update(high=dist.high, log=bool(dist.log))
                middle = _midpoint(dist)
                default = given.get(name, round(middle) if is_int else middle)
        else:
            raise ValueError(f"{name}: unsupported distribution {type(dist).__name__}")
        params.append({"name": name, **entry, "default": default})
    return {"params": params}


def declare_family_from_study(
    client: Client,
    name: str,
    study: optuna.Study | Mapping[str, BaseDistribution],
    *,
    defaults: Mapping[str, Any] | None = None,
    description: str = "",
) -> dict[str, Any]:
    """Declare a family of your own whose space is the study's distributions.

    See :func:`space_from_study` for the mapping and ``defaults``; then record the
    study's trials with ``hyperprior import optuna`` or :class:`RecordingCallback`
    under ``family=name``.
    """
    space = space_from_study(study, defaults=defaults)
    return client.declare_family(name, space, description=description)


def _map_value(value: Any, distribution: BaseDistribution) -> tuple[bool, Any, str]:
    """(mapped, value, why not) of one config value onto one distribution."""
    if isinstance(distribution, CategoricalDistribution):
        for choice in distribution.choices:
            # Match by type as well as value: True is not 1, 1 is not 1.0 (max_features).
            if type(choice) is type(value) and choice == value:
                return True, choice, ""
        return False, None, f"{value!r} is not one of {list(distribution.choices)!r}"
    if isinstance(value, bool) or not isinstance(value, int | float) or value is None:
        return False, None, f"{value!r} is not a number"
    number = float(value)
    if not math.isfinite(number):
        return False, None, f"{value!r} is not finite"
    if isinstance(distribution, IntDistribution):
        low, high, step = distribution.low, distribution.high, distribution.step
        clipped = min(max(number, low), high)
        mapped = int(low + round((clipped - low) / step) * step)
        return True, min(mapped, high), ""
    if isinstance(distribution, FloatDistribution):
        lo, hi = float(distribution.low), float(distribution.high)
        value_in = min(max(number, lo), hi)
        if distribution.step is not None:
            steps = round((value_in - lo) / distribution.step)
            value_in = min(lo + steps * distribution.step, hi)
        return True, value_in, ""
    return False, None, f"unsupported distribution {type(distribution).__name__}"


def map_config(
    config: Mapping[str, Any], search_space: Mapping[str, BaseDistribution]
) -> tuple[dict[str, Any], list[str]]:
    """Map a hyperprior config onto a study's distributions.

    Args:
        config: Estimator keyword arguments.
        search_space: Parameter name -> Optuna distribution.

    Returns:
        The mapped params (only names the space knows) and one note per value that
        could not be mapped.
    """
    params: dict[str, Any] = {}
    notes: list[str] = []
    for name, value in config.items():
        distribution = search_space.get(name)
        if distribution is None:
            continue
        ok, mapped, why = _map_value(value, distribution)
        if ok:
            params[name] = mapped
        else:
            notes.append(f"{name}: {why}")
    return params, notes


def enqueue_suggestions(
    study: optuna.Study,
    client: Client,
    X: pd.DataFrame | np.ndarray | Description,
    y: pd.Series | np.ndarray | Sequence[Any] | None,
    family: str,
    n: int = 5,
    *,
    search_space: Mapping[str, BaseDistribution] | None = None,
    task: str | None = None,
    seed: int | None = None,
    fixed: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Warm-start a study: enqueue hyperprior's suggestions as its next trials.

    Args:
        study: The Optuna study.
        client: A hyperprior client.
        X: Features, or a `Description` (then ``y`` is ignored).
        y: Target aligned with ``X``.
        family: The model family the objective trains.
        n: How many suggestions to ask for.
        search_space: The distributions the objective suggests, by parameter name.
            Default: those of the study's existing trials.
        task: The task (inferred from ``y`` when omitted).
        seed: Same seed, same suggestions.
        fixed: Parameters hyperprior must hold fixed (e.g. a fixed ``n_estimators``).

    Returns:
        The params enqueued, best suggestion first (duplicates and suggestions with
        nothing to map are skipped).

    Raises:
        ValueError: No search space was given and the study has no trials to read one
            from.
    """
    space = dict(search_space) if search_space is not None else search_space_of(study)
    if not space:
        raise ValueError(
            "the study has no trials yet, so its search space is unknown: pass "
            "search_space={name: optuna.distributions...} with the distributions your "
            "objective suggests"
        )
    suggestions = client.suggest(X, y, family, n=n, task=task, seed=seed, fixed=fixed)
    enqueued: list[dict[str, Any]] = []
    seen: set[tuple[tuple[str, str], ...]] = set()
    skipped_params: set[str] = set()
    notes: list[str] = []
    for suggestion in suggestions:
        params, why = map_config(suggestion.config, space)
        skipped_params.update(k for k in suggestion.config if k not in space)
        notes.extend(f"suggestion {suggestion.rank}: {w}" for w in why)
        if not params:
            notes.append(f"suggestion {suggestion.rank}: nothing maps onto the search space")
            continue
        key = tuple(sorted((k, repr(v)) for k, v in params.items()))
        if key in seen:
            continue
        seen.add(key)
        study.enqueue_trial(
            params,
            user_attrs={
                "hyperprior_rank": suggestion.rank,
                "hyperprior_source": suggestion.source,
                "hyperprior_predicted_quality": suggestion.predicted_quality,
            },
            skip_if_exists=True,
        )
        enqueued.append(params)
    if skipped_params or notes:
        parts = []
        if skipped_params:
            parts.append(
                "not in the study's search space (left to the study's defaults): "
                + ", ".join(sorted(skipped_params))
            )
        parts.extend(notes)
        warnings.warn(
            "hyperprior suggestions mapped onto the study partially; " + "; ".join(parts),
            HyperpriorWarning,
            stacklevel=2,
        )
    return enqueued


def _direction(study: optuna.Study, objective_index: int) -> str:
    direction = study.directions[objective_index]
    return "minimize" if direction == optuna.study.StudyDirection.MINIMIZE else "maximize"


def trial_to_run(
    study: optuna.Study,
    trial: FrozenTrial,
    *,
    dataset: Description | Mapping[str, Any] | int,
    family: str,
    metric: str,
    source: str = "user",
    objective_index: int = 0,
    params: Sequence[str] | None = None,
    study_name: str | None = None,
) -> dict[str, Any] | None:
    """A finished trial as a run for `Client.record` (None for trials that are not).

    Complete trials become ``ok`` runs scored by their objective value; failed trials
    become ``failed`` runs. Running, waiting and pruned trials are not runs (a pruned
    trial stopped at an unknown share of its budget).

    Args:
        study: The trial's study.
        trial: The trial.
        dataset: A `Description`, the API's inline dataset, or a stored dataset's id.
        family: The model family.
        metric: The name of what the objective returns.
        source: ``user`` (recorded as it happened) or ``import``.
        objective_index: Which objective of a multi-objective study is the score.
        params: Only these params go into the config (default: all of the trial's).
        study_name: Overrides the study's name in the run id.
    """
    if trial.state == TrialState.COMPLETE:
        values = trial.values or []
        if objective_index >= len(values):
            return None
        score: float | None = float(values[objective_index])
        status = "ok" if score is not None and math.isfinite(score) else "failed"
        error = None if status == "ok" else f"objective returned {score}"
        if status == "failed":
            score = None
    elif trial.state == TrialState.FAIL:
        score, status = None, "failed"
        attrs = getattr(trial, "system_attrs", None) or {}
        error = str(attrs.get("fail_reason") or "the trial failed (see the study's logs)")[:2000]
    else:
        return None
    keep = set(params) if params is not None else None
    config = {k: v for k, v in trial.params.items() if keep is None or k in keep}
    started: dt.datetime | None = trial.datetime_start
    finished: dt.datetime | None = trial.datetime_complete
    seconds = (finished - started).total_seconds() if started and finished else 0.0
    run: dict[str, Any] = {
        "id": str(run_id_for(study_name or study.study_name, trial.number)),
        "family": family,
        "config": config,
        "metric": metric,
        "direction": _direction(study, objective_index),
        "score": score,
        "fidelity": 1.0,
        "cost_seconds": max(0.0, seconds),
        "source": source,
        "status": status,
    }
    if error is not None:
        run["error"] = error
    if isinstance(dataset, int):
        run["dataset_id"] = dataset
    elif isinstance(dataset, Description):
        run["dataset"] = dataset.to_json()
    else:
        run["dataset"] = dict(dataset)
    return run


class RecordingCallback:
    """An Optuna callback that records every finished trial as a hyperprior run.

    Pass it to ``study.optimize(..., callbacks=[...])``. Complete trials become ``ok``
    runs, failed ones ``failed`` runs; pruned trials are skipped. Only params of the
    family's search space go into the config (a built-in family's ``get_space``), so
    the objective may suggest other things too.

    A run that cannot be recorded (service down through the retries) does not stop
    the study: it is kept, retried with the next trial and by `flush`, and a
    `HyperpriorWarning` says so. Ids are deterministic, so nothing is stored twice.

    Args:
        client: A hyperprior client.
        dataset: A `Description` (from `Client.describe`), or the name of the data
            when ``X`` and ``y`` are given to describe it.
        family: The model family the objective trains.
        metric: The name of what the objective returns (e.g. ``roc_auc``).
        X: Features, to describe the data when ``dataset`` is a name.
        y: Target, likewise.
        task: The task, likewise (inferred from ``y`` when omitted).
        objective_index: The objective that is the score, in multi-objective studies.
        raise_errors: Raise instead of warning when recording fails.
    """

    def __init__(
        self,
        client: Client,
        *,
        dataset: Description | str,
        family: str,
        metric: str = "objective",
        X: Any = None,
        y: Any = None,
        task: str | None = None,
        objective_index: int = 0,
        raise_errors: bool = False,
    ) -> None:
        if isinstance(dataset, str):
            if X is None or y is None:
                raise ValueError(
                    "dataset is a name: also pass X and y to describe it, or pass "
                    "dataset=client.describe(X, y, name=...)"
                )
            dataset = client.describe(X, y, task, name=dataset)
        self.client = client
        self.dataset = dataset
        self.family = family
        self.metric = metric
        self.objective_index = objective_index
        self.raise_errors = raise_errors
        self.params = family_params(family)
        self.pending: list[dict[str, Any]] = []
        self.recorded: list[str] = []

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        run = trial_to_run(
            study,
            trial,
            dataset=self.dataset,
            family=self.family,
            metric=self.metric,
            objective_index=self.objective_index,
            params=self.params,
        )
        if run is not None:
            self.pending.append(run)
        self.flush()

    def flush(self) -> int:
        """Record the runs still pending; return how many were recorded."""
        if not self.pending:
            return 0
        batch, self.pending = self.pending, []
        try:
            result = self.client.record(batch)
        except HyperpriorError as error:
            self.pending = batch + self.pending
            if self.raise_errors:
                raise
            warnings.warn(
                f"could not record {len(batch)} Optuna trial(s) in hyperprior, will retry "
                f"with the next trial: {error}",
                HyperpriorWarning,
                stacklevel=2,
            )
            return 0
        self.recorded.extend(result.ids)
        return len(batch)
