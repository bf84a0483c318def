"""What every family shares: the :class:`Family` record, the trial result, metrics,
folds, fidelity and the CV loop.

A family module defines its space, how to build an unfitted estimator (preprocessing
included) from a config, its cost prior and its surrogate interactions, as one
:class:`Family`; :func:`evaluate_family` does the rest the same way for every family:

- the data is cleaned once with :func:`hyperprior.training.preprocess.prepare_frame`; rows whose
  target is missing are dropped; class labels become codes ``0..k-1``;
- k-fold CV: ``StratifiedKFold`` for classification (k reduced to the smallest class
  count when a class has fewer than k rows), ``KFold`` for regression, both shuffled
  with the trial's seed;
- fidelity ``"rows"``: each fold's *training* part is subsampled to that fraction
  (stratified, at least :data:`MIN_ROWS_PER_CLASS` rows per class or
  :data:`MIN_TRAIN_ROWS` rows for regression); the validation part is always whole.
  Fidelity ``"epochs"``: the family scales its own epochs and uses every row;
- one thread for everything (BLAS via threadpoolctl, the libraries' ``n_jobs=1``),
  because trials run in parallel processes;
- anything raised, and a score that is not finite, becomes a ``failed`` result:
  :func:`evaluate_family` never raises.
"""

from __future__ import annotations

import math
import numbers
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from hyperprior.training.features import Interaction
from hyperprior.training.preprocess import prepare_frame
from hyperprior.training.spaces import Space, check_task, is_classification

__all__ = [
    "MIN_ROWS_PER_CLASS",
    "MIN_TRAIN_ROWS",
    "PRIMARY_METRICS",
    "TASK_METRICS",
    "CostFn",
    "EstimatorFn",
    "Family",
    "Interaction",
    "TrialResult",
    "cost_ratio",
    "evaluate_family",
    "failed_result",
    "make_folds",
    "prepare_data",
    "primary_metric",
    "score_predictions",
    "subsample_rows",
]

PRIMARY_METRICS: Mapping[str, str] = {
    "binary": "roc_auc",
    "multiclass": "accuracy",
    "regression": "r2",
}

_CLASSIFICATION_METRICS = ("roc_auc", "accuracy", "balanced_accuracy", "log_loss", "f1_macro")
TASK_METRICS: Mapping[str, tuple[str, ...]] = {
    "binary": _CLASSIFICATION_METRICS,
    "multiclass": _CLASSIFICATION_METRICS,
    "regression": ("r2", "rmse", "mae"),
}
"""Every metric a trial measures, by task (besides ``fit_seconds`` and ``predict_seconds``)."""
_RUN_METRICS = frozenset(
    {m for metrics in TASK_METRICS.values() for m in metrics} | {"fit_seconds", "predict_seconds"}
)

MIN_ROWS_PER_CLASS = 5
MIN_TRAIN_ROWS = 20

# Probabilities are clipped before log_loss so one confident mistake cannot make it inf.
_EPS = 1e-15


def primary_metric(task: str) -> str:
    """The metric a trial is judged by: ``roc_auc`` (binary, on probabilities),
    ``accuracy`` (multiclass) or ``r2`` (regression). Always maximised."""
    return PRIMARY_METRICS[check_task(task)]


@dataclass(frozen=True)
class TrialResult:
    """The outcome of one evaluated config.

    Attributes:
        status: ``"ok"`` or ``"failed"``.
        score: Mean primary metric over the folds; ``None`` when failed.
        metric: Name of the primary metric (maximised).
        metrics: Fold means of the primary and extra metrics (``log_loss``,
            ``balanced_accuracy``, ``rmse``...), ``<metric>_std`` and ``n_folds``.
        cost_seconds: Wall-clock seconds of the whole evaluation.
        fidelity: The fidelity it ran at, in ``(0, 1]``.
        n_train_rows: Mean training rows per fold after the fidelity subsample.
        error: ``"ExceptionType: message"`` when failed, else ``None``.
    """

    status: str
    score: float | None
    metric: str
    metrics: dict[str, float]
    cost_seconds: float
    fidelity: float
    n_train_rows: int
    error: str | None

    @property
    def ok(self) -> bool:
        """Whether the trial succeeded."""
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)

    def run_metrics(self) -> dict[str, float] | None:
        """What a recorded run keeps: every metric of the task and the fit and predict
        seconds (fold means, or totals for the seconds); ``None`` when the trial failed."""
        if not self.ok:
            return None
        return {k: v for k, v in self.metrics.items() if k in _RUN_METRICS and math.isfinite(v)}


BuildFn = Callable[[Mapping[str, Any], str, int, int, float], Any]
EstimatorFn = Callable[[Mapping[str, Any], str, "int | None"], Any]
CostFn = Callable[[Mapping[str, Any], Mapping[str, Any]], float]


