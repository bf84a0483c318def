"""The built-in model families: their search spaces and library defaults."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel

from hyperprior.service.auth import require_scope
from hyperprior.service.schemas import ErrorPublic
from hyperprior.training.spaces import SPACES, TASKS, get_space

router = APIRouter(tags=["families"])


class FamilyPublic(BaseModel):
    """A family's search space (as `Space.to_json`) and its default config per task."""

    family: str
    space: dict[str, Any]
    defaults: dict[str, dict[str, Any]]


class FamiliesPublic(BaseModel):
    data: list[FamilyPublic]
    count: int


def _family(name: str) -> FamilyPublic:
    space = get_space(name)
    tasks = space.to_json().get("tasks", list(TASKS))
    return FamilyPublic(
        family=name, space=space.to_json(), defaults={t: space.default(t) for t in tasks}
    )


@router.get("/families", dependencies=[Depends(require_scope("read"))])
def list_families() -> FamiliesPublic:
    """Every built-in family with its search space and library defaults."""
    data = [_family(name) for name in SPACES]
    return FamiliesPublic(data=data, count=len(data))


@router.get(
    "/families/{family}",
    dependencies=[Depends(require_scope("read"))],
    responses={404: {"model": ErrorPublic, "description": "No such family."}},
)
def get_family(family: str) -> FamilyPublic:
    """One family's search space and library defaults."""
    if family not in SPACES:
        raise HTTPException(
            status_code=404, detail=f"unknown family {family!r}; known: {', '.join(SPACES)}"
        )
    return _family(family)
