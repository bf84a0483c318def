"""The surrogates registry: list versions with their metrics, activate one (admin)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from hyperprior.db.entities import Surrogate
from hyperprior.service.auth import require_scope
from hyperprior.service.deps import StoreDep
from hyperprior.service.schemas import MAX_ID, ErrorPublic, PlainName

router = APIRouter(tags=["surrogates"])

AdminDep = Annotated[None, Depends(require_scope("admin"))]


class SurrogatePublic(BaseModel):
    """A registered surrogate (without its model text)."""

    id: int
    family: str
    target: str = Field(
        default="",
        description="What it ranks by: '' for each task's primary metric, else a metric "
        "name (log_loss, f1_macro, rmse ...); one is active per (family, target).",
    )
    status: str = Field(description="candidate, active or retired.")
    created_at: dt.datetime
    n_runs: int
    sha256: str
    metrics: dict[str, Any] = Field(description="Grouped-CV quality by dataset.")
    training: dict[str, Any] = Field(description="What it was trained on.")
    params: dict[str, Any] = Field(description="The training recipe.")
    serving: bool = Field(description="Whether this API process currently answers with it.")

    @classmethod
    def from_entity(cls, surrogate: Surrogate, *, serving: bool) -> SurrogatePublic:
        """Build from the store's value object."""
        meta = surrogate.meta or {}
        return cls(
            id=surrogate.id,
            family=surrogate.family,
            target=surrogate.target,
            status=surrogate.status,
            created_at=surrogate.created_at,
            n_runs=surrogate.n_runs,
            sha256=surrogate.sha256,
            metrics=surrogate.metrics,
            training=dict(meta.get("training", {})),
            params=dict(meta.get("params", {})),
            serving=serving,
        )


class SurrogatesPublic(BaseModel):
    """Registered surrogates, newest first."""

    data: list[SurrogatePublic]
    count: int


def _serving(request: Request, surrogate: Surrogate) -> bool:
    services = getattr(request.app.state, "suggestions", None)
    if services is None:
        return False
    services.engine.policy(surrogate.key)  # loads the model if not yet used
    return bool(services.engine.active_surrogate_id(surrogate.key) == surrogate.id)


@router.get("/surrogates", dependencies=[Depends(require_scope("read"))])
def list_surrogates(
    request: Request,
    store: StoreDep,
    family: Annotated[PlainName | None, Query(description="Only this family.")] = None,
) -> SurrogatesPublic:
    """List surrogate versions, newest first, with their grouped-CV metrics."""
    listed = store.list_surrogates(family)
    data = [SurrogatePublic.from_entity(s, serving=_serving(request, s)) for s in listed]
    return SurrogatesPublic(data=data, count=len(data))


@router.post(
    "/surrogates/{surrogate_id}/activate",
    responses={404: {"model": ErrorPublic, "description": "No such surrogate."}},
)
def activate_surrogate(
    request: Request,
    store: StoreDep,
    _admin: AdminDep,
    surrogate_id: Annotated[int, Path(gt=0, le=MAX_ID)],
) -> SurrogatePublic:
    """Make a surrogate the active one of its family (roll back or forward); admin only."""
    store.activate_surrogate(surrogate_id)
    services = getattr(request.app.state, "suggestions", None)
    if services is not None:
        # This process answers with it at once; the others within one poll interval.
        services.watcher.poll_once()
    activated = store.get_surrogate(surrogate_id)
    return SurrogatePublic.from_entity(activated, serving=_serving(request, activated))
