"""The SDK's values: what `Client` answers with, and the JSON forms it sends.

Plain frozen dataclasses with no dependency on the transport: a `Suggestions` from the
service and one computed in-process are the same object.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hyperprior.vocabulary import finite_or_none

__all__ = [
    "Description",
    "RecordResult",
    "Refinement",
    "Suggestion",
    "Suggestions",
    "direction_of",
    "family_params",
    "jsonable",
    "run_json",
]

_MINIMIZED = ("loss", "error", "mse", "mae", "mape", "msle", "crossentropy", "hinge", "rmse")


# ----------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Description:
    """A dataset as hyperprior sees it: a name, a task and meta-features.

    The history keeps one dataset per name, task and data: recording runs with a
    description of data already stored under its name adds them to that dataset;
    other data under a stored name is refused (`ConflictError`) unless ``version``
    asks for a version of its own.

    Attributes:
        name: The dataset's name in the history.
        task: ``binary``, ``multiclass`` or ``regression``.
        meta_features: Name -> value (counts are ints; unknown ones are None).
        data_sha256: A hash of the data (rows in any order; see `Client.describe`),
            which tells other data of the same shape apart; None when unknown.
        version: The stored version of the name to use or create; None: the one
            holding the same data, else 1.
    """

    name: str
    task: str
    meta_features: dict[str, float | int | None]
    data_sha256: str | None = None
    version: int | None = None

    @property
    def n_rows(self) -> int:
        """Rows with a target."""
        return int(self.meta_features["n_rows"] or 0)

    @property
    def n_features(self) -> int:
        """Feature columns."""
        return int(self.meta_features["n_features"] or 0)

    def to_json(self) -> dict[str, Any]:
        """The API's inline dataset (``RunCreate.dataset``)."""
        out: dict[str, Any] = {
            "name": self.name,
            "task": self.task,
            "meta_features": dict(self.meta_features),
        }
        if self.data_sha256 is not None:
            out["data_sha256"] = self.data_sha256
        if self.version is not None:
            out["version"] = self.version
        return out


@dataclass(frozen=True)
class Suggestion:
    """One suggested config (see ``POST /v1/suggestions``).

    Attributes:
        rank: 1 is the best.
        config: The estimator's keyword arguments.
        predicted_quality: Expected percentile among configs tried on similar
            datasets (None without a surrogate).
        interval: Its interval (None without a surrogate).
        source: ``surrogate``, ``portfolio`` or ``default``.
        explanation: Nearest datasets and the features that drove the prediction.
        p_beats_default: Calibrated probability that the config scores above the
            library default on this dataset (None for the default itself).
    """

    rank: int
    config: dict[str, Any]
    predicted_quality: float | None
    interval: tuple[float, float] | None
    source: str
    explanation: dict[str, Any] = field(default_factory=dict)
    p_beats_default: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The API's JSON form."""
        out = dataclasses.asdict(self)
        out["interval"] = None if self.interval is None else list(self.interval)
        return out


@dataclass(frozen=True)
class Suggestions(Sequence[Suggestion]):
    """Suggestions, best first; iterate over them or take `best`.

    Attributes:
        suggestions: The suggestions.
        surrogate: Which surrogate scored them (``id``, ``trained_at``, ``n_runs``),
            None at cold start.
        warnings: What the caller should know (cold start, extrapolation...).
        description: The dataset they are for.
        family: The model family.
        distance: Distance of the dataset to the nearest one in the history.
        distance_threshold: Beyond it the surrogate was not validated and the first
            suggestion is the library default (unless the default is no safe answer
            for the task; a warning says which).
        ranked_by: The metric they are ranked by (the one asked for when the history
            has a surrogate of it, else the task's primary metric).
        ranking: How they were ranked, in words (a pessimistic bound, so the rank
            order can differ from ``predicted_quality``).
    """

    suggestions: list[Suggestion]
    surrogate: dict[str, Any] | None
    warnings: list[str]
    description: Description
    family: str
    distance: float | None = None
    distance_threshold: float | None = None
    ranked_by: str | None = None
    ranking: str | None = None

    @property
    def best(self) -> dict[str, Any]:
        """The top-ranked config (a copy)."""
        return dict(self.suggestions[0].config)

    @property
    def configs(self) -> list[dict[str, Any]]:
        """Every config, best first (copies)."""
        return [dict(s.config) for s in self.suggestions]

    def __len__(self) -> int:
        return len(self.suggestions)

    def __iter__(self) -> Iterator[Suggestion]:
        return iter(self.suggestions)

    def __getitem__(self, index: Any) -> Any:
        return self.suggestions[index]

    def to_json(self) -> dict[str, Any]:
        """The API's answer (``POST /v1/suggestions``), as ``hyperprior suggest --json``
        prints it."""
        out: dict[str, Any] = jsonable(
            {
                "suggestions": [s.to_json() for s in self.suggestions],
                "surrogate": self.surrogate,
                "warnings": list(self.warnings),
                "distance": self.distance,
                "distance_threshold": self.distance_threshold,
                "ranked_by": self.ranked_by,
                "ranking": self.ranking,
            }
        )
        return out


