"""Refinement: successive halving of suggested configs on the user's own data.

A suggestion from history is a prior; short verification runs on the user's data make
it an answer. :func:`refine` takes the surrogate's top-k configs (best first), adds the
family's library default as a control, and within a wall-clock budget:

1. **Anchors.** Measures the default and the top suggestion at full fidelity first.
   Together they are the least a refinement must deliver (the answer is never worse
   than the default on the user's own folds, and the zero-shot pick is verified), and
   their costs calibrate the plan.
2. **Plan.** Classic successive halving with ``eta = 3``: rung fidelities
   ``eta**-s, ..., 1/3, 1`` (fraction of training rows per fold, or of epochs for
   ``keras_mlp``), every candidate on the lowest rung, the best third (rounded up)
   promoted each time. ``s`` is fixed by the number of candidates and by a floor on the
   lowest fidelity (at least ``min_rung_rows`` training rows, or ``min_epoch_fraction``
   of the epochs), so for a seed the plan is deterministic. When the estimated cost
   of the plan does not fit the remaining budget, the lowest-ranked suggestions are
   dropped until it does.
3. **Rungs.** Trials are handed to the executor lazily, each only if its estimated cost
   fits the time left (minus a reserve for the full-fidelity rung); every trial's time
   limit is the smaller of the per-trial limit and the budget left. Costs are estimated
   from the candidate's own measured trials (affine in the fidelity), else from the
   default's cost scaled by the config's size (``n_estimators``, epochs...). Between
   rungs the remaining plan is re-estimated; if it no longer fits, the middle rungs are
   skipped and the best candidates go straight to full fidelity.
4. **Answer.** The best config among those measured at full fidelity (ties go to the
   default), its score, the default's score, and every trial. All candidates share
   the same folds and row subsamples (one seed), so their scores are paired.

Every measured trial (ok or failed) is handed to ``record`` as a ``verification`` run
with the dataset's meta-features, so the next retrain learns from it. A trial cut short
by the *budget* measured nothing about the config and is reported but not recorded; a
trial that exceeded the per-trial time limit or the memory limit is a failed run.

Results are deterministic for a seed, except where timing decides: which trials the
budget cuts off.
"""

from __future__ import annotations

import functools
import logging
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from hyperprior.db.store import DatasetSpec, NewRun
from hyperprior.training.executor import (
    InlineExecutor,
    TrialExecutor,
    WorkerFailure,
    make_executor,
)
from hyperprior.training.families import (
    TrialResult,
    UnknownFamilyError,
    get_family,
    primary_metric,
)
from hyperprior.training.spaces import get_space
from hyperprior.training.trials import (
    TrialData,
    VerificationTrial,
    failure_result,
    is_timeout,
    run_verification_trial,
    warm_up,
)
from hyperprior.vocabulary import canonical_json

__all__ = [
    "REFINE_NAMESPACE",
    "Candidate",
    "RefineProgress",
    "RefineResult",
    "RefineSettings",
    "TrialRecord",
    "candidates_from_suggestions",
    "fill_candidates",
    "make_refine_executor",
    "refine",
    "relative_cost",
    "rung_fidelities",
]

log = logging.getLogger(__name__)

# Changing this namespace would give re-recorded verification runs new ids: keep it fixed.
REFINE_NAMESPACE = uuid.UUID("0d7c52a4-94a9-4d0e-9a51-6f4f3f4b2a7e")

_FULL = 1.0
_EPS = 1e-9
_WARMUP_TIMEOUT = 120.0


@dataclass(frozen=True)
class RefineSettings:
    """Knobs of a refinement.

    Attributes:
        eta: Halving rate: the best ``1/eta`` of a rung go up, at ``eta`` times the
            fidelity.
        folds: Cross-validation folds of every trial.
        min_rung_rows: Floor of the lowest rung for row fidelities: at least this many
            training rows per fold (rankings on a few dozen rows are noise).
        min_epoch_fraction: Floor of the lowest rung for epoch fidelities.
        trial_time_limit_seconds: Per-trial limit; a trial past it is a failed run.
        safety: Share of the remaining budget a plan may be estimated to use.
        overhead_share: Prior share of a trial's cost that does not shrink with the
            fidelity (preprocessing, predicting the whole validation fold).
    """

    eta: int = 3
    folds: int = 5
    min_rung_rows: int = 100
    min_epoch_fraction: float = 0.1
    trial_time_limit_seconds: float | None = 600.0
    safety: float = 0.85
    overhead_share: float = 0.3

    def __post_init__(self) -> None:
        if self.eta < 2:
            raise ValueError(f"eta must be at least 2, got {self.eta}")
        if self.folds < 2:
            raise ValueError(f"folds must be at least 2, got {self.folds}")
        if not 0.0 < self.safety <= 1.0:
            raise ValueError(f"safety must be in (0, 1], got {self.safety}")