@dataclass(frozen=True)
class Family:
    """A model family: everything hyperprior knows about it, in one object.

    A family module defines one of these as ``FAMILY`` and
    :mod:`hyperprior.training.families` lists it; nothing else names the family.

    Attributes:
        name: Family name, the key of :data:`hyperprior.training.families.FAMILIES`.
        space: Its search space (parameters, ranges, library defaults).
        build: ``build(config, task, n_classes, seed, fidelity)`` -> an unfitted
            scikit-learn-style estimator (preprocessing included) whose ``fit`` takes
            a frame from ``prepare_frame`` and label codes or float targets.
        fidelity_unit: ``"rows"`` (training rows per fold are subsampled) or
            ``"epochs"`` (``build`` scales the epochs; every row is used).
        description: One line for the docs.
        setup: Called once before the clock starts (heavy imports), or ``None``.
        estimator: ``estimator(config, task, random_state)`` -> the unfitted
            ``Pipeline`` a user fits (``make_estimator``); ``None``: ``build`` at full
            fidelity (seed 0 for ``None``).
        cost: ``cost(config, default)`` -> a config's expected cost relative to the
            default's, before measuring (refinement's budget prior); ``None``: 1.
        interactions: The family's hyperparameter-by-data surrogate features
            (``ix_*`` columns, in this order; the data-only ones are added for every
            family by :func:`hyperprior.training.features.interactions_for`).
        raw_codes: Numbers that string choices stand for in ``interactions``
            (``{"max_features": {"sqrt": -1.0}}``); other strings are NaN there.
        surrogate_recipe: The family's departures from the default
            :class:`~hyperprior.training.surrogate.SurrogateParams` (field: value), each
            measured by leave-one-group-out CV (``benchmarks/policy_cv.py``).
    """

    name: str
    space: Space
    build: BuildFn
    fidelity_unit: Literal["rows", "epochs"]
    description: str = ""
    setup: Callable[[], None] | None = None
    estimator: EstimatorFn | None = None
    cost: CostFn | None = None
    interactions: tuple[Interaction, ...] = ()
    raw_codes: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    surrogate_recipe: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.space.family != self.name:
            raise ValueError(f"family {self.name!r} has the space of {self.space.family!r}")

    def relative_cost(self, config: Mapping[str, Any], default: Mapping[str, Any]) -> float:
        """Expected cost of ``config`` relative to ``default`` (unclipped; 1 without a model)."""
        return 1.0 if self.cost is None else float(self.cost(config, default))

    def make_estimator(self, config: Mapping[str, Any], task: str, random_state: int | None) -> Any:
        """The unfitted ``Pipeline`` (preprocessing, model) for a validated config."""
        if self.estimator is not None:
            return self.estimator(config, task, random_state)
        return self.build(config, task, 0, 0 if random_state is None else random_state, 1.0)


def cost_ratio(config: Mapping[str, Any], default: Mapping[str, Any], key: str) -> float:
    """``config[key] / default[key]`` (the default's value where missing); 1 if undefined."""
    try:
        return float(config.get(key, default[key])) / float(default[key])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return 1.0


# ---------------------------------------------------------------------------- data


def prepare_data(
    X: pd.DataFrame, y: pd.Series | np.ndarray, task: str
) -> tuple[pd.DataFrame, np.ndarray, int]:
    """Clean features and target for the CV loop.

    Args:
        X: Features.
        y: Target, aligned with ``X`` by position.
        task: ``binary``, ``multiclass`` or ``regression``.

    Returns:
        ``(X, y, n_classes)``: the frame from ``prepare_frame`` without the rows whose
        target is missing, label codes ``0..k-1`` (``int64``) or ``float64`` targets,
        and the number of classes (0 for regression).

    Raises:
        ValueError: on a length mismatch, a non-numeric regression target, or a class
            count that does not fit the task.
    """
    check_task(task)
    y_values = np.asarray(y.to_numpy() if isinstance(y, pd.Series) else y, dtype=object)
    if y_values.ndim != 1 or len(y_values) != len(X):
        raise ValueError(f"y has shape {y_values.shape}, expected ({len(X)},)")
    keep = ~pd.isna(y_values)
    Xp = prepare_frame(X)
    if not keep.all():
        Xp = Xp.loc[keep].reset_index(drop=True)
        y_values = y_values[keep]
    if len(y_values) == 0:
        raise ValueError("no rows with a target")
    if task == "regression":
        try:
            y_out = y_values.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError("a regression target must be numeric") from exc
        if not np.isfinite(y_out).all():
            raise ValueError("the regression target has infinite values")
        return Xp, y_out, 0
    try:
        codes, uniques = pd.factorize(y_values, sort=True)
    except TypeError:  # labels of mixed types cannot be sorted
        codes, uniques = pd.factorize(y_values.astype(str), sort=True)
    n_classes = len(uniques)
    if n_classes < 2:
        raise ValueError(f"classification needs at least 2 classes, y has {n_classes}")
    if task == "binary" and n_classes != 2:
        raise ValueError(f"task 'binary' needs exactly 2 classes, y has {n_classes}")
    return Xp, codes.astype(np.int64), n_classes


