"""The refinement job: anchors, rungs within the budget, the answer (see the package)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hyperprior.db.store import DatasetSpec, NewRun
from hyperprior.training.executor import (
    InlineExecutor,
    TrialExecutor,
    WorkerFailure,
)
from hyperprior.training.families import (
    TrialResult,
    get_family,
    primary_metric,
)
from hyperprior.training.refine.plan import (
    _canonical,
    _rung_sizes,
    relative_cost,
    rung_fidelities,
)
from hyperprior.training.refine.types import (
    _FULL,
    Candidate,
    RefineProgress,
    RefineResult,
    RefineSettings,
    TrialRecord,
)
from hyperprior.training.spaces import get_space
from hyperprior.training.trials import (
    TrialData,
    VerificationTrial,
    failure_result,
    is_timeout,
    run_verification_trial,
)

log = logging.getLogger(__name__)

# Changing this namespace would give re-recorded verification runs new ids: keep it fixed.
REFINE_NAMESPACE = uuid.UUID("0d7c52a4-94a9-4d0e-9a51-6f4f3f4b2a7e")

_WARMUP_TIMEOUT = 120.0


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
