"""The bootstrap job: real trials of every family over the dataset catalog.

Each (dataset, family) gets the library default plus a scrambled Sobol sample of the
family's space at full fidelity, and the first few of those again at reduced
fidelities. Large datasets (at least ``BootstrapConfig.large_rows`` rows) get a cheaper
plan: only the default and the first Sobol configs at full fidelity, every config at the
reduced fidelities (see :func:`plan_trials`). Every trial becomes a run with source
``bootstrap``.

Run ids are derived from the trial itself (dataset, family, config, fidelity, folds,
seed), so the job is resumable and idempotent: trials whose run is already stored are
skipped, and re-recording a run is a duplicate, never a second row.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from hyperprior.db.store import DatasetSpec, NewRun, Store
from hyperprior.training.executor import TrialExecutor, time_limit
from hyperprior.training.families import FAMILIES
from hyperprior.vocabulary import canonical_json

log = logging.getLogger(__name__)

# Changing this namespace would orphan every stored bootstrap run: keep it fixed.
RUN_NAMESPACE = uuid.UUID("6f1c3a52-52f4-4c55-9a39-3c1d0f1f6e21")

DEFAULT_FAMILIES: tuple[str, ...] = tuple(FAMILIES)


@dataclass(frozen=True)
class BootstrapConfig:
    """How many trials of what to run; the defaults meet the shipped corpus' size."""

    families: tuple[str, ...] = DEFAULT_FAMILIES
    n_configs: int = 48
    n_configs_keras: int = 16
    reduced_fidelities: tuple[float, ...] = (0.25,)
    n_reduced: int = 12
    folds: int = 3
    seed: int = 0
    time_limit_seconds: float = 300.0
    # Datasets with at least this many rows get the large-data plan (None: none does).
    large_rows: int | None = 50_000
    # On those, the default and the first large_full_configs - 1 Sobol configs run at
    # full fidelity; every config runs at the reduced fidelities.
    large_full_configs: int = 8

    def is_large(self, rows: int | None) -> bool:
        """Whether a dataset of ``rows`` rows gets the large-data plan."""
        return self.large_rows is not None and rows is not None and rows >= self.large_rows

    def configs_for(self, family: str) -> int:
        """How many configs per dataset ``family`` gets, the default included."""
        return self.n_configs_keras if family == "keras_mlp" else self.n_configs


@dataclass(frozen=True)
class TrialSpec:
    """One trial to run: everything a worker needs, and nothing that is not picklable."""

    dataset: str
    task: str
    family: str
    config_json: str
    fidelity: float
    folds: int
    seed: int
    time_limit_seconds: float
    origin: str  # "default", "sobol" or "adaptive"

    @property
    def config(self) -> dict[str, Any]:
        return dict(json.loads(self.config_json))

    @property
    def run_id(self) -> uuid.UUID:
        key = "|".join(
            [
                self.dataset,
                self.family,
                self.config_json,
                f"{self.fidelity:.6g}",
                str(self.folds),
                str(self.seed),
            ]
        )
        return uuid.uuid5(RUN_NAMESPACE, key)


