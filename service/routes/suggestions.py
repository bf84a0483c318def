"""POST /v1/suggestions: configs a surrogate expects to do well on a described dataset."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from hyperprior.service.auth import require_scope
from hyperprior.service.schemas import MetaFeaturesCreate, Name, PlainName
from hyperprior.training.families import FAMILIES
from hyperprior.training.ranking import ranking_note
from hyperprior.training.suggest import (
    SuggestionEngine,
    SuggestionError,
    SuggestionRequest,
    SuggestionResult,
)
from hyperprior.vocabulary import Task

router = APIRouter(tags=["suggestions"])


async def get_engine(request: Request) -> SuggestionEngine:
    """The suggestion engine of this process (built by the app factory)."""
    # async: an attribute read, not worth a trip through the threadpool.
    engine: SuggestionEngine = request.app.state.suggestions.engine
    return engine


EngineDep = Annotated[SuggestionEngine, Depends(get_engine)]


class DatasetDescription(BaseModel):
    """The dataset to suggest for, described by its meta-features."""

    model_config = ConfigDict(extra="forbid")

    name: PlainName | None = None
    meta_features: MetaFeaturesCreate = Field(
        description="n_rows and n_features are required; the rest may be omitted or null."
    )


class SuggestionCreate(BaseModel):
    """A request for suggestions."""

    model_config = ConfigDict(extra="forbid")

    family: str = Field(
        description=f"One of {', '.join(FAMILIES)}, or a family declared with POST "
        "/v1/families (answered from the portfolio of its runs until its retrain has a "
        "surrogate)."
    )
    task: Task
    metric: Name | None = Field(
        default=None,
        description=(
            "The metric you will judge by (roc_auc, accuracy, balanced_accuracy, log_loss, "
            "f1_macro, r2, rmse, mae). Suggestions are ranked by it when the history has a "
            "surrogate of it (see `ranked_by`), else by the task's primary metric."
        ),
    )
    dataset: DatasetDescription
    n: int = Field(default=5, ge=1, le=50, strict=True, description="How many suggestions.")
    seed: int | None = Field(
        default=None, ge=0, le=2**63 - 1, strict=True, description="Same seed, same answer."
    )
    fixed: dict[str, Any] | None = Field(
        default=None, description="Parameters forced on every suggestion."
    )


class SuggestionPublic(BaseModel):
    """One suggested config."""

    rank: int
    config: dict[str, Any]
    predicted_quality: float | None = Field(
        description="Expected percentile among configs tried on similar datasets (0..1)."
    )
    interval: tuple[float, float] | None
    source: str = Field(description="surrogate, portfolio or default.")
    explanation: dict[str, Any]
    p_beats_default: float | None = Field(
        default=None,
        description=(
            "Calibrated probability that this config scores above the library default on "
            "this dataset (null for the default itself and without a calibrated surrogate)."
        ),
    )


class SurrogateRef(BaseModel):
    """The surrogate that scored the suggestions."""

    id: int | None
    trained_at: str | None
    n_runs: int


class SuggestionsPublic(BaseModel):
    """Suggestions, best first."""

    suggestions: list[SuggestionPublic]
    surrogate: SurrogateRef | None
    warnings: list[str]
    distance: float | None = Field(
        default=None,
        description="Distance of the dataset to the nearest dataset in the history.",
    )
    distance_threshold: float | None = Field(
        default=None,
        description=(
            "Beyond this distance the surrogate was not validated (learned on held-out "
            "groups) and the first suggestion is the library default, unless the default "
            "is no safe answer for the task (then a warning says so)."
        ),
    )
    ranked_by: str | None = Field(
        default=None,
        description="The metric the suggestions are ranked by: `metric` when the history "
        "has a surrogate of it, else the task's primary metric (roc_auc, accuracy, r2).",
    )
    ranking: str = Field(
        default="",
        description="How the suggestions were ranked, in words: by a pessimistic bound "
        "(mean minus spread), so rank order can differ from `predicted_quality`.",
    )


def to_public(result: SuggestionResult) -> SuggestionsPublic:
    """The response schema of a policy result."""
    return SuggestionsPublic(
        suggestions=[
            SuggestionPublic(
                rank=s.rank,
                config=s.config,
                predicted_quality=s.predicted_quality,
                interval=s.interval,
                source=s.source,
                explanation=s.explanation,
                p_beats_default=s.p_beats_default,
            )
            for s in result.suggestions
        ],
        surrogate=None
        if result.surrogate is None
        else SurrogateRef(
            id=result.surrogate.id,
            trained_at=result.surrogate.trained_at,
            n_runs=result.surrogate.n_runs,
        ),
        warnings=result.warnings,
        distance=result.distance,
        distance_threshold=result.distance_threshold,
        ranked_by=result.ranked_by,
        ranking=ranking_note(result.surrogate is not None),
    )


_FIELD_LOC = {
    "family": ["body", "family"],
    "task": ["body", "task"],
    "n": ["body", "n"],
    "fixed": ["body", "fixed"],
    "meta_features": ["body", "dataset", "meta_features"],
}


@router.post(
    "/suggestions",
    dependencies=[Depends(require_scope("read"))],
    response_model=SuggestionsPublic,
    responses={422: {"description": "Unknown family or parameter, impossible meta-features."}},
)
async def create_suggestions(
    body: SuggestionCreate, engine: EngineDep, http_request: Request
) -> Response:
    """Suggest configs for a dataset, ranked by the active surrogate."""
    request = SuggestionRequest(
        family=body.family,
        task=body.task,
        meta_features=body.dataset.meta_features.as_mapping(),
        n=body.n,
        seed=body.seed,
        fixed=body.fixed,
        metric=body.metric,
        dataset_name=body.dataset.name,
    )
    try:
        # A loaded policy answers in a few milliseconds of CPU that hold the GIL anyway:
        # inline, without two thread switches. Loading one reads the database and the
        # model: that goes to the threadpool, so the event loop keeps serving.
        if http_request.app.state.settings.suggest_inline and engine.ready(request):
            result = engine.suggest(request)
        else:
            result = await run_in_threadpool(engine.suggest, request)
    except SuggestionError as error:
        loc = _FIELD_LOC.get(error.field or "", ["body"])
        raise HTTPException(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=[{"loc": loc, "msg": str(error), "type": "value_error"}],
        ) from None
    # Serialised here, as FastAPI would (the same bytes): returned as a model, it would be
    # validated against the response model once more.
    return Response(to_public(result).model_dump_json(by_alias=True), media_type="application/json")