@dataclass(frozen=True)
class Candidate:
    """A config to verify and where it came from.

    Attributes:
        config: Estimator keyword arguments.
        origin: ``default`` (the library default, the control), ``suggestion`` (the
            surrogate's or the portfolio's), ``user`` (given with the request) or
            ``sample`` (a Sobol point, when there were too few suggestions).
        rank: The suggestion's rank (1 is the surrogate's top pick), else None.
        predicted_quality: The surrogate's prediction, when there was one.
    """

    config: dict[str, Any]
    origin: str = "suggestion"
    rank: int | None = None
    predicted_quality: float | None = None

    @property
    def is_default(self) -> bool:
        """Whether this is the control."""
        return self.origin == "default"


@dataclass(frozen=True)
class TrialRecord:
    """One trial of a refinement, measured or cut.

    Attributes:
        candidate: Index into :attr:`RefineResult.candidates`.
        origin: The candidate's origin.
        config: The candidate's config.
        rung: Rung index (``len(rungs) - 1`` is full fidelity; anchors count as full).
        fidelity: Fraction of rows (or epochs).
        status: ``ok``, ``failed``, or ``cut`` (stopped by the budget, not recorded).
        score: Mean primary metric over the folds, when ok.
        seconds: Wall-clock seconds of the trial.
        error: Why it failed or was cut.
        run_id: Id of the recorded run (None when not recorded).
    """

    candidate: int
    origin: str
    config: dict[str, Any]
    rung: int
    fidelity: float
    status: str
    score: float | None
    seconds: float
    error: str | None = None
    run_id: str | None = None


@dataclass(frozen=True)
class RefineProgress:
    """Where a running refinement is (for job progress)."""

    phase: str
    rung: int
    rungs: int
    fidelity: float
    trials_done: int
    trials_planned: int
    elapsed_seconds: float
    budget_seconds: float
    best_score: float | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)