def make_folds(
    y: np.ndarray, task: str, folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shuffled (stratified) k-fold splits, k reduced to fit the smallest class.

    Raises:
        ValueError: if ``folds < 2`` or a class has fewer than 2 rows.
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    if is_classification(task):
        counts = np.bincount(y)
        smallest = int(counts.min())
        if smallest < 2:
            raise ValueError(
                f"class {int(counts.argmin())} has {smallest} row(s); cross-validation "
                "needs at least 2 per class"
            )
        splitter: Any = StratifiedKFold(
            n_splits=min(folds, smallest), shuffle=True, random_state=seed
        )
    else:
        if len(y) < 4:
            raise ValueError(f"regression needs at least 4 rows, got {len(y)}")
        splitter = KFold(n_splits=min(folds, len(y) // 2), shuffle=True, random_state=seed)
    return [(tr, va) for tr, va in splitter.split(np.zeros(len(y)), y)]


def subsample_rows(
    train_idx: np.ndarray, y: np.ndarray, task: str, fidelity: float, seed: int
) -> np.ndarray:
    """A fraction ``fidelity`` of ``train_idx``, stratified for classification.

    Each class keeps ``ceil(fidelity * n_c)`` rows but at least
    ``min(n_c, MIN_ROWS_PER_CLASS)``; regression keeps ``ceil(fidelity * n)`` but at
    least ``min(n, MIN_TRAIN_ROWS)``. Returns sorted indices (all of them at 1.0).
    """
    if fidelity >= 1.0:
        return train_idx
    rng = np.random.default_rng(seed)
    if is_classification(task):
        parts = []
        y_train = y[train_idx]
        for c in np.unique(y_train):
            members = train_idx[y_train == c]
            k = max(math.ceil(fidelity * len(members)), min(len(members), MIN_ROWS_PER_CLASS))
            parts.append(rng.choice(members, size=k, replace=False))
        chosen = np.concatenate(parts)
    else:
        n = len(train_idx)
        k = max(math.ceil(fidelity * n), min(n, MIN_TRAIN_ROWS))
        chosen = rng.choice(train_idx, size=k, replace=False)
    return np.sort(chosen)


# ---------------------------------------------------------------------------- metrics


def _predict(model: Any, X: pd.DataFrame, task: str, n_classes: int) -> np.ndarray:
    if task == "regression":
        return np.asarray(model.predict(X), dtype=np.float64).reshape(-1)
    proba = np.asarray(model.predict_proba(X), dtype=np.float64)
    classes = np.asarray(getattr(model, "classes_", np.arange(proba.shape[1])), dtype=np.int64)
    if proba.shape[1] == n_classes and np.array_equal(classes, np.arange(n_classes)):
        return proba
    # A class missing from a (subsampled) training fold gets probability 0.
    full = np.zeros((proba.shape[0], n_classes))
    full[:, classes] = proba
    return full


def score_predictions(
    y_true: np.ndarray, pred: np.ndarray, task: str, n_classes: int
) -> dict[str, float]:
    """Primary and extra metrics of one validation fold.

    Args:
        y_true: Label codes or float targets.
        pred: Class probabilities (``n x n_classes``) or predicted values.
        task: The task.
        n_classes: Number of classes (ignored for regression).

    Returns:
        classification: ``roc_auc`` (multiclass: one-vs-rest macro), ``accuracy``,
        ``balanced_accuracy``, ``log_loss``, ``f1_macro``; regression: ``r2``,
        ``rmse``, ``mae``. A metric a fold cannot define (one-vs-rest AUC with a
        class absent from the fold) is left out of that fold.

    Raises:
        ValueError: if predictions are not finite (a diverged model).
    """
    from sklearn import metrics as m

    if not np.isfinite(pred).all():
        raise ValueError("the model predicted non-finite values")
    if task == "regression":
        return {
            "r2": float(m.r2_score(y_true, pred)),
            "rmse": float(np.sqrt(m.mean_squared_error(y_true, pred))),
            "mae": float(m.mean_absolute_error(y_true, pred)),
        }
    proba = np.clip(pred, _EPS, 1.0)
    proba /= proba.sum(axis=1, keepdims=True)
    labels = np.arange(n_classes)
    y_hat = proba.argmax(axis=1)
    out = {
        "accuracy": float(m.accuracy_score(y_true, y_hat)),
        "balanced_accuracy": float(m.balanced_accuracy_score(y_true, y_hat)),
        "log_loss": float(m.log_loss(y_true, proba, labels=labels)),
        "f1_macro": float(m.f1_score(y_true, y_hat, labels=labels, average="macro")),
    }
    if task == "binary":
        return {"roc_auc": float(m.roc_auc_score(y_true, proba[:, 1])), **out}
    present = np.unique(y_true)
    if len(present) == n_classes:
        auc = m.roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=labels)
        out = {"roc_auc": float(auc), **out}
    return out


def fold_means(per_fold: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Mean of each metric over the folds that define it (every fold for most)."""
    names = dict.fromkeys(k for fold in per_fold for k in fold)
    return {k: float(np.mean([f[k] for f in per_fold if k in f])) for k in names}


# ---------------------------------------------------------------------------- the loop


def failed_result(
    task: str, error: BaseException | str, *, started: float, fidelity: float, n_train_rows: int = 0
) -> TrialResult:
    """A ``failed`` result; ``started`` is the ``time.perf_counter()`` of the start."""
    message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return TrialResult(
        status="failed",
        score=None,
        metric=PRIMARY_METRICS.get(task, ""),
        metrics={},
        cost_seconds=time.perf_counter() - started,
        fidelity=float(fidelity) if isinstance(fidelity, numbers.Real) else float("nan"),
        n_train_rows=n_train_rows,
        error=message,
    )


def evaluate_family(
    family: Family,
    config: Mapping[str, Any],
    X: pd.DataFrame,
    y: pd.Series | np.ndarray,
    task: str,
    *,
    fidelity: float = 1.0,
    folds: int = 5,
    seed: int = 0,
) -> TrialResult:
    """Cross-validate one config of ``family`` on ``(X, y)``; never raises.

    See the module docstring for the protocol, and
    :func:`hyperprior.training.families.evaluate` for the arguments.
    """
    if family.setup is not None:
        try:
            family.setup()
        except Exception as exc:
            return failed_result(task, exc, started=time.perf_counter(), fidelity=fidelity)
    started = time.perf_counter()
    train_rows: list[int] = []
    try:
        metric = primary_metric(task)
        if not isinstance(fidelity, numbers.Real) or not 0.0 < float(fidelity) <= 1.0:
            raise ValueError(f"fidelity must be in (0, 1], got {fidelity!r}")
        fidelity = float(fidelity)
        cfg = family.space.validate(config, task)
        Xp, y_codes, n_classes = prepare_data(X, y, task)
        splits = make_folds(y_codes, task, folds, seed)
        per_fold: list[dict[str, float]] = []
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1), warnings.catch_warnings():
            # Convergence and deprecation chatter from thousands of trials is noise;
            # what matters is recorded in the result.
            warnings.simplefilter("ignore")
            fit_seconds = predict_seconds = 0.0
            for fold, (tr, va) in enumerate(splits):
                if family.fidelity_unit == "rows":
                    tr = subsample_rows(tr, y_codes, task, fidelity, abs(seed) * 1009 + fold)
                model = family.build(cfg, task, n_classes, seed, float(fidelity))
                fit_started = time.perf_counter()
                model.fit(Xp.iloc[tr], y_codes[tr])
                predict_started = time.perf_counter()
                pred = _predict(model, Xp.iloc[va], task, n_classes)
                fit_seconds += predict_started - fit_started
                predict_seconds += time.perf_counter() - predict_started
                per_fold.append(score_predictions(y_codes[va], pred, task, n_classes))
                train_rows.append(len(tr))
        metrics = fold_means(per_fold)
        metrics[f"{metric}_std"] = float(np.std([f[metric] for f in per_fold]))
        metrics["n_folds"] = float(len(per_fold))
        metrics["fit_seconds"] = fit_seconds
        metrics["predict_seconds"] = predict_seconds
        score = metrics[metric]
        n_rows = round(float(np.mean(train_rows)))
        if not math.isfinite(score):
            return failed_result(
                task,
                f"non-finite {metric}: {score}",
                started=started,
                fidelity=fidelity,
                n_train_rows=n_rows,
            )
        return TrialResult(
            status="ok",
            score=score,
            metric=metric,
            metrics=metrics,
            cost_seconds=time.perf_counter() - started,
            fidelity=float(fidelity),
            n_train_rows=n_rows,
            error=None,
        )
    except Exception as exc:
        n_rows = round(float(np.mean(train_rows))) if train_rows else 0
        return failed_result(task, exc, started=started, fidelity=fidelity, n_train_rows=n_rows)