@dataclass(frozen=True)
class RecordResult:
    """What `Client.record` did.

    Attributes:
        inserted: Runs stored for the first time.
        duplicates: Runs already stored with the same id and content.
        ids: The id of every run sent, in order (assigned where a run had none).
        requests: Requests made (batches, retries included).
        warnings: Values stored but flagged (valid for the library, outside the
            family's search space, or without effect), one line each naming the run
            (by its index in the list given to `record`) and the field.
        dataset_ids: The stored id of every dataset the runs belong to, in order of
            first appearance; pass one as ``dataset_id`` to record more runs on it.
    """

    inserted: int
    duplicates: int
    ids: list[str]
    requests: int
    warnings: list[str] = field(default_factory=list)
    dataset_ids: list[int] = field(default_factory=list)

    @property
    def dataset_id(self) -> int | None:
        """The id of the runs' dataset when they all belong to one, else None."""
        return self.dataset_ids[0] if len(self.dataset_ids) == 1 else None


@dataclass(frozen=True)
class Refinement:
    """The outcome of `Client.refine`.

    Attributes:
        config: The best config measured at full fidelity (None if none was).
        score: Its score in ``metric`` (maximised).
        metric: The primary metric of the task (``roc_auc``, ``accuracy``, ``r2``).
        default_config: The library default, measured as the control.
        default_score: The default's score.
        trials: Every trial (config, fidelity, rung, score, status, seconds).
        notes: What was cut and why.
        raw: The full result as JSON (``RefineResult.to_dict`` or the job's result).
    """

    config: dict[str, Any] | None
    score: float | None
    metric: str
    default_config: dict[str, Any]
    default_score: float | None
    trials: list[dict[str, Any]]
    notes: list[str]
    raw: dict[str, Any]

    @property
    def improvement(self) -> float | None:
        """``score - default_score`` when both were measured."""
        if self.score is None or self.default_score is None:
            return None
        return self.score - self.default_score

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Refinement:
        """Build from a refinement result's JSON."""
        return cls(
            config=None if data.get("config") is None else dict(data["config"]),
            score=data.get("score"),
            metric=str(data.get("metric", "")),
            default_config=dict(data.get("default_config") or {}),
            default_score=data.get("default_score"),
            trials=[dict(t) for t in data.get("trials", [])],
            notes=[str(n) for n in data.get("notes", [])],
            raw=dict(data),
        )


# ----------------------------------------------------------------------------- helpers


def direction_of(metric: str) -> str:
    """``minimize`` for losses and errors (``val_loss``, ``rmse``...), else ``maximize``."""
    name = metric.lower().removeprefix("val_")
    return "minimize" if any(token in name for token in _MINIMIZED) else "maximize"


def family_params(family: str) -> list[str] | None:
    """The hyperparameter names of a built-in family; None for a family hyperprior does
    not know (then every param of a foreign run is kept)."""
    from hyperprior.training.spaces import get_space

    try:
        return list(get_space(family).dim_names)
    except (KeyError, ValueError):
        return None


def jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars unwrapped, NaN/inf as None, UUIDs as text."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, uuid.UUID):
        return str(value)
    if hasattr(value, "item") and callable(value.item) and type(value).__module__ == "numpy":
        value = value.item()
    return finite_or_none(value)


def run_json(run: Any) -> dict[str, Any]:
    """One run as the API's JSON, with the SDK's defaults filled in."""
    if dataclasses.is_dataclass(run) and not isinstance(run, type):
        data: dict[str, Any] = {f.name: getattr(run, f.name) for f in dataclasses.fields(run)}
        dataset = data.get("dataset")
        if dataset is not None and not isinstance(dataset, Mapping):
            data["dataset"] = {
                "name": dataset.name,
                "task": dataset.task,
                "meta_features": dict(dataset.meta_features),
            }
            for key in ("data_sha256", "version"):
                if getattr(dataset, key, None) is not None:
                    data["dataset"][key] = getattr(dataset, key)
    elif isinstance(run, Mapping):
        data = dict(run)
    else:
        raise TypeError(f"a run must be a mapping or a dataclass, got {type(run).__name__}")
    if isinstance(data.get("dataset"), Description):
        data["dataset"] = data["dataset"].to_json()
    if data.get("dataset") is None:
        data.pop("dataset", None)
    if data.get("dataset_id") is None:
        data.pop("dataset_id", None)
    if data.get("id") is None:
        data["id"] = uuid.uuid4()
    data.setdefault("status", "ok")
    data.setdefault("fidelity", 1.0)
    data.setdefault("cost_seconds", 0.0)
    data.setdefault("source", "user")
    if data.get("error") is None:
        data.pop("error", None)
    if data.get("metrics") is None:
        data.pop("metrics", None)
    out: dict[str, Any] = jsonable(data)
    return out
