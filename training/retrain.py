"""The retrain job: fit a new surrogate on the current history and promote it if not worse.

:func:`retrain` for one family:

1. takes the store lock ``retrain:{family}`` (a lease with a TTL, refreshed by a
   background thread while training, so a crashed or killed retrain's lock expires on
   its own and two retrains never overlap);
2. reads every run of the family (ok and failed) through the store, builds the
   training set, grouped-CVs the recipe and fits the candidate on all runs, with the
   portfolio (best configs per dataset) in its metadata;
3. registers the candidate and activates it only if its grouped-CV top-1 regret is not
   worse than the active model's **on the same data**, within ``tolerance``.

"The active model's regret on the same data" is the grouped CV of the active model's
recipe (its stored :class:`~training.surrogate.SurrogateParams`) over the current runs,
with the candidate's folds. The stored CV metrics of the active model were measured
on older, smaller data and are not comparable; its in-sample predictions on today's
data would flatter it (it trained on most of those runs). When the recipes are equal
the comparison is exact without refitting (grouped CV is deterministic for a recipe
and a training set), so the newer model, which has seen more runs, is promoted.

Nothing changes the active model until the very last call (``activate_surrogate``,
one transaction in the store): a retrain that crashes or is killed at any point before
leaves the active model serving, at worst with an unpromoted candidate in the
registry. If the lease was lost mid-way (a stall longer than the TTL) the candidate
is registered but not activated.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from hyperprior.db.entities import split_surrogate_key, surrogate_key
from hyperprior.training.confidence import fit_from_cv, group_folds
from hyperprior.training.families import PRIMARY_METRICS, TASK_METRICS, find_family
from hyperprior.training.families.declared import (
    MIN_DECLARED_DATASETS,
    is_declared,
    load_declared,
)
from hyperprior.training.features import (
    FEATURES_VERSION,
    MINIMISED_METRICS,
    TrainingSet,
    build_training_set,
    runs_for_target,
)
from hyperprior.training.suggest import Portfolio, with_portfolio
from hyperprior.training.surrogate import (
    CVReport,
    Surrogate,
    SurrogateParams,
    cross_validate,
    cv_subset,
    fit,
    from_text,
    load,
    save,
)

log = logging.getLogger(__name__)

MIN_DATASETS = 3
"""Fewer datasets than this cannot be cross-validated by dataset meaningfully."""

# A declared family (POST /v1/families) needs more: see MIN_DECLARED_DATASETS (10).

MIN_TARGET_DATASETS = 20
"""A metric other than the primary gets a surrogate of its own once runs on this many
datasets have measured it (fewer: requests naming it are ranked by the primary metric)..."""

MIN_TARGET_COVERAGE = 0.8
"""... and at least this share of the family's datasets of the tasks that have the metric:
a surrogate of a skewed subset (say, only the newest bootstrap's datasets) would rank
worse than the primary one it replaces for that metric."""

#: Metrics a surrogate of its own can rank by: each task metric that is not the primary
#: metric of every task it belongs to (``roc_auc`` is primary for binary only, so it has
#: a surrogate for multiclass requests; ``r2`` has none).
TARGETS = tuple(
    sorted(
        metric
        for metric in {m for metrics in TASK_METRICS.values() for m in metrics}
        if any(
            metric in metrics and PRIMARY_METRICS[task] != metric
            for task, metrics in TASK_METRICS.items()
        )
    )
)


class RetrainStore(Protocol):
    """What :func:`retrain` needs from the store (``hyperprior.db.store.Store`` implements it)."""

    def runs_frame(
        self, *, family: str | None = None, status: str | None = "ok"
    ) -> pd.DataFrame: ...  # pragma: no cover - protocol

    def find_active_surrogate(self, family: str, target: str = "") -> Any: ...  # pragma: no cover

    def add_surrogate(
        self,
        *,
        family: str,
        model_text: str,
        n_runs: int,
        metrics: Mapping[str, Any],
        meta: Mapping[str, Any] | None = None,
        status: str = "candidate",
        target: str = "",
    ) -> Any: ...  # pragma: no cover

    def activate_surrogate(self, surrogate_id: int) -> Any: ...  # pragma: no cover

    def prune_retired_surrogates(
        self, family: str, target: str = "", *, keep: int
    ) -> int: ...  # pragma: no cover

    def try_acquire_lock(self, name: str, owner: str, ttl_seconds: float) -> bool: ...

    def refresh_lock(self, name: str, owner: str, ttl_seconds: float) -> bool: ...

    def release_lock(self, name: str, owner: str) -> bool: ...


@dataclass(frozen=True)
class RetrainResult:
    """What a retrain did.

    Attributes:
        family: the family.
        target: ``""`` for the primary-metric surrogate, else the metric it ranks by.
        outcome: ``activated`` (the candidate now serves), ``kept`` (registered as a
            candidate, the active model stays), ``locked`` (another retrain holds the
            lock; nothing done), ``no_data`` (too little history; nothing done).
        reason: one sentence on why.
        candidate_id: the registered candidate, if any.
        previous_id: the model active before, if any.
        metrics: the candidate's grouped-CV metrics.
        active_metrics: the active model's recipe, grouped-CV on the same data.
        n_runs: runs the candidate was trained on.
        n_datasets: datasets among them.
        seconds: wall time.
        pruned: retired surrogates of the (family, target) deleted after the
            activation (``keep_retired``).
    """

    family: str
    outcome: str
    reason: str
    target: str = ""
    candidate_id: int | None = None
    previous_id: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    active_metrics: dict[str, Any] | None = None
    n_runs: int = 0
    n_datasets: int = 0
    seconds: float = 0.0
    pruned: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


def default_owner() -> str:
    """A lock owner id unique to this process and call."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class _LeaseKeeper:
    """Refreshes a lease every ``ttl / 3`` seconds in a daemon thread."""

    def __init__(self, store: RetrainStore, name: str, owner: str, ttl: float) -> None:
        self.store, self.name, self.owner, self.ttl = store, name, owner, ttl
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease:{name}", daemon=True)

    def __enter__(self) -> _LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(max(self.ttl / 3.0, 0.05)):
            try:
                if not self.store.refresh_lock(self.name, self.owner, self.ttl):
                    self.lost = True
                    log.error("lost the lock %s while retraining", self.name)
                    return
            except Exception as exc:  # noqa: BLE001 - keep trying until the TTL runs out
                log.warning("could not refresh the lock %s: %s", self.name, exc)

    def check(self) -> bool:
        """Whether the lease is still ours (refreshes it now)."""
        if self.lost:
            return False
        try:
            return bool(self.store.refresh_lock(self.name, self.owner, self.ttl))
        except Exception:  # noqa: BLE001
            return False


def _same_recipe(meta: Mapping[str, Any], params: SurrogateParams) -> bool:
    return (
        meta.get("features_version") == FEATURES_VERSION
        and SurrogateParams.from_dict(meta.get("params", {})) == params
    )


def retrain(
    store: RetrainStore,
    family: str,
    *,
    tolerance: float = 0.0,
    params: SurrogateParams | None = None,
    force: bool = False,
    owner: str | None = None,
    lock_ttl_seconds: float = 600.0,
    min_datasets: int | None = None,
    progress: Callable[[str], None] | None = None,
    target: str = "",
    keep_retired: int | None = None,
) -> RetrainResult:
    """Retrain the surrogate of ``family`` and promote it if it is not worse.

    Args:
        store: the run history and surrogates registry.
        family: the model family.
        target: ``""`` (default) for the primary metric of each task, or a metric of
            the runs' ``metrics`` maps (:data:`TARGETS`): the surrogate then learns
            and ranks by that metric, from the runs that measured it.
        tolerance: how much larger (in normalised regret) the candidate's top-1 regret
            may be than the active recipe's and still be promoted.
        params: the recipe (default: the family's, :meth:`SurrogateParams.for_family`).
        force: activate the candidate whatever the comparison says.
        owner: lock owner id (default: host, pid and a random suffix).
        lock_ttl_seconds: lease length; a retrain that dies holds the lock at most
            this long.
        min_datasets: fewer datasets than this: nothing is trained (None:
            :data:`MIN_DATASETS` for a family registered in code,
            :data:`~hyperprior.training.families.declared.MIN_DECLARED_DATASETS` for a
            declared one).
        progress: called with a short message at each step.
        keep_retired: after an activation, keep only this many retired surrogates of
            the (family, target), the newest (None: keep them all). Active and
            candidate surrogates are never deleted.

    Returns:
        What happened; see :class:`RetrainResult`.
    """
    started = time.perf_counter()
    params = params or SurrogateParams.for_family(family)
    owner = owner or default_owner()
    key = surrogate_key(family, target)
    lock = f"retrain:{key}"
    say = progress or (lambda message: log.info("retrain %s: %s", key, message))

    if target and target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; one of: {', '.join(TARGETS)}")
    _know_declared(store, family)
    if min_datasets is None:
        min_datasets = MIN_DECLARED_DATASETS if is_declared(family) else MIN_DATASETS
    if not store.try_acquire_lock(lock, owner, lock_ttl_seconds):
        return RetrainResult(family, "locked", f"another retrain holds {lock}", target=target)
    try:
        with _LeaseKeeper(store, lock, owner, lock_ttl_seconds) as lease:
            return _retrain_locked(
                store,
                family,
                params,
                tolerance=tolerance,
                force=force,
                min_datasets=min_datasets,
                lease=lease,
                say=say,
                started=started,
                target=target,
                keep_retired=keep_retired,
            )
    finally:
        try:
            store.release_lock(lock, owner)
        except Exception as exc:  # noqa: BLE001 - the TTL frees it anyway
            log.warning("could not release %s: %s", lock, exc)


def _know_declared(store: RetrainStore, family: str) -> None:
    """Register ``family`` from the store's declarations when this process lacks it
    (``hyperprior retrain`` and the retrainer service start with the built-ins only)."""
    if find_family(family) is None and hasattr(store, "list_families"):
        load_declared(store)


def _retrain_locked(
    store: RetrainStore,
    family: str,
    params: SurrogateParams,
    *,
    tolerance: float,
    force: bool,
    min_datasets: int,
    lease: _LeaseKeeper,
    say: Callable[[str], None],
    started: float,
    target: str = "",
    keep_retired: int | None = None,
) -> RetrainResult:
    if target in MINIMISED_METRICS and params.spread_scale > 0:
        # Log-loss or RMSE have no 0-1 scale to measure a flat dataset's spread in.
        params = replace(params, spread_scale=0.0)
    say("reading runs")
    runs = runs_for_target(store.runs_frame(family=family, status=None), target)
    ts = build_training_set(runs, family, normalisation=params.normalisation)
    if ts.n_datasets < min_datasets:
        return RetrainResult(
            family,
            "no_data",
            f"{ts.n_datasets} usable datasets, at least {min_datasets} are needed",
            target=target,
            n_runs=len(ts),
            n_datasets=ts.n_datasets,
            seconds=time.perf_counter() - started,
        )
    cv_ts = cv_subset(ts, params)
    folds = group_folds(cv_ts, params.cv_folds)
    say(f"grouped CV by source group on {len(cv_ts)} runs of {cv_ts.n_datasets} datasets")
    report = cross_validate(cv_ts, params, folds=folds)
    say("fitting on all runs")
    candidate = fit(ts, params, cv=report)
    ok_runs = runs[runs["status"] == "ok"] if "status" in runs.columns else runs
    portfolio = Portfolio.from_frame(ok_runs, family)
    candidate = with_portfolio(candidate, portfolio)
    say("calibrating p_beats_default on the held-out folds")
    candidate = with_confidence(candidate, cv_ts, report, folds, portfolio)
    candidate = Surrogate(candidate.text, {**candidate.metadata, "target": target})

    active = store.find_active_surrogate(family, target)
    active_metrics: dict[str, Any] | None = None
    if active is not None:
        active_metrics = _active_metrics_on(cv_ts, runs, active.meta, params, report, folds, say)
    activate, reason = _decide(report.metrics, active_metrics, tolerance=tolerance, force=force)
    metrics = dict(report.metrics)
    if active_metrics is not None:
        metrics["compared_with"] = {"id": int(active.id), **_short(active_metrics)}

    if not lease.check():
        activate, reason = False, "lost the retrain lock; registered the candidate only"
    say("registering the candidate")
    record = store.add_surrogate(
        family=family,
        model_text=candidate.text,
        n_runs=len(ts),
        metrics=metrics,
        meta=candidate.metadata,
        status="candidate",
        target=target,
    )
    outcome = "kept"
    pruned = 0
    if activate:
        store.activate_surrogate(int(record.id))
        outcome = "activated"
        if keep_retired is not None:
            pruned = _prune(store, family, target, keep_retired, say)
    say(f"{outcome}: {reason}")
    return RetrainResult(
        family=family,
        outcome=outcome,
        reason=reason,
        target=target,
        candidate_id=int(record.id),
        previous_id=None if active is None else int(active.id),
        metrics=metrics,
        active_metrics=active_metrics,
        n_runs=len(ts),
        n_datasets=ts.n_datasets,
        seconds=time.perf_counter() - started,
        pruned=pruned,
    )


def _prune(
    store: RetrainStore, family: str, target: str, keep: int, say: Callable[[str], None]
) -> int:
    """Apply the retention of retired surrogates; a failure only costs disk space."""
    try:
        pruned = int(store.prune_retired_surrogates(family, target, keep=keep))
    except Exception as exc:  # noqa: BLE001 - the new model is active; cleanup can wait
        log.warning(
            "could not prune retired surrogates of %s: %s", surrogate_key(family, target), exc
        )
        return 0
    if pruned:
        say(f"deleted {pruned} retired surrogates (keeping the newest {keep})")
    return pruned


def targets_with_data(
    runs: pd.DataFrame,
    *,
    min_datasets: int = MIN_TARGET_DATASETS,
    min_coverage: float = MIN_TARGET_COVERAGE,
) -> list[str]:
    """The metrics of :data:`TARGETS` that successful runs measured on enough datasets:
    at least ``min_datasets``, and ``min_coverage`` of the datasets whose task has it."""
    if "metrics" not in runs.columns or runs.empty:
        return []
    ok = runs[runs["status"] == "ok"]
    seen: dict[str, set[Any]] = {}
    for dataset, task, metrics in zip(ok["dataset_id"], ok["task"], ok["metrics"], strict=True):
        if isinstance(metrics, dict):
            for name in metrics:
                if name in TASK_METRICS[task]:
                    seen.setdefault(name, set()).add(dataset)
    by_task = ok.groupby("task")["dataset_id"].nunique()
    out = []
    for target in TARGETS:
        measured = len(seen.get(target, ()))
        eligible = sum(n for task, n in by_task.items() if target in TASK_METRICS[task])
        if measured >= min_datasets and measured >= min_coverage * eligible:
            out.append(target)
    return out


def retrain_family(
    store: RetrainStore,
    family: str,
    *,
    targets: bool = True,
    min_target_datasets: int = MIN_TARGET_DATASETS,
    **options: Any,
) -> list[RetrainResult]:
    """Retrain the family's primary surrogate, then (``targets``) one per metric of
    :data:`TARGETS` that enough datasets measured; ``options`` go to :func:`retrain`."""
    results = [retrain(store, family, **options)]
    if targets:
        runs = store.runs_frame(family=family, status="ok")
        for target in targets_with_data(runs, min_datasets=min_target_datasets):
            results.append(retrain(store, family, target=target, **options))
    return results


def retrain_missing_targets(
    store: Any,
    family: str,
    *,
    min_target_datasets: int = MIN_TARGET_DATASETS,
    **options: Any,
) -> list[RetrainResult]:
    """Fit now the metric surrogates the nightly retrain would add: each metric the runs
    measured widely enough (:func:`targets_with_data`) whose (family, metric) has never
    had a surrogate in the registry, whatever its status.

    A database seeded from the shipped history (whose runs carry every metric) thus
    ranks ``"metric": "log_loss"`` requests by log-loss within minutes of its first
    start; a (family, metric) trained before is left to the nightly retrain.
    ``options`` go to :func:`retrain`.
    """

    def trained() -> set[str]:
        return {str(s.target) for s in store.list_surrogates(family)}

    if set(TARGETS) <= trained():
        return []  # a restart of a trained database reads no runs
    runs = store.runs_frame(family=family, status="ok")
    results = []
    for target in targets_with_data(runs, min_datasets=min_target_datasets):
        # Asked before each fit: another process catching up (a second API worker) may
        # have done it meanwhile.
        if target not in trained():
            results.append(retrain(store, family, target=target, **options))
    return results


def with_confidence(
    surrogate: Surrogate,
    ts: TrainingSet,
    report: CVReport,
    folds: Any,
    portfolio: Portfolio,
) -> Surrogate:
    """A copy of ``surrogate`` whose metadata carries its ``p_beats_default`` calibration.

    The calibration and the distance threshold are learned on the out-of-fold predictions
    of ``report`` (folds by source group); see :mod:`hyperprior.training.confidence`.
    """
    if report.oof_members is None:
        return surrogate
    calibration, summary = fit_from_cv(
        ts,
        report.oof_members,
        folds,
        portfolio.to_json(),
        kappa=surrogate.kappa,
        # The bar is learned on the p the served model gives.
        beats=report.oof_beats if surrogate.has_beats else None,
        beats_weight=surrogate.params.beats_weight,
    )
    meta = dict(surrogate.metadata)
    meta["confidence"] = {
        "calibration": None if calibration is None else calibration.to_json(),
        "held_out": summary,
    }
    return Surrogate(surrogate.text, meta)


def _active_metrics_on(
    ts: Any,
    runs: pd.DataFrame,
    meta: Mapping[str, Any],
    params: SurrogateParams,
    report: CVReport,
    folds: Any,
    say: Callable[[str], None],
) -> dict[str, Any]:
    if _same_recipe(meta, params):
        return dict(report.metrics)
    active_params = SurrogateParams.from_dict(meta.get("params", {}))
    say("grouped CV of the active model's recipe on the same runs")
    active_ts = ts
    if active_params.normalisation != params.normalisation:
        # Same rows (the same groups are informative), other target.
        full = build_training_set(runs, ts.family, normalisation=active_params.normalisation)
        active_ts = full.subset(pd.Series(full.dataset).isin(set(ts.dataset)).to_numpy())
        if len(active_ts) != len(ts):  # pragma: no cover - same rows by construction
            folds = group_folds(active_ts, active_params.cv_folds)
    return dict(cross_validate(active_ts, active_params, folds=folds).metrics)


def _short(metrics: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("regret_at_1", "ndcg_at_5", "spearman")
    return {k: metrics[k] for k in keys if k in metrics}


def _decide(
    candidate: Mapping[str, Any],
    active: Mapping[str, Any] | None,
    *,
    tolerance: float,
    force: bool,
) -> tuple[bool, str]:
    regret = candidate.get("regret_at_1")
    if force:
        return True, "forced"
    if regret is None:
        return False, "the candidate has no grouped-CV regret (no dataset to evaluate on)"
    if active is None:
        return True, f"no active model; candidate regret {regret:.4f}"
    old = active.get("regret_at_1")
    if old is None:
        return True, "the active model has no comparable regret"
    if regret <= old + tolerance:
        return True, f"regret {regret:.4f} <= active {old:.4f} + tolerance {tolerance:g}"
    return False, f"regret {regret:.4f} > active {old:.4f} + tolerance {tolerance:g}"


def surrogate_summary(surrogate: Surrogate) -> dict[str, Any]:
    """Short description of a fitted surrogate for logs and CLI output."""
    return {
        "family": surrogate.family,
        "sha256": surrogate.sha256,
        "n_runs": surrogate.metadata.get("training", {}).get("n_runs"),
        "cv": _short(surrogate.metadata.get("cv", {})),
    }


def export_active(store: Any, directory: Path, families: Sequence[str]) -> list[Path]:
    """Write each family's active surrogates as ``KEY.txt`` + ``KEY.json``.

    ``KEY`` is the family for the primary-metric surrogate and ``FAMILY@METRIC`` for
    one of another metric.

    The JSON is the surrogate's metadata (with its sha256) plus the registry's metrics
    and run count, so :func:`install_shipped` can register it elsewhere unchanged.

    Returns:
        The metadata files written (families without an active surrogate are skipped).
    """
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    keys = sorted(store.active_surrogate_ids())
    for family in families:
        for key in [k for k in keys if k == family or k.startswith(f"{family}@")]:
            target = split_surrogate_key(key)[1]
            record = store.find_active_surrogate(family, target)
            if record is None or record.model_text is None:
                continue
            surrogate = from_text(record.model_text, record.meta, sha256=record.sha256)
            surrogate.metadata["registry"] = {"metrics": record.metrics, "n_runs": record.n_runs}
            written.append(save(surrogate, directory, key))
    return written


def install_shipped(store: Any, directory: Path) -> dict[str, int | None]:
    """Register the surrogates in ``directory`` for (family, target)s without an active one.

    Each ``FAMILY.txt`` is checked against the sha256 in ``FAMILY.json`` before it is
    parsed; a mismatch raises :class:`~training.surrogate.SurrogateIntegrityError`.

    Returns:
        key (family, or ``family@metric``) -> id of the registered (and activated)
        surrogate, or None when it already had an active one.
    """
    out: dict[str, int | None] = {}
    for meta_path in sorted(directory.glob("*.json")):
        surrogate = load(directory, meta_path.stem)
        target = str(surrogate.metadata.get("target", ""))
        key = surrogate_key(surrogate.family, target)
        if store.find_active_surrogate(surrogate.family, target) is not None:
            out[key] = None
            continue
        registry = dict(surrogate.metadata.get("registry", {}))
        record = store.add_surrogate(
            family=surrogate.family,
            model_text=surrogate.text,
            n_runs=int(
                registry.get("n_runs", surrogate.metadata.get("training", {}).get("n_runs", 0))
            ),
            metrics=registry.get("metrics", surrogate.metadata.get("cv", {})),
            meta=surrogate.metadata,
            status="active",
            target=target,
        )
        out[key] = int(record.id)
    return out
