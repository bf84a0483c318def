"""Refinement: successive halving on real data, isolated trials, limits, recording."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from pool_helpers import crash, sleep_ignoring_alarms, times

from hyperprior.db.store import Store
from hyperprior.training.bootstrap import dataset_spec
from hyperprior.training.datasets import load_dataset
from hyperprior.training.executor import (
    InlineExecutor,
    IsolatedPoolExecutor,
    TrialExecutor,
    WorkerFailure,
)
from hyperprior.training.refine import (
    Candidate,
    RefineProgress,
    RefineSettings,
    candidates_from_suggestions,
    make_refine_executor,
    refine,
    relative_cost,
    rung_fidelities,
)
from hyperprior.training.retrain import install_shipped
from hyperprior.training.seed import SEED_DIR
from hyperprior.training.spaces import get_space
from hyperprior.training.suggest import SuggestionEngine, SuggestionRequest
from hyperprior.training.trials import TrialData, VerificationTrial

sqlite_only = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

FAST = RefineSettings(folds=3)


class ModelledTime:
    """A cost model for refinements: a fake clock and the executor that advances it.

    ``refine`` plans from its ``clock`` and from each trial's ``cost_seconds``; both
    come from here, so the plan, the budget cuts and the elapsed time are the same on
    any machine under any load (the trials still run for real, for their scores).

    A trial costs ``seconds`` per unit of :func:`relative_cost` (the family default's
    size) at full fidelity, a fifth of it fixed: ``seconds * size * (0.2 + 0.8 * f)``.
    Trials run one at a time on ``inner`` without a wall-clock limit; one whose modelled
    cost passes its time limit is not run but fails there as a timeout, as a worker
    killed at the limit would.
    """

    workers = 1

    def __init__(self, seconds: float, inner: TrialExecutor | None = None) -> None:
        self.seconds = seconds
        self.inner = inner or InlineExecutor()
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def cost(self, trial: VerificationTrial, task: str) -> float:
        default = get_space(trial.family).default(task)
        size = relative_cost(trial.family, trial.config, default)
        return self.seconds * size * (0.2 + 0.8 * trial.fidelity)

    def map_unordered(
        self, fn: Callable[..., Any], items: Iterable[Any], *, shared: Any = None
    ) -> Iterator[tuple[Any, Any]]:
        for item in items:  # lazily: refine decides on each trial with the clock now
            cost = self.cost(item, shared.task)
            limit = item.time_limit_seconds
            if limit is not None and cost > limit:
                self.now += limit
                message = f"trial exceeded its time limit of {limit:g} s (modelled)"
                yield item, WorkerFailure("timeout", message, limit)
                continue
            unbounded = dataclasses.replace(item, time_limit_seconds=None)
            [(_, outcome)] = self.inner.map_unordered(fn, [unbounded], shared=shared)
            self.now += cost
            if isinstance(outcome, WorkerFailure):
                yield item, dataclasses.replace(outcome, seconds=cost)
            else:
                yield item, dataclasses.replace(outcome, cost_seconds=cost)

    def close(self) -> None:
        self.inner.close()

    def refine(self, *args: Any, modelled_budget: float, **kwargs: Any) -> Any:
        """``refine`` on this cost model: the budget is in modelled seconds, never wall time."""
        return refine(
            *args, budget_seconds=modelled_budget, executor=self, clock=self.clock, **kwargs
        )


def _recorder(store: Store, into: list[Any]) -> Any:
    def record(runs: Any) -> None:
        store.ingest_runs(runs)
        into.extend(runs)

    return record


@pytest.fixture(scope="module")
def cancer() -> TrialData:
    data = load_dataset("sklearn/breast_cancer")
    return TrialData(data.X, data.y, data.task, data.name)


@pytest.fixture
def suggestions(store: Store, cancer: TrialData) -> list[Candidate]:
    """The shipped surrogate's top 6 lightgbm suggestions for breast_cancer."""
    install_shipped(store, SEED_DIR / "surrogates")
    meta = dataset_spec("sklearn/breast_cancer").meta_features
    answer = SuggestionEngine(store, store).suggest(
        SuggestionRequest("lightgbm", cancer.task, meta, n=6, seed=0)
    )
    assert answer.surrogate is not None
    return candidates_from_suggestions(answer.suggestions)