@dataclass(frozen=True)
class RefineResult:
    """What a refinement found.

    Attributes:
        family: Model family.
        task: The task.
        metric: The primary metric every score is (maximised).
        config: The best config measured at full fidelity; None when none was.
        score: Its measured score.
        winner: Index of the winning candidate (None when none).
        default_config: The control.
        default_score: The control's measured full-fidelity score (None if not measured).
        candidates: Every candidate, control first.
        trials: Every trial, in completion order.
        rungs: Fidelities of the plan, lowest first (the last is 1).
        budget_seconds: The budget.
        elapsed_seconds: Wall-clock seconds used.
        complete: Whether every planned trial ran.
        notes: What was cut and why, in words.
    """

    family: str
    task: str
    metric: str
    config: dict[str, Any] | None
    score: float | None
    winner: int | None
    default_config: dict[str, Any]
    default_score: float | None
    candidates: tuple[Candidate, ...]
    trials: tuple[TrialRecord, ...]
    rungs: tuple[float, ...]
    budget_seconds: float
    elapsed_seconds: float
    complete: bool
    notes: tuple[str, ...] = field(default_factory=tuple)

    def full_score(self, candidate: int) -> float | None:
        """A candidate's measured full-fidelity score, if any."""
        for trial in self.trials:
            if trial.candidate == candidate and trial.fidelity >= _FULL and trial.status == "ok":
                return trial.score
        return None

    @property
    def top_suggestion(self) -> int | None:
        """Index of the surrogate's top-ranked suggestion (the zero-shot pick; it is
        the control itself when the surrogate ranked the default first)."""
        ranked = [(c.rank, i) for i, c in enumerate(self.candidates) if c.rank is not None]
        return min(ranked)[1] if ranked else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: the answer, the control, the zero-shot pick, the table."""
        top = self.top_suggestion
        winner = None if self.winner is None else self.candidates[self.winner]
        return {
            "family": self.family,
            "task": self.task,
            "metric": self.metric,
            "config": self.config,
            "score": self.score,
            "origin": None if winner is None else winner.origin,
            "rank": None if winner is None else winner.rank,
            "default_config": self.default_config,
            "default_score": self.default_score,
            "improvement": None
            if self.score is None or self.default_score is None
            else self.score - self.default_score,
            "zero_shot": None
            if top is None
            else {"config": self.candidates[top].config, "score": self.full_score(top)},
            "rungs": list(self.rungs),
            "budget_seconds": self.budget_seconds,
            "elapsed_seconds": self.elapsed_seconds,
            "complete": self.complete,
            "notes": list(self.notes),
            "trials": [
                {
                    "candidate": t.candidate,
                    "origin": t.origin,
                    "config": t.config,
                    "rung": t.rung,
                    "fidelity": t.fidelity,
                    "status": t.status,
                    "score": t.score,
                    "seconds": t.seconds,
                    "error": t.error,
                    "run_id": t.run_id,
                }
                for t in self.trials
            ],
        }


# ------------------------------------------------------------------------ helpers


def candidates_from_suggestions(suggestions: Sequence[Any]) -> list[Candidate]:
    """Candidates from suggestions, best first.

    Accepts :class:`hyperprior.training.suggest.Suggestion` objects or their JSON form (dicts
    with ``config`` and optionally ``rank``, ``source``, ``predicted_quality``).
    """
    out = []
    for position, s in enumerate(suggestions, start=1):
        get = s.get if isinstance(s, Mapping) else functools.partial(getattr, s)
        source = get("source", None)
        config = s["config"] if isinstance(s, Mapping) else s.config
        out.append(
            Candidate(
                config=dict(config),
                origin="default" if source == "default" else "suggestion",
                rank=int(get("rank", None) or position),
                predicted_quality=get("predicted_quality", None),
            )
        )
    return out


def fill_candidates(
    candidates: Sequence[Candidate], family: str, task: str, n: int, seed: int = 0
) -> list[Candidate]:
    """Top ``candidates`` up to ``n`` with a scrambled Sobol sample of the space.

    Without a surrogate (cold start) the suggestions may be just the default; a
    refinement asked to compare ``n`` configs then explores instead. The samples
    (origin ``sample``) rank after every suggestion.
    """
    out = list(candidates)
    missing = n - len(out)
    if missing <= 0:
        return out
    last = max((c.rank for c in out if c.rank is not None), default=0)
    sampled = get_space(family).sample(missing, seed, task)
    out += [
        Candidate(config, origin="sample", rank=last + i) for i, config in enumerate(sampled, 1)
    ]
    return out


def relative_cost(family: str, config: Mapping[str, Any], default: Mapping[str, Any]) -> float:
    """A config's expected cost relative to the default's (a prior, before measuring).

    The family's own cost model (``Family.cost``: tree ensembles scale with their number
    of trees, the MLP with epochs times steps per epoch); a family without one, or an
    unknown family, is taken to cost the same as the default. Clipped to ``[0.1, 50]``.
    """
    try:
        rel = get_family(family).relative_cost(config, default)
    except UnknownFamilyError:
        rel = 1.0
    return min(50.0, max(0.1, rel))


def rung_fidelities(n_candidates: int, floor: float, eta: int = 3) -> tuple[float, ...]:
    """Fidelities of a successive-halving plan for ``n_candidates``, lowest first.

    As many rungs as halving can fill (``floor(log_eta(n))`` below the top) and as the
    lowest fidelity allows (not below ``floor``); always ends with 1.
    """
    if n_candidates < 1:
        return (_FULL,)
    by_n = int(math.floor(math.log(n_candidates) / math.log(eta) + _EPS))
    by_floor = int(math.floor(math.log(1.0 / floor) / math.log(eta) + _EPS)) if floor < 1 else 0
    s = max(0, min(by_n, by_floor))
    return tuple(float(eta ** (i - s)) for i in range(s + 1))


def _rung_sizes(n: int, rungs: int, eta: int) -> list[int]:
    sizes = [n]
    for _ in range(rungs - 1):
        sizes.append(max(1, math.ceil(sizes[-1] / eta)))
    return sizes


def _canonical(config: Mapping[str, Any]) -> str:
    return canonical_json(dict(config))


def make_refine_executor(
    family: str,
    *,
    workers: int | None = None,
    memory_limit_mb: float | None = None,
    dask_scheduler: str | None = None,
) -> TrialExecutor:
    """The executor a refinement runs its trials on.

    Local trials run in worker processes under the memory limit (a config that blows
    up kills its worker, not the caller), warmed up with the family's heavy imports;
    ``workers=0`` runs them inline (no isolation; tests and debugging). With a Dask
    scheduler address, trials go to the cluster.
    """
    if workers == 0 and not dask_scheduler:
        return InlineExecutor()
    return make_executor(
        workers=workers,
        dask_scheduler=dask_scheduler,
        memory_limit_mb=memory_limit_mb,
        on_failure=_pass_failure,
        warmup=functools.partial(warm_up, family),
        # Items carry their own limits; this only selects the isolated pool.
        time_limit_seconds=None if memory_limit_mb is not None else 3600.0,
    )


def _pass_failure(item: Any, failure: WorkerFailure) -> WorkerFailure:
    return failure


# ------------------------------------------------------------------------ the job


class _Refinement:
    """State of one :func:`refine` call."""

    def __init__(
        self,
        data: TrialData,
        family: str,
        candidates: list[Candidate],
        *,
        budget_seconds: float,
        executor: TrialExecutor,
        settings: RefineSettings,
        seed: int,
        dataset: DatasetSpec | None,
        record: Callable[[Sequence[NewRun]], Any] | None,
        progress: Callable[[RefineProgress], None] | None,
        should_stop: Callable[[], bool] | None,
        refinement_id: str,
        clock: Callable[[], float],
    ) -> None:
        self.data = data
        self.family = family
        self.task = data.task
        self.metric = primary_metric(data.task)
        self.candidates = candidates
        self.budget = float(budget_seconds)
        self.executor = executor
        self.settings = settings
        self.seed = seed
        self.dataset = dataset
        self.record = record
        self.progress = progress
        self.should_stop = should_stop or (lambda: False)
        self.refinement_id = refinement_id
        self.clock = clock
        self.started = clock()
        self.deadline = self.started + self.budget
        self.trials: list[TrialRecord] = []
        self.notes: list[str] = []
        self.scores: dict[tuple[int, float], float] = {}
        self.costs: dict[int, list[tuple[float, float]]] = {}
        self.configs = [_canonical(c.config) for c in candidates]
        self.default = candidates[0].config
        self.rel = [relative_cost(family, c.config, self.default) for c in candidates]
        self.unit = get_family(family).fidelity_unit
        self.workers = max(1, int(getattr(executor, "workers", 1) or 1))
        self.rungs: tuple[float, ...] = (_FULL,)
        self.planned = 0
        self.skipped = 0
        self.unrecorded = 0
        self.stopped = False
        self.phase = "anchors"
        self.rung = 0
        self.dropped: list[int] = []

    # -- time and cost ----------------------------------------------------------------

    def elapsed(self) -> float:
        return self.clock() - self.started

    def left(self) -> float:
        return self.deadline - self.clock()

    def _g(self, fidelity: float) -> float:
        o = self.settings.overhead_share
        return o + (1.0 - o) * fidelity

    def estimate(self, candidate: int, fidelity: float) -> float | None:
        """Expected seconds of a trial, or None before anything was measured."""
        own = self.costs.get(candidate)
        if own:
            f, seconds = min(own, key=lambda m: abs(m[0] - fidelity))
            return seconds * self._g(fidelity) / self._g(f)
        base = self._base_cost()
        if base is None:
            return None
        return base * self.rel[candidate] * self._g(fidelity)

    def _base_cost(self) -> float | None:
        # Seconds per unit of relative cost at fidelity 1, from every measured trial.
        per_unit = [
            seconds / self._g(f) / self.rel[c]
            for c, measured in self.costs.items()
            for f, seconds in measured
        ]
        if not per_unit:
            return None
        per_unit.sort()
        return per_unit[len(per_unit) // 2]

    def floor(self) -> float:
        """The lowest fidelity worth measuring on this data."""
        if self.unit == "epochs":
            return min(1.0, self.settings.min_epoch_fraction)
        folds = self.settings.folds
        n_train = self.data.n_rows * (folds - 1) / folds
        return min(1.0, self.settings.min_rung_rows / max(n_train, 1.0))

    # -- running trials ---------------------------------------------------------------

    def _spec(self, candidate: int, rung: int, fidelity: float) -> VerificationTrial:
        left = max(0.05, self.left())
        limit = self.settings.trial_time_limit_seconds
        budget_limited = limit is None or left < limit
        return VerificationTrial(
            candidate=candidate,
            rung=rung,
            family=self.family,
            config_json=self.configs[candidate],
            fidelity=fidelity,
            folds=self.settings.folds,
            seed=self.seed,
            time_limit_seconds=left if budget_limited else limit,
            budget_limited=budget_limited,
        )

    def fits(self, candidate: int, fidelity: float, *, reserve: float, mandatory: bool) -> bool:
        """Whether a trial may start now."""
        if self.should_stop():
            if not self.stopped:
                self.notes.append("stopped on request before every planned trial ran")
            self.stopped = True
            return False
        left = self.left()
        if left <= 0:
            return False
        est = self.estimate(candidate, fidelity)
        if est is None:
            return True
        if mandatory:
            # Always try the least a refinement owes, unless it is hopeless.
            return est <= 2.0 * left
        return est <= left - reserve

    def run(
        self,
        trials: Sequence[tuple[int, int, float]],
        *,
        reserve: float = 0.0,
        mandatory: int = 0,
        planned: int | None = None,
    ) -> list[TrialRecord]:
        """Run ``(candidate, rung, fidelity)`` trials; the first ``mandatory`` are owed.

        Trials after the first ``planned`` (default: all) are extras: run if they fit,
        not missed if they do not.

        Returns the records of the trials that ran (cut ones included).
        """
        planned = len(trials) if planned is None else planned

        def specs() -> Any:
            for position, (candidate, rung, fidelity) in enumerate(trials):
                owed = position < mandatory
                if self.fits(candidate, fidelity, reserve=reserve, mandatory=owed):
                    yield self._spec(candidate, rung, fidelity)
                elif position < planned:
                    self.skipped += 1
                    log.debug("skip candidate %d at %.3g: budget", candidate, fidelity)

        done: list[TrialRecord] = []
        for spec, outcome in self.executor.map_unordered(
            run_verification_trial, specs(), shared=self.data
        ):
            result = (
                failure_result(spec, outcome, self.task)
                if isinstance(outcome, WorkerFailure)
                else outcome
            )
            done.append(self._finish(spec, result))
        return done

    def _finish(self, spec: VerificationTrial, result: TrialResult) -> TrialRecord:
        candidate = self.candidates[spec.candidate]
        cut = spec.budget_limited and is_timeout(result)
        run_id: str | None = None
        if not cut:
            self.costs.setdefault(spec.candidate, []).append(
                (spec.fidelity, max(1e-3, result.cost_seconds))
            )
            if self.record is not None:
                run = self._new_run(spec, result)
                try:
                    self.record([run])
                    run_id = str(run.id)
                except Exception as exc:  # noqa: BLE001 - the answer does not need the history
                    self.unrecorded += 1
                    log.warning("could not record a verification run: %s", exc)
        elif result.cost_seconds > 0:
            # A lower bound, but still the best estimate of what it would take.
            self.costs.setdefault(spec.candidate, []).append((spec.fidelity, result.cost_seconds))
        status = "cut" if cut else ("ok" if result.status == "ok" else "failed")
        if status == "ok" and result.score is not None:
            self.scores[(spec.candidate, spec.fidelity)] = float(result.score)
        record = TrialRecord(
            candidate=spec.candidate,
            origin=candidate.origin,
            config=dict(candidate.config),
            rung=spec.rung,
            fidelity=spec.fidelity,
            status=status,
            score=float(result.score) if status == "ok" and result.score is not None else None,
            seconds=float(result.cost_seconds),
            error=None
            if status == "ok"
            else ("budget ran out: " + (result.error or "") if cut else result.error),
            run_id=run_id,
        )
        self.trials.append(record)
        self._report()
        return record

    def _new_run(self, spec: VerificationTrial, result: TrialResult) -> NewRun:
        if self.dataset is None:
            raise ValueError("recording runs needs the dataset's description")
        ok = result.status == "ok"
        key = "|".join(
            [
                self.refinement_id,
                self.family,
                spec.config_json,
                f"{spec.fidelity:.6g}",
                str(spec.folds),
                str(spec.seed),
            ]
        )
        return NewRun(
            id=uuid.uuid5(REFINE_NAMESPACE, key),
            family=self.family,
            config=spec.config,
            metric=result.metric or self.metric,
            direction="maximize",
            score=float(result.score) if ok and result.score is not None else None,
            fidelity=spec.fidelity,
            cost_seconds=max(0.0, float(result.cost_seconds)),
            source="verification",
            status="ok" if ok else "failed",
            error=None if ok else (result.error or "unknown error")[:2000],
            dataset=self.dataset,
            metrics=result.run_metrics(),
        )

    def _report(self) -> None:
        if self.progress is None:
            return
        best = self.best()
        self.progress(
            RefineProgress(
                phase=self.phase,
                rung=self.rung,
                rungs=len(self.rungs),
                fidelity=self.rungs[min(self.rung, len(self.rungs) - 1)],
                trials_done=len(self.trials),
                trials_planned=max(self.planned, len(self.trials)),
                elapsed_seconds=round(self.elapsed(), 3),
                budget_seconds=self.budget,
                best_score=None if best is None else best[1],
            )
        )

    def best(self) -> tuple[int, float] | None:
        """(candidate, score) of the best full-fidelity trial; ties go to the lower index."""
        full = [(c, s) for (c, f), s in self.scores.items() if f >= _FULL]
        if not full:
            return None
        return min(full, key=lambda cs: (-cs[1], cs[0]))

    # -- the plan ---------------------------------------------------------------------

    def plan_cost(self, members: Sequence[int], rungs: Sequence[float]) -> float:
        """Estimated seconds of halving ``members`` over ``rungs`` (wall clock)."""
        sizes = _rung_sizes(len(members), len(rungs), self.settings.eta)
        total = 0.0
        for size, fidelity in zip(sizes, rungs, strict=True):
            todo = [c for c in members if (c, fidelity) not in self.scores]
            if not todo:
                continue
            ests = [self.estimate(c, fidelity) or 0.0 for c in todo]
            total += min(size, len(todo)) * sum(ests) / len(ests)
        return total / self.workers

    def choose_members(self, order: Sequence[int]) -> tuple[list[int], tuple[float, ...]]:
        """The candidates to halve: in priority order, each one that still fits.

        ``order`` starts with the two anchors, already measured at full fidelity. A
        candidate whose addition would push the estimated plan past the budget left is
        skipped (an expensive config high in the ranking does not crowd out the rest);
        when not even a third candidate fits, the answer is the anchors alone.
        """
        floor = self.floor()
        room = self.left() * self.settings.safety
        members = list(order[:2])
        dropped = self.dropped
        for c in order[2:]:
            trial = [*members, c]
            if self.plan_cost(trial, rung_fidelities(len(trial), floor, self.settings.eta)) <= room:
                members = trial
            else:
                dropped.append(c)
        if len(members) <= 2:
            return members, (_FULL,)
        if dropped:
            self.notes.append(
                f"budget: planned to halve {len(members)} of {len(order)} candidates; "
                f"{len(dropped)} estimated to not fit in the {max(0.0, self.left()):.1f} s "
                "left were tried last on the lowest rung, where time allowed"
            )
        return members, rung_fidelities(len(members), floor, self.settings.eta)

    def _top(self) -> int | None:
        # The best-ranked candidate besides the control (the zero-shot pick, unless
        # the surrogate ranked the default first), else the first one.
        ranked = [(c.rank, i) for i, c in enumerate(self.candidates) if i and c.rank is not None]
        if ranked:
            return min(ranked)[1]
        return 1 if len(self.candidates) > 1 else None

    def _planned(self, members: Sequence[int], sizes: Sequence[int]) -> int:
        below = sum(sizes[:-1])
        top = max(0, sizes[-1] - sum(1 for c in members if (c, _FULL) in self.scores))
        return len(self.trials) + below + top

    def execute(self) -> None:
        n = len(self.candidates)
        eta = self.settings.eta
        top = self._top()
        anchors = [0] + ([top] if top is not None else [])
        order = anchors + [c for c in range(n) if c not in anchors]
        self.rungs = rung_fidelities(n, self.floor(), eta)
        sizes = _rung_sizes(n, len(self.rungs), eta)
        self.planned = len(anchors) + sum(sizes[:-1]) + max(0, sizes[-1] - len(anchors))
        # 1. The control and the zero-shot pick, at full fidelity.
        self.phase = "anchors"
        self.rung = len(self.rungs) - 1
        self.run([(c, self.rung, _FULL) for c in anchors], mandatory=len(anchors))
        if n <= 2 or self.stopped:
            self.planned = len(self.trials)
            return
        # 2. Plan: as many candidates as the budget allows, in priority order.
        members, self.rungs = self.choose_members(order)
        sizes = _rung_sizes(len(members), len(self.rungs), eta)
        self.planned = self._planned(members, sizes)
        if len(members) <= 2:
            self.notes.append(
                f"budget: no time for halving after the default and the top suggestion "
                f"({max(0.0, self.left()):.1f} s left)"
            )
            self.planned = len(self.trials)
            return
        # 3. The rungs below full fidelity.
        survivors = members
        top_rung = len(self.rungs) - 1
        for rung, fidelity in enumerate(self.rungs[:-1]):
            if self.stopped:
                break
            self.phase, self.rung = "halving", rung
            reserve = self._final_reserve(survivors)
            # The candidates the plan left out come last on the lowest rung: the prior
            # cost estimate may have been too pessimistic, and measured costs decide.
            extra = self.dropped if rung == 0 else []
            self.run(
                [(c, rung, fidelity) for c in [*survivors, *extra]],
                reserve=reserve,
                planned=len(survivors),
            )
            survivors = [*survivors, *(c for c in extra if (c, fidelity) in self.scores)]
            ranked = self._ranked(survivors, fidelity)
            if not ranked:
                self.notes.append(f"rung {rung}: no candidate finished; stopping")
                return
            survivors = ranked[: sizes[rung + 1]]
            # Re-plan with what was just measured: skip the middle rungs if need be.
            rest = self.rungs[rung + 1 :]
            room = self.left() * self.settings.safety
            if len(rest) > 1 and self.plan_cost(survivors, rest) > room:
                keep = self._affordable_final(survivors)
                self.notes.append(
                    f"budget: after rung {rung}, {len(keep)} candidate(s) went straight to "
                    "full fidelity (the middle rungs did not fit)"
                )
                survivors = keep
                break
        # 4. Full fidelity for the promoted candidates not measured there yet.
        self.phase, self.rung = "final", top_rung
        todo = [c for c in survivors if (c, _FULL) not in self.scores]
        self.run([(c, top_rung, _FULL) for c in todo], mandatory=1)

    def _ranked(self, members: Sequence[int], fidelity: float) -> list[int]:
        measured = [
            (c, self.scores[(c, fidelity)]) for c in members if (c, fidelity) in self.scores
        ]
        measured.sort(key=lambda cs: (-cs[1], cs[0]))
        return [c for c, _ in measured]

    def _final_reserve(self, members: Sequence[int]) -> float:
        todo = [c for c in members if (c, _FULL) not in self.scores]
        ests = sorted(e for c in todo if (e := self.estimate(c, _FULL)) is not None)
        return ests[0] if ests else 0.0

    def _affordable_final(self, ranked: Sequence[int]) -> list[int]:
        keep: list[int] = []
        cost = 0.0
        room = self.left() * self.settings.safety
        for c in ranked:
            est = 0.0 if (c, _FULL) in self.scores else (self.estimate(c, _FULL) or 0.0)
            if keep and cost + est / self.workers > room:
                break
            keep.append(c)
            cost += est / self.workers
        return keep

    def result(self) -> RefineResult:
        best = self.best()
        self.phase = "done"
        if self.skipped:
            self.notes.append(
                f"budget: {self.skipped} planned trial(s) not started (estimated not to fit)"
            )
        if self.unrecorded:
            self.notes.append(
                f"history: {self.unrecorded} measured trial(s) could not be recorded as runs"
            )
        cut = sum(1 for t in self.trials if t.status == "cut")
        if cut:
            self.notes.append(f"budget: {cut} trial(s) stopped when the budget ran out")
        if best is None:
            errors = [t.error for t in self.trials if t.status == "failed" and t.error]
            if errors and not any(t.status in ("ok", "cut") for t in self.trials):
                # Every trial failed: the cause is in the data or the configs, and
                # blaming the budget would send the user the wrong way.
                common = max(set(errors), key=errors.count)
                self.notes.append(f"no config could be measured: every trial failed ({common})")
            else:
                self.notes.append(
                    "no config was measured at full fidelity: the budget is too small for "
                    "this data (the default alone did not finish)"
                    if not any(t.status == "ok" for t in self.trials)
                    else "no config finished at full fidelity within the budget"
                )
        default_score = self.scores.get((0, _FULL))
        return RefineResult(
            family=self.family,
            task=self.task,
            metric=self.metric,
            config=None if best is None else dict(self.candidates[best[0]].config),
            score=None if best is None else best[1],
            winner=None if best is None else best[0],
            default_config=dict(self.default),
            default_score=default_score,
            candidates=tuple(self.candidates),
            trials=tuple(self.trials),
            rungs=self.rungs,
            budget_seconds=self.budget,
            elapsed_seconds=round(self.elapsed(), 3),
            complete=not self.skipped and not cut and not self.stopped,
            notes=tuple(self.notes),
        )


def _prepare_candidates(
    family: str, task: str, given: Sequence[Candidate | Mapping[str, Any]]
) -> tuple[list[Candidate], list[str]]:
    """The control first, then the given candidates validated and deduplicated."""
    space = get_space(family)
    default = space.default(task)
    out = [Candidate(config=default, origin="default")]
    seen = {_canonical(default): 0}
    notes = []
    for position, item in enumerate(given, start=1):
        candidate = (
            item
            if isinstance(item, Candidate)
            else Candidate(config=dict(item), origin="suggestion", rank=position)
        )
        try:
            config = space.validate(candidate.config, task)
        except ValueError as exc:
            notes.append(f"candidate {position} skipped: {exc}")
            continue
        key = _canonical(config)
        if key in seen:
            # The default, or a repeat: keep the first, with the best rank it was given.
            index = seen[key]
            kept = out[index]
            if candidate.rank is not None and (kept.rank is None or candidate.rank < kept.rank):
                out[index] = Candidate(
                    config=kept.config,
                    origin=kept.origin,
                    rank=candidate.rank,
                    predicted_quality=candidate.predicted_quality,
                )
            continue
        seen[key] = len(out)
        out.append(
            Candidate(
                config=config,
                # Only the control is "default"; the same config suggested is caught above.
                origin="suggestion" if candidate.origin == "default" else candidate.origin,
                rank=candidate.rank,
                predicted_quality=candidate.predicted_quality,
            )
        )
    # Priority when the budget drops candidates: user configs, then suggestions by rank.
    head, rest = out[:1], out[1:]
    rest.sort(key=lambda c: (c.origin != "user", c.rank if c.rank is not None else 10**9))
    return head + rest, notes


def refine(
    data: TrialData,
    family: str,
    candidates: Sequence[Candidate | Mapping[str, Any]],
    *,
    budget_seconds: float,
    executor: TrialExecutor | None = None,
    settings: RefineSettings | None = None,
    seed: int = 0,
    dataset: DatasetSpec | None = None,
    record: Callable[[Sequence[NewRun]], Any] | None = None,
    progress: Callable[[RefineProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    refinement_id: uuid.UUID | str | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> RefineResult:
    """Verify suggested configs on ``data`` by successive halving within a budget.

    See the module docstring for the algorithm.

    Args:
        data: The user's data.
        family: Model family of every candidate.
        candidates: Configs to verify, best first (the surrogate's top-k; plain dicts
            are suggestions ranked by position). The family default is added as the
            control; duplicates and invalid configs are dropped (the latter noted).
        budget_seconds: Wall-clock budget of the trials. It starts once the
            executor's workers are warm (their imports are not the data's cost).
        executor: Where trials run (default: inline in this process). Use
            :func:`make_refine_executor` for isolated workers with limits. The caller
            closes it.
        settings: Knobs (folds, eta, floors, per-trial limit).
        seed: Seeds the folds and row subsamples of every trial.
        dataset: How recorded runs describe the data (name, task, meta-features);
            required with ``record``.
        record: Called with each measured trial as a ``verification`` run; if it
            raises, the run is noted as not recorded and the refinement goes on.
        progress: Called after every trial.
        should_stop: Polled before each trial; True stops the refinement early.
        refinement_id: Makes run ids unique to this refinement (default: random).
        clock: Monotonic clock in seconds (tests inject a fake one).

    Returns:
        The best fully measured config, its score, the default's score, and all trials.

    Raises:
        ValueError: an unknown family or task, or a budget that is not positive.
    """
    if not budget_seconds > 0:
        raise ValueError(f"budget_seconds must be positive, got {budget_seconds}")
    if record is not None and dataset is None:
        raise ValueError("record needs dataset (the data's name, task and meta-features)")
    prepared, notes = _prepare_candidates(family, data.task, candidates)
    executor = executor or InlineExecutor()
    wait_ready = getattr(executor, "wait_ready", None)
    if callable(wait_ready):
        # The budget is for trials: worker start-up (TensorFlow's import...) is not.
        wait_ready(timeout=_WARMUP_TIMEOUT)
    job = _Refinement(
        data,
        family,
        prepared,
        budget_seconds=budget_seconds,
        executor=executor,
        settings=settings or RefineSettings(),
        seed=seed,
        dataset=dataset,
        record=record,
        progress=progress,
        should_stop=should_stop,
        refinement_id=str(refinement_id or uuid.uuid4()),
        clock=clock,
    )
    job.notes.extend(notes)
    job.execute()
    result = job.result()
    log.info(
        "refined %s on %s: %s %.4g (default %s) in %.1f s, %d trials",
        family,
        data.name,
        result.metric,
        result.score if result.score is not None else float("nan"),
        result.default_score,
        result.elapsed_seconds,
        len(result.trials),
    )
    return result
