"""The worker side of refinement: what one verification trial is and how it runs.

Everything here is small and picklable, because it crosses process boundaries: the
refinement in the parent builds :class:`VerificationTrial` specs, an executor from
:mod:`hyperprior.training.executor` ships them (and the :class:`TrialData`, once per worker) to
worker processes, and :func:`run_verification_trial` evaluates one there.

A trial that takes its worker down (memory, a crash, a hard timeout) never returns a
result; :func:`failure_result` turns the executor's :class:`WorkerFailure` into the same
failed :class:`TrialResult` a trial that raised would have produced.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import pandas as pd

from hyperprior.training.executor import WorkerFailure
from hyperprior.training.families import TrialResult, primary_metric

__all__ = [
    "TIMEOUT_PREFIXES",
    "TrialData",
    "VerificationTrial",
    "failure_result",
    "is_timeout",
    "run_verification_trial",
    "warm_up",
]

#: Error prefixes of a trial stopped by its time limit (soft in the worker, or killed).
TIMEOUT_PREFIXES = ("TrialTimeoutError", "timeout:")


@dataclass(frozen=True)
class TrialData:
    """The dataset every trial of one refinement runs on.

    Attributes:
        X: Features.
        y: Target, aligned with ``X``.
        task: ``binary``, ``multiclass`` or ``regression``.
        name: For logs and recorded runs.
    """

    X: pd.DataFrame
    y: pd.Series
    task: str
    name: str = "data"

    @property
    def n_rows(self) -> int:
        """Rows, including any whose target is missing."""
        return len(self.X)


@dataclass(frozen=True)
class VerificationTrial:
    """One config of one family at one fidelity.

    Attributes:
        candidate: Index of the config among the refinement's candidates.
        rung: Successive-halving rung (the highest is full fidelity).
        family: Model family.
        config_json: Canonical JSON of the config.
        fidelity: Fraction of training rows, or of epochs for ``keras_mlp``.
        folds: Cross-validation folds.
        seed: Seeds the folds and the row subsample (the same for every candidate,
            so candidates are compared on the same splits).
        time_limit_seconds: Wall-clock limit; the executor enforces it.
        budget_limited: Whether the limit was cut short by the refinement's budget
            (a timeout is then the budget running out, not the config's fault).
    """

    candidate: int
    rung: int
    family: str
    config_json: str
    fidelity: float
    folds: int
    seed: int
    time_limit_seconds: float | None
    budget_limited: bool = False

    @property
    def config(self) -> dict[str, Any]:
        """The config as a dict."""
        return dict(json.loads(self.config_json))


def run_verification_trial(trial: VerificationTrial, data: TrialData) -> TrialResult:
    """Worker side: cross-validate one config on the shared data. Never raises."""
    from hyperprior.training.families import evaluate

    return evaluate(
        trial.family,
        trial.config,
        data.X,
        data.y,
        data.task,
        fidelity=trial.fidelity,
        folds=trial.folds,
        seed=trial.seed,
    )


def failure_result(trial: VerificationTrial, failure: WorkerFailure, task: str) -> TrialResult:
    """The failed result of a trial whose worker was killed, crashed or raised."""
    prefix = "timeout: " if failure.reason == "timeout" else ""
    return TrialResult(
        status="failed",
        score=None,
        metric=primary_metric(task),
        metrics={} if failure.peak_rss_mb is None else {"peak_rss_mb": failure.peak_rss_mb},
        cost_seconds=max(0.0, failure.seconds),
        fidelity=trial.fidelity,
        n_train_rows=0,
        error=f"{prefix}{failure.message}",
    )


def is_timeout(result: TrialResult) -> bool:
    """Whether a failed result means the trial ran out of time."""
    return result.status != "ok" and (result.error or "").startswith(TIMEOUT_PREFIXES)


def warm_up(family: str) -> None:
    """Pay a fresh worker's one-time costs before any trial's clock starts.

    Imports (TensorFlow takes seconds), lazily imported scikit-learn modules and
    first-call initialisation would otherwise land on the first trial: its time limit,
    and the cost the refinement plans with. A tiny trial on random data pays them all.
    """
    import numpy as np

    from hyperprior.training.families import evaluate, get_family
    from hyperprior.training.spaces import get_space

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    spec = get_family(family)
    if spec.setup is not None:
        spec.setup()
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(60, 3)), columns=["a", "b", "c"])
    X["d"] = pd.Categorical(rng.choice(["x", "y"], size=60))
    y = pd.Series(np.arange(60) % 2)
    config = get_space(family).default("binary")
    if "epochs" in config:
        config["epochs"] = 1
    evaluate(family, config, X, y, "binary", folds=2)