def test_rung_fidelities_follow_candidates_and_floor() -> None:
    assert rung_fidelities(9, 0.01) == pytest.approx((1 / 9, 1 / 3, 1.0))
    assert rung_fidelities(27, 0.01) == pytest.approx((1 / 27, 1 / 9, 1 / 3, 1.0))
    # Too few candidates to halve, or too little data for a low rung.
    assert rung_fidelities(2, 0.01) == (1.0,)
    assert rung_fidelities(9, 0.2) == pytest.approx((1 / 3, 1.0))
    assert rung_fidelities(9, 0.9) == (1.0,)


@sqlite_only
def test_refined_config_is_at_least_as_good_as_the_default(
    store: Store, cancer: TrialData, suggestions: list[Candidate]
) -> None:
    recorded: list[Any] = []
    seen: list[RefineProgress] = []
    spec = dataset_spec("sklearn/breast_cancer")
    # Modelled time: the default's full trial costs 0.05 s, one of 1,000 trees ~0.37 s, so
    # 6 s leave room to halve even when the top-1 is many times the default's size.
    modelled = ModelledTime(0.05)
    result = modelled.refine(
        cancer,
        "lightgbm",
        suggestions,
        modelled_budget=6,
        settings=FAST,
        dataset=spec,
        record=_recorder(store, recorded),
        progress=seen.append,
    )
    assert result.config is not None
    assert result.default_score is not None
    assert result.score is not None
    assert result.score >= result.default_score
    assert result.metric == "roc_auc"
    assert result.default_config == get_space("lightgbm").default("binary")
    # The control and the zero-shot pick are measured at full fidelity, with CV.
    full = {t.candidate for t in result.trials if t.fidelity == 1.0 and t.status == "ok"}
    assert {0, result.top_suggestion} <= full
    assert result.winner in full
    assert len(result.rungs) >= 2, "breast_cancer is big enough to halve"
    low = [t for t in result.trials if t.fidelity < 1.0]
    assert low, "the lowest rung ran"
    assert result.elapsed_seconds <= 6
    # Every measured trial is a verification run with the dataset's meta-features.
    measured = [t for t in result.trials if t.status != "cut"]
    assert len(recorded) == len(measured)
    runs = store.list_runs(source="verification", limit=1000).data
    assert len(runs) == len(measured)
    assert {r.family for r in runs} == {"lightgbm"}
    dataset = store.get_dataset(runs[0].dataset_id)
    assert dataset.name == "sklearn/breast_cancer"
    assert dataset.meta_features["n_rows"] == 569
    assert {r.fidelity for r in runs} == {t.fidelity for t in measured}
    # Progress counted every trial.
    assert seen[-1].trials_done == len(result.trials)
    summary = result.to_dict()
    assert summary["improvement"] == pytest.approx(result.score - result.default_score)
    assert len(summary["trials"]) == len(result.trials)


def test_same_seed_same_refinement(cancer: TrialData) -> None:
    # Small ensembles keep it quick; the rest of each config is a Sobol point.
    candidates = [
        {**c, "n_estimators": min(c["n_estimators"], 64)}
        for c in get_space("lightgbm").sample(5, 7, "binary")
    ]

    def run() -> Any:
        modelled = ModelledTime(0.1)
        return modelled.refine(
            cancer,
            "lightgbm",
            candidates,
            modelled_budget=300,
            settings=FAST,
            seed=3,
        )

    first, second = run(), run()
    assert first.complete
    assert second.complete
    table = [(t.candidate, t.fidelity, t.status, t.score) for t in first.trials]
    assert sorted(table) == sorted(
        (t.candidate, t.fidelity, t.status, t.score) for t in second.trials
    )
    assert (first.config, first.score) == (second.config, second.score)


def test_a_tiny_budget_is_reported_honestly(cancer: TrialData) -> None:
    # The real clock on purpose: the cut goes through the executor's own time limit.
    # Three random forest fits cannot finish in 50 ms, and load only slows them down.
    result = refine(
        cancer,
        "random_forest",
        [{"n_estimators": 500}],
        budget_seconds=0.05,
        settings=FAST,
    )
    assert result.config is None
    assert result.score is None
    assert not result.complete
    assert any("budget" in note for note in result.notes)
    cut = [t for t in result.trials if t.status == "cut"]
    assert cut
    assert all("budget ran out" in (t.error or "") for t in cut)


