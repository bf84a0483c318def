"""What the suggestion policy reads through and answers with.

The history and the registry are protocols (``Store`` satisfies both; tests use
in-memory ones), so the policy never touches a database session; requests and answers
are frozen value objects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import pandas as pd

SOURCES = ("surrogate", "portfolio", "default")


class HistoryReader(Protocol):
    """Read access to the run history (``hyperprior.db.store.Store`` implements it)."""

    def runs_frame(
        self, *, family: str | None = None, status: str | None = "ok"
    ) -> pd.DataFrame:  # pragma: no cover - protocol
        """One row per run; see ``Store.runs_frame``."""
        ...


class SurrogateRecord(Protocol):
    """A registered surrogate as the registry hands it out (``db.entities.Surrogate``)."""

    # Read-only properties, so frozen dataclasses satisfy the protocol.
    @property
    def id(self) -> int: ...  # noqa: D102

    @property
    def family(self) -> str: ...  # noqa: D102

    @property
    def created_at(self) -> datetime: ...  # noqa: D102

    @property
    def n_runs(self) -> int: ...  # noqa: D102

    @property
    def status(self) -> str: ...  # noqa: D102

    @property
    def meta(self) -> dict[str, Any]: ...  # noqa: D102

    @property
    def sha256(self) -> str: ...  # noqa: D102

    @property
    def model_text(self) -> str | None: ...  # noqa: D102


class SurrogateRegistry(Protocol):
    """The surrogates registry (``hyperprior.db.store.Store`` implements it)."""

    def list_surrogates(
        self, family: str | None = None
    ) -> Sequence[SurrogateRecord]:  # pragma: no cover - protocol
        """Registered surrogates without model text, newest first."""
        ...

    def get_surrogate(self, surrogate_id: int) -> SurrogateRecord:  # pragma: no cover
        """One surrogate with its model text."""
        ...


class SuggestionError(ValueError):
    """A request that cannot be answered as asked (HTTP 422).

    Attributes:
        field: where in the request the problem is (``"fixed"``, ``"task"``...).
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class SuggestionRequest:
    """What the client asks for.

    Attributes:
        family: model family.
        task: ``binary``, ``multiclass`` or ``regression``.
        meta_features: the dataset's meta-features; missing optional ones are allowed.
        n: how many suggestions (1..50).
        seed: makes the answer reproducible; ``None`` means 0.
        fixed: parameters forced on every suggestion.
        metric: the metric the client will judge by (informational).
        dataset_name: the dataset's name (informational).
    """

    family: str
    task: str
    meta_features: Mapping[str, Any]
    n: int = 5
    seed: int | None = None
    fixed: Mapping[str, Any] | None = None
    metric: str | None = None
    dataset_name: str | None = None


@dataclass(frozen=True)
class Suggestion:
    """One suggested config.

    Attributes:
        rank: 1 is the best.
        config: estimator keyword arguments.
        predicted_quality: expected normalised quality (the percentile the config would
            reach among the configs tried on a dataset like this), None at cold start.
        interval: calibrated interval of the quality, None at cold start.
        source: where the candidate came from: ``surrogate`` (Sobol or local search),
            ``portfolio`` (best on a nearby dataset) or ``default``.
        explanation: nearest datasets and the features that drove the prediction.
        p_beats_default: calibrated probability that the config scores above the
            library default on this dataset (None for the default itself, at cold start,
            and for surrogates trained before the calibration existed).
    """

    rank: int
    config: dict[str, Any]
    predicted_quality: float | None
    interval: tuple[float, float] | None
    source: str
    explanation: dict[str, Any]
    p_beats_default: float | None = None


@dataclass(frozen=True)
class SurrogateInfo:
    """Which surrogate answered."""

    id: int | None
    family: str
    trained_at: str | None
    n_runs: int
    sha256: str


@dataclass(frozen=True)
class SuggestionResult:
    """The answer to a :class:`SuggestionRequest`.

    Attributes:
        suggestions: best first.
        surrogate: which surrogate scored them (None at cold start).
        warnings: what the caller should know.
        distance: RMS distance of standardised meta-features to the nearest dataset of
            the history (None when the history is empty).
        distance_threshold: beyond this distance the surrogate was not validated
            (learned on held-out groups; None without a calibrated surrogate).
        ranked_by: the metric the suggestions are ranked by: the one the request
            named when a surrogate of it is active, else the task's primary metric.
    """

    suggestions: list[Suggestion]
    surrogate: SurrogateInfo | None
    warnings: list[str]
    distance: float | None = None
    distance_threshold: float | None = None
    ranked_by: str | None = None
