"""What a refinement takes and gives: settings, candidates, trial records, progress, result."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

_FULL = 1.0


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