@dataclass
class BootstrapReport:
    """What a bootstrap call did."""

    planned: int = 0
    skipped: int = 0
    ran: int = 0
    failed: int = 0
    inserted: int = 0
    remeasured: int = 0
    seconds: float = 0.0
    by_family: dict[str, int] = field(default_factory=dict)

    def add(self, other: BootstrapReport) -> None:
        """Count ``other``'s trials in this report too."""
        for name in ("planned", "skipped", "ran", "failed", "inserted", "remeasured", "seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for family, n in other.by_family.items():
            self.by_family[family] = self.by_family.get(family, 0) + n





def _dataset_seed(name: str, family: str, seed: int) -> int:
    # Different Sobol points per dataset cover the space better than one shared sample.
    return (zlib.crc32(f"{name}|{family}".encode()) + seed) % (2**31)


def plan_trials(
    datasets: Sequence[tuple[str, str]],
    config: BootstrapConfig,
    *,
    rows: Mapping[str, int] | None = None,
) -> list[TrialSpec]:
    """Every trial for ``datasets`` (pairs of name and task), cheapest datasets first.

    Per (dataset, family) the configs are the library default and ``n - 1`` Sobol
    points (``n`` from :meth:`BootstrapConfig.configs_for`). On a dataset with fewer
    than ``config.large_rows`` rows (or not in ``rows``) every config runs at full
    fidelity and the first ``n_reduced`` also at each reduced fidelity. On a larger one
    only the first ``large_full_configs`` (the default and the first Sobol points) run at
    full fidelity and *every* config runs at the reduced fidelities, so the surrogate
    still sees the whole Sobol plan there at about 40% of the cost (lightgbm with the
    defaults: 8 + 48 x 0.25 = 20 full-fidelity equivalents instead of 48 + 12 x 0.25 =
    51). The large plan uses the same reduced fidelities as the small one (0.25 by
    default, at least 12,500 rows on such a dataset): a fidelity that only large
    datasets had would be confounded with their size in the surrogate's trees.

    Every trial of the large plan has the id it has in the small plan (the configs and
    their order do not depend on the size), so changing the threshold orphans no run.

    Args:
        datasets: ``(name, task)`` pairs, in the order to run them.
        config: what to run per dataset and family.
        rows: rows per dataset name, to pick the plan; without it every dataset gets
            the small plan.

    Returns:
        The trial specs; the first of each (dataset, family) is the library default.
    """
    from hyperprior.training.spaces import get_space

    specs: list[TrialSpec] = []
    for name, task in datasets:
        large = config.is_large(rows.get(name) if rows is not None else None)
        for family in config.families:
            space = get_space(family)
            n = config.configs_for(family)
            configs = [("default", space.default(task))]
            sampled = space.sample(max(0, n - 1), _dataset_seed(name, family, config.seed), task)
            configs += [("sobol", c) for c in sampled]
            for i, (origin, cfg) in enumerate(configs):
                if large:
                    fidelities = [1.0] if i < config.large_full_configs else []
                    fidelities += list(config.reduced_fidelities)
                else:
                    fidelities = [1.0]
                    if i < config.n_reduced:
                        fidelities += list(config.reduced_fidelities)
                for fid in fidelities:
                    specs.append(_spec(name, task, family, cfg, float(fid), config, origin))
    return specs


def plan_summary(config: BootstrapConfig) -> str:
    """Which configs run at which fidelity, in words (for ``--dry-run``)."""
    reduced = ", ".join(f"{f:g}" for f in config.reduced_fidelities) or "none"
    small = f"every config at fidelity 1, the first {config.n_reduced} also at {reduced}"
    if config.large_rows is None:
        return small
    k = config.large_full_configs
    return (
        f"under {config.large_rows:,} rows: {small}; from {config.large_rows:,} rows: "
        f"the default and the first {k - 1} Sobol configs at fidelity 1, every config "
        f"at {reduced}"
    )


def _spec(
    name: str,
    task: str,
    family: str,
    cfg: dict[str, Any],
    fidelity: float,
    config: BootstrapConfig,
    origin: str,
) -> TrialSpec:
    return TrialSpec(
        dataset=name,
        task=task,
        family=family,
        config_json=canonical_json(cfg),
        fidelity=fidelity,
        folds=config.folds,
        seed=config.seed,
        time_limit_seconds=config.time_limit_seconds,
        origin=origin,
    )


# ---------------------------------------------------------------------------- adaptive

#: Best configs of a (dataset, family) that an adaptive round perturbs, in turn.
ADAPTIVE_PARENTS = 3
#: Step of a perturbation in the unit cube: it shrinks by ADAPTIVE_DECAY every round.
ADAPTIVE_SIGMA = 0.15
ADAPTIVE_DECAY = 0.75


def plan_adaptive(
    runs: Any,
    datasets: Sequence[tuple[str, str]],
    config: BootstrapConfig,
    *,
    n_adaptive: int,
    round_size: int = 4,
    attempt: int = 0,
) -> list[TrialSpec]:
    """The next round of local search around each (dataset, family)'s best configs.

    After the Sobol sample, the best known config of a dataset is only as good as the
    best of 48 random points. Each round perturbs the ``ADAPTIVE_PARENTS`` best stored
    full-fidelity configs in the unit cube (a Gaussian step that shrinks every round)
    until ``n_adaptive`` configs beyond the Sobol plan are stored, so each dataset's best
    known config moves toward its optimum and the surrogate sees what lies near it.

    Resumable like the rest: what is done is read from ``runs`` (the store's runs frame):
    full-fidelity bootstrap runs that the Sobol plan of ``config`` does not contain (so
    ask with the ``n_configs`` the Sobol sample was run with: a smaller one counts the
    rest of that sample as adaptive). ``attempt`` varies
    the steps when a round proposed only configs that were already stored.

    Returns:
        At most ``round_size`` trials per (dataset, family) that still needs some.
    """
    import dataclasses

    import numpy as np

    from hyperprior.training.spaces import get_space

    specs: list[TrialSpec] = []
    if runs is None or len(runs) == 0:
        return specs
    full = runs[(runs["fidelity"] == 1.0) & (runs["source"] == "bootstrap")]
    by_key = {key: group for key, group in full.groupby(["dataset_name", "family"], sort=False)}
    for name, task in datasets:
        for family in config.families:
            mine = by_key.get((name, family))
            if mine is None:
                continue
            one = dataclasses.replace(config, families=(family,))
            # The small plan (no rows) holds every Sobol config at full fidelity: on a
            # large dataset too, one of them stored at fidelity 1 is not adaptive.
            planned = {str(s.run_id) for s in plan_trials([(name, task)], one)}
            done = int((~mine["id"].astype(str).isin(planned)).sum())
            left = min(round_size, n_adaptive - done)
            ok = mine[mine["status"] == "ok"].sort_values("score", ascending=False, kind="stable")
            if left <= 0 or ok.empty:
                continue
            space = get_space(family)
            parents = space.encode_many(list(ok["config"].head(ADAPTIVE_PARENTS)))
            rng = np.random.default_rng(
                [_dataset_seed(name, family, config.seed), done, attempt, 7919]
            )
            sigma = ADAPTIVE_SIGMA * ADAPTIVE_DECAY ** (done // max(round_size, 1))
            for j in range(left):
                parent = parents[j % len(parents)]
                point = np.clip(parent + rng.normal(0.0, sigma, size=parent.shape), 0.0, 1.0)
                cfg = space.decode_many(point[None, :], task)[0]
                specs.append(_spec(name, task, family, cfg, 1.0, config, "adaptive"))
    return specs


def run_adaptive(
    store: Store,
    datasets: Sequence[tuple[str, str]],
    config: BootstrapConfig,
    executor: TrialExecutor,
    *,
    n_adaptive: int,
    round_size: int = 4,
    progress: bool = True,
) -> BootstrapReport:
    """Rounds of :func:`plan_adaptive` until every (dataset, family) has ``n_adaptive``
    configs beyond the Sobol plan (or a round proposes nothing new twice)."""
    total = BootstrapReport()
    families = set(config.families)
    stalled = 0
    for attempt in range(4 * (n_adaptive // max(round_size, 1) + 2)):
        runs = store.runs_frame(status=None)
        runs = runs[runs["family"].isin(families)]
        specs = plan_adaptive(
            runs, datasets, config, n_adaptive=n_adaptive, round_size=round_size, attempt=attempt
        )
        if not specs:
            break
        report = bootstrap(store, specs, executor, progress=progress)
        total.add(report)
        stalled = stalled + 1 if report.inserted == 0 else 0
        if stalled >= 2:
            break
    return total


@lru_cache(maxsize=2)
def _load(name: str) -> Any:
    from hyperprior.training.datasets import load_dataset

    return load_dataset(name)


def run_trial(spec: TrialSpec) -> Any:
    """Worker side: load the dataset (cached per process) and evaluate one config.

    Never raises for a bad config: a crash or timeout comes back as a failed result.
    """
    from hyperprior.training.families import TrialResult, evaluate, primary_metric

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    started = time.perf_counter()
    try:
        data = _load(spec.dataset)
        with time_limit(spec.time_limit_seconds):
            return evaluate(
                spec.family,
                spec.config,
                data.X,
                data.y,
                data.task,
                fidelity=spec.fidelity,
                folds=spec.folds,
                seed=spec.seed,
            )
    except Exception as exc:  # a timeout raised outside evaluate's own guard
        return TrialResult(
            status="failed",
            score=None,
            metric=primary_metric(spec.task),
            metrics={},
            cost_seconds=time.perf_counter() - started,
            fidelity=spec.fidelity,
            n_train_rows=0,
            error=f"{type(exc).__name__}: {exc}",
        )


def dataset_spec(name: str, *, seed: int = 0) -> DatasetSpec:
    """Load a catalog dataset and describe it as the store knows datasets."""
    from hyperprior.training.metafeatures import compute_metafeatures

    data = _load(name)
    mf = compute_metafeatures(data.X, data.y, data.task, seed=seed)
    return DatasetSpec(name=name, task=data.task, meta_features=mf)


def refresh_metafeatures(
    store: Store, names: Sequence[str], *, progress: bool = True
) -> tuple[int, int]:
    """Compute the meta-features of the stored catalog datasets among ``names`` again, and
    add to each record the ones it lacks (a meta-feature added since it was stored).

    Stored values are never changed: a recomputed value that differs from a stored one
    is a conflict the store reports (:meth:`Store.ensure_dataset`). Returns how many
    records were looked at and how many gained meta-features.
    """
    from tqdm import tqdm

    looked, filled = 0, 0
    for name in tqdm(names, desc="meta-features", unit="dataset", disable=not progress):
        stored = store.list_datasets(name=name, limit=1).data
        if not stored:
            continue
        looked += 1
        before = dict(stored[0].meta_features)
        after = store.ensure_dataset(dataset_spec(name)).meta_features
        filled += int(after != before)
    return looked, filled


def to_new_run(spec: TrialSpec, result: Any, dataset: DatasetSpec) -> NewRun:
    """The run to record for a finished trial."""
    ok = result.status == "ok"
    return NewRun(
        id=spec.run_id,
        family=spec.family,
        config=spec.config,
        metric=result.metric,
        direction="maximize",
        score=float(result.score) if ok else None,
        fidelity=spec.fidelity,
        cost_seconds=max(0.0, float(result.cost_seconds)),
        source="bootstrap",
        status="ok" if ok else "failed",
        error=None if ok else (result.error or "unknown error")[:2000],
        dataset=dataset,
        metrics=result.run_metrics() if ok else None,
    )


def bootstrap(
    store: Store,
    specs: Sequence[TrialSpec],
    executor: TrialExecutor,
    *,
    flush_every: int = 25,
    flush_seconds: float = 30.0,
    progress: bool = True,
    on_flush: Callable[[BootstrapReport], None] | None = None,
    remeasure: bool = False,
) -> BootstrapReport:
    """Run the specs not yet stored and record each as a ``bootstrap`` run.

    Results are written in small batches as they arrive, so an interrupted bootstrap
    keeps everything it finished; the next call skips those trials.

    With ``remeasure``, it runs instead the specs whose run is stored without metrics
    (measured before every metric was recorded) and adds the metrics to those runs,
    under their own ids; the stored score and the rest of the run are kept.

    Args:
        store: where runs are recorded (and read to skip finished trials).
        specs: the plan, usually from :func:`plan_trials`.
        executor: where trials run.
        flush_every: write after this many results ...
        flush_seconds: ... or after this long, whichever comes first.
        progress: show a progress bar on stderr.
        on_flush: called after every write with the report so far.

    Returns:
        Counts of what was planned, skipped, run, failed and inserted.
    """
    from tqdm import tqdm

    started = time.perf_counter()
    report = BootstrapReport(planned=len(specs))
    if remeasure:
        bare = store.runs_without_metrics(s.run_id for s in specs)
        todo = [s for s in specs if s.run_id in bare]
    else:
        done = store.existing_run_ids(s.run_id for s in specs)
        todo = [s for s in specs if s.run_id not in done]
    report.skipped = len(specs) - len(todo)
    if not todo:
        report.seconds = time.perf_counter() - started
        return report

    described: dict[str, DatasetSpec] = {}
    buffer: list[NewRun] = []
    last_flush = time.monotonic()

    def flush() -> None:
        nonlocal last_flush
        if buffer and remeasure:
            found = {run.id: run.metrics for run in buffer if run.metrics}
            report.remeasured += store.add_run_metrics(found)
            buffer.clear()
        elif buffer:
            report.inserted += store.ingest_runs(buffer).inserted
            buffer.clear()
        last_flush = time.monotonic()
        if on_flush is not None:
            on_flush(report)

    bar = tqdm(total=len(todo), desc="bootstrap", unit="trial", disable=not progress)
    try:
        for spec, result in executor.map_unordered(run_trial, _describe_first(todo, described)):
            buffer.append(to_new_run(spec, result, described[spec.dataset]))
            report.ran += 1
            report.by_family[spec.family] = report.by_family.get(spec.family, 0) + 1
            if result.status != "ok":
                report.failed += 1
            bar.update(1)
            bar.set_postfix(dataset=spec.dataset[-24:], failed=report.failed, refresh=False)
            if len(buffer) >= flush_every or time.monotonic() - last_flush > flush_seconds:
                flush()
        flush()
    finally:
        # Keep what finished even when interrupted.
        if buffer:
            flush()
        bar.close()
        report.seconds = time.perf_counter() - started
    return report


def _describe_first(
    todo: Iterable[TrialSpec], described: dict[str, DatasetSpec]
) -> Iterable[TrialSpec]:
    # Meta-features are computed in the parent as each dataset's first trial is submitted,
    # so a resumed run only describes the datasets it still has trials for.
    for spec in todo:
        if spec.dataset not in described:
            described[spec.dataset] = dataset_spec(spec.dataset)
        yield spec
