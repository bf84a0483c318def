"""What the dashboard charts: the history over time, and what the surrogate has learnt.

* ``GET /v1/stats/timeline``: runs per UTC hour, day, week or month (whichever suits
  the history's span) by family and by source, and new datasets per period (one
  grouped query, see `hyperprior.db.store.Store.timeline`).
* ``POST /v1/insights/partial-dependence``: for a described dataset, the partial
  dependence of predicted quality on each hyperparameter of a family and the
  hyperparameter importances, from the family's active surrogate
  (`hyperprior.training.insights.partial_dependence`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from hyperprior.service.auth import require_scope
from hyperprior.service.deps import StoreDep
from hyperprior.service.routes.suggestions import DatasetDescription, SurrogateRef
from hyperprior.training.families import FAMILIES
from hyperprior.training.insights import Insights, InsightsError, partial_dependence
from hyperprior.training.suggest import SuggestionError
from hyperprior.vocabulary import Task

router = APIRouter(tags=["insights"])


TimelineScale = Literal["hour", "day", "week", "month"]
#: The longest history (in days) drawn at each scale; longer ones go a scale up, so a
#: chart has between a few and ~120 bars: a seed loaded in an hour is not one bar.
_SCALE_SPANS: tuple[tuple[TimelineScale, int], ...] = (("hour", 3), ("day", 120), ("week", 840))


def timeline_scale(first: dt.date, last: dt.date) -> TimelineScale:
    """The period of a history from ``first`` to ``last`` (UTC days, both included)."""
    days = (last - first).days + 1
    return next((scale for scale, span in _SCALE_SPANS if days <= span), "month")


def _period(scale: TimelineScale, key: str) -> str:
    """The start of the period a day (``YYYY-MM-DD``) or hour (``...THH``) falls in."""
    if scale == "hour":
        return f"{key}:00:00Z"
    day = dt.date.fromisoformat(key[:10])
    if scale == "week":  # ISO weeks, from Monday
        day -= dt.timedelta(days=day.weekday())
    elif scale == "month":
        day = day.replace(day=1)
    return day.isoformat()


def _periods(scale: TimelineScale, first: str, last: str) -> list[str]:
    """Every period from the one of ``first`` to the one of ``last``, empty ones too."""
    if scale == "hour":
        start = dt.datetime.fromisoformat(first[:-1])
        hours = int((dt.datetime.fromisoformat(last[:-1]) - start).total_seconds() // 3600)
        return [f"{(start + dt.timedelta(hours=h)).isoformat()}Z" for h in range(hours + 1)]
    out, day, end = [], dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    while day <= end:
        out.append(day.isoformat())
        if scale == "day":
            day += dt.timedelta(days=1)
        elif scale == "week":
            day += dt.timedelta(days=7)
        else:
            day = (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return out


class TimelinePublic(BaseModel):
    """Counts per period (hour, day, week or month, whichever suits the history's span);
    every list is aligned with ``periods``, which run without gaps from the first run or
    dataset to the last."""

    scale: TimelineScale = Field(description="The length of each period (UTC).")
    periods: list[str] = Field(
        description="Start of each period, oldest first: YYYY-MM-DDTHH:00:00Z for hours, "
        "YYYY-MM-DD for days, weeks (from Monday) and months (the 1st)."
    )
    by_family: dict[str, list[int]] = Field(description="Runs per period of each family.")
    by_source: dict[str, list[int]] = Field(description="Runs per period of each source.")
    runs: list[int] = Field(description="Runs per period, all families.")
    datasets: list[int] = Field(description="Datasets first seen in the period.")


@router.get("/stats/timeline", dependencies=[Depends(require_scope("read"))])
def get_timeline(store: StoreDep) -> TimelinePublic:
    """Runs per period by family and source, and new datasets per period."""
    timeline = store.timeline()
    days = sorted({d for d, *_ in timeline.runs} | {d for d, _ in timeline.datasets})
    if not days:
        return TimelinePublic(
            scale="day", periods=[], by_family={}, by_source={}, runs=[], datasets=[]
        )
    scale = timeline_scale(dt.date.fromisoformat(days[0]), dt.date.fromisoformat(days[-1]))
    if scale == "hour":
        timeline = store.timeline(hourly=True)
    keys = sorted({k for k, *_ in timeline.runs} | {k for k, _ in timeline.datasets})
    periods = _periods(scale, _period(scale, keys[0]), _period(scale, keys[-1]))
    index = {period: i for i, period in enumerate(periods)}
    by_family: dict[str, list[int]] = {}
    by_source: dict[str, list[int]] = {}
    runs = [0] * len(periods)
    for key, family, source, count in timeline.runs:
        i = index[_period(scale, key)]
        by_family.setdefault(family, [0] * len(periods))[i] += count
        by_source.setdefault(source, [0] * len(periods))[i] += count
        runs[i] += count
    datasets = [0] * len(periods)
    for key, count in timeline.datasets:
        datasets[index[_period(scale, key)]] += count
    return TimelinePublic(
        scale=scale,
        periods=periods,
        by_family=dict(sorted(by_family.items())),
        by_source=dict(sorted(by_source.items())),
        runs=runs,
        datasets=datasets,
    )


class PartialDependenceCreate(BaseModel):
    """A dataset description and the family to explain."""

    model_config = ConfigDict(extra="forbid")

    family: str = Field(description=f"One of {', '.join(FAMILIES)}.")
    task: Task
    dataset: DatasetDescription
    grid: int = Field(default=16, ge=2, le=64, strict=True, description="Points per number.")
    n_background: int = Field(
        default=48, ge=8, le=512, strict=True, description="Configs averaged over."
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1, strict=True)


class ParamEffectPublic(BaseModel):
    """Partial dependence of predicted quality on one hyperparameter."""

    name: str
    kind: Literal["float", "int", "categorical"]
    log: bool = Field(description="Plot the values on a log scale.")
    values: list[Any] = Field(description="The grid.")
    mean: list[float] = Field(description="Predicted normalised quality at each value.")
    lower: list[float] = Field(description="Mean minus one sd of the members' curves.")
    upper: list[float] = Field(description="Mean plus one sd of the members' curves.")
    importance: float = Field(description="Share of the total importance (sums to 1).")
    spread: float = Field(description="Standard deviation of the curve (raw importance).")
    range: float = Field(description="Best minus worst value of the curve.")
    best: Any
    default: Any


class PartialDependencePublic(BaseModel):
    """Effects of every hyperparameter, most important first."""

    family: str
    task: str
    surrogate: SurrogateRef
    params: list[ParamEffectPublic]
    grid: int
    n_background: int
    quality: str = Field(
        default="Predicted normalised quality: the share of configs tried on similar "
        "datasets that a config beats (0..1)."
    )


_LOC = {
    "meta_features": ["body", "dataset", "meta_features"],
    "task": ["body", "task"],
    "grid": ["body", "grid"],
    "n_background": ["body", "n_background"],
}


def _unprocessable(loc: list[str], message: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        detail=[{"loc": loc, "msg": message, "type": "value_error"}],
    )


@router.post(
    "/insights/partial-dependence",
    dependencies=[Depends(require_scope("read"))],
    responses={
        404: {"description": "No active surrogate for the family yet."},
        422: {"description": "Unknown family, impossible meta-features."},
    },
)
async def create_partial_dependence(
    body: PartialDependenceCreate, request: Request
) -> PartialDependencePublic:
    """Partial dependence and importance of each hyperparameter for a described dataset."""
    engine = request.app.state.suggestions.engine
    try:
        policy = await run_in_threadpool(engine.policy, body.family)
    except SuggestionError as error:
        raise _unprocessable(["body", "family"], str(error)) from None
    if policy.surrogate is None or policy.info is None:
        raise HTTPException(
            status_code=status.HTTP_404_NOT_FOUND,
            detail=f"no {body.family} surrogate is active yet: load the seed history "
            "(hyperprior db seed) or retrain (hyperprior retrain)",
        )
    try:
        insights: Insights = await run_in_threadpool(
            partial_dependence,
            policy.surrogate,
            body.task,
            body.dataset.meta_features.as_mapping(),
            grid=body.grid,
            n_background=body.n_background,
            seed=body.seed,
        )
    except InsightsError as error:
        raise _unprocessable(_LOC.get(error.field or "", ["body"]), str(error)) from None
    info = policy.info
    return PartialDependencePublic(
        family=insights.family,
        task=insights.task,
        surrogate=SurrogateRef(id=info.id, trained_at=info.trained_at, n_runs=info.n_runs),
        params=[ParamEffectPublic(**effect.__dict__) for effect in insights.params],
        grid=insights.grid,
        n_background=insights.n_background,
    )