def test_invalid_and_duplicate_candidates(cancer: TrialData) -> None:
    default = get_space("linear").default("binary")
    result = ModelledTime(1.0).refine(
        cancer,
        "linear",
        [default, {"C": -1.0}, {"C": 0.5}, {"C": 0.5}],
        modelled_budget=60,
        settings=FAST,
    )
    configs = [c.config for c in result.candidates]
    assert configs[0] == default
    assert len(configs) == 2  # the default once, C=0.5 once, C=-1 rejected
    assert result.candidates[0].rank == 1  # the surrogate had ranked the default first
    assert any("candidate 2 skipped" in note for note in result.notes)


def test_keras_mlp_refinement_uses_epochs_as_fidelity() -> None:
    data = load_dataset("sklearn/wine")
    tiny = {"epochs": 6, "units": 16, "n_layers": 1, "batch_size": 32}
    candidates = [
        {**tiny, "learning_rate": 0.01},
        {**tiny, "learning_rate": 0.003, "optimizer": "adamw"},
    ]
    # Inline: TensorFlow's import in a fresh worker would cost more than the trials.
    modelled = ModelledTime(1.0)
    result = modelled.refine(
        TrialData(data.X, data.y, data.task, data.name),
        "keras_mlp",
        candidates,
        modelled_budget=90,
        settings=RefineSettings(folds=2),
    )
    assert result.rungs == pytest.approx((1 / 3, 1.0))
    assert all(t.status == "ok" for t in result.trials), result.trials
    assert sorted({t.fidelity for t in result.trials}) == pytest.approx([1 / 3, 1.0])
    assert result.score is not None
    assert result.default_score is not None
    assert result.score >= result.default_score
    assert result.metric == "accuracy"


def test_refinement_on_dask(cancer: TrialData) -> None:
    from distributed import LocalCluster

    from hyperprior.training.executor import DaskExecutor

    with LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        executor = make_refine_executor("linear", dask_scheduler=cluster.scheduler_address)
        assert isinstance(executor, DaskExecutor)
        on_dask = ModelledTime(1.0, executor)
        try:
            result = on_dask.refine(
                cancer,
                "linear",
                [{"C": 0.1}, {"C": 10.0}, {"C": 0.01}],
                modelled_budget=60,
                settings=FAST,
            )
        finally:
            executor.close()
    inline = ModelledTime(1.0)
    inline_result = inline.refine(
        cancer,
        "linear",
        [{"C": 0.1}, {"C": 10.0}, {"C": 0.01}],
        modelled_budget=60,
        settings=FAST,
    )
    assert result.complete
    assert (result.config, result.score) == (inline_result.config, inline_result.score)


# ---------------------------------------------------------------- the isolated pool


@pytest.fixture
def pool() -> Iterator[IsolatedPoolExecutor]:
    executor = IsolatedPoolExecutor(1, memory_limit_mb=1000, kill_grace_seconds=0.3)
    yield executor
    executor.close()


def test_pool_kills_a_trial_past_its_time_limit_and_replaces_the_worker(
    pool: IsolatedPoolExecutor,
) -> None:
    pool.time_limit_seconds = 0.5
    started = time.monotonic()
    [(_, outcome)] = list(pool.map_unordered(sleep_ignoring_alarms, [30.0]))
    assert isinstance(outcome, WorkerFailure)
    assert outcome.reason == "timeout"
    # Killed, not finished: less than the trial's own 30 s (no bound on the machine's speed).
    assert time.monotonic() - started < 30
    pool.time_limit_seconds = None
    assert sorted(r for _, r in pool.map_unordered(times, [1, 2, 3], shared=10)) == [10, 20, 30]


def test_pool_survives_a_crashing_trial(pool: IsolatedPoolExecutor) -> None:
    results = dict(pool.map_unordered(crash, [-1]))
    failure = results[-1]
    assert isinstance(failure, WorkerFailure)
    assert failure.reason == "crashed"
    assert "SIGSEGV" in failure.message
    assert sorted(r for _, r in pool.map_unordered(times, [4, 5], shared=2)) == [8, 10]
