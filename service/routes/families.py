"""Model families: the built-in ones, and families users declare by their search space."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Response, status
from pydantic import BaseModel, ConfigDict, Field

from hyperprior.service.auth import require_scope
from hyperprior.service.deps import StoreDep
from hyperprior.service.schemas import ErrorPublic
from hyperprior.training.families import FAMILIES, find_family
from hyperprior.training.families.declared import (
    MIN_DECLARED_DATASETS,
    NAME_PATTERN,
    SPACE_SCHEMA,
    BuiltInNameError,
    DeclarationError,
    declare,
    declared_family,
    is_declared,
)
from hyperprior.training.spaces import TASKS, Space

router = APIRouter(tags=["families"])


class FamilyPublic(BaseModel):
    """A family's search space (as `Space.to_json`) and its default config per task."""

    family: str
    space: dict[str, Any]
    defaults: dict[str, dict[str, Any]]
    declared: bool = Field(
        default=False,
        description="Declared by a user (POST /v1/families): no estimator, the service "
        "never trains it; its runs come from the user's own training.",
    )
    created_at: dt.datetime | None = Field(
        default=None, description="When it was declared (declared families only)."
    )


class FamiliesPublic(BaseModel):
    data: list[FamilyPublic]
    count: int


class FamilyCreate(BaseModel):
    """A family of your own, declared by its search space."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=2,
        max_length=64,
        pattern=NAME_PATTERN,
        description="Lower-case letters, digits and _, starting with a letter (my_xgboost).",
    )
    description: str = Field(default="", max_length=500)
    space: dict[str, Any] = Field(
        description=(
            "Typed parameters (float, int, categorical; log scale, bounds, choices, "
            "conditions) and defaults per task. Suggestions draw from [low, high]; values "
            "outside are stored and flagged unless minimum/maximum refuse them. A surrogate "
            f"is trained once runs cover {MIN_DECLARED_DATASETS} datasets; before that, "
            "suggestions are the nearest datasets' best configs (source: portfolio)."
        ),
        json_schema_extra=SPACE_SCHEMA,
    )


def _family(name: str, space: Space, **extra: Any) -> FamilyPublic:
    body = space.to_json()
    tasks = body.get("tasks", list(TASKS))
    return FamilyPublic(
        family=name, space=body, defaults={t: space.default(t) for t in tasks}, **extra
    )


def _loc(field: str) -> list[str | int]:
    # "space.params[2] (max_depth).low" -> ["space", "params", 2, "low"]
    plain = re.sub(r" \([^)]*\)", "", field).replace("[", ".").replace("]", "")
    return [int(p) if p.isdigit() else p for p in plain.split(".") if p]


def _built_in() -> list[str]:
    # Registered in code (built-in or plugin); declared ones are listed from the store.
    return [name for name in FAMILIES if not is_declared(name)]


@router.get("/families", dependencies=[Depends(require_scope("read"))])
def list_families(store: StoreDep) -> FamiliesPublic:
    """Every family: the built-in ones, then the declared ones (marked `declared`)."""
    data = [_family(name, FAMILIES[name].space) for name in _built_in()]
    for record in store.list_families():
        family = find_family(record.name) or declared_family(
            record.name, record.params, record.defaults, record.description
        )
        data.append(_family(record.name, family.space, declared=True, created_at=record.created_at))
    return FamiliesPublic(data=data, count=len(data))


@router.get(
    "/families/{family}",
    dependencies=[Depends(require_scope("read"))],
    responses={404: {"model": ErrorPublic, "description": "No such family."}},
)
def get_family(family: str, store: StoreDep) -> FamilyPublic:
    """One family's search space and defaults."""
    if family in _built_in():
        return _family(family, FAMILIES[family].space)
    # A name no declaration can have is not looked up (PostgreSQL refuses NUL bytes).
    record = store.find_family(family) if re.fullmatch(NAME_PATTERN, family) else None
    if record is None:
        raise HTTPException(
            status_code=404,
            detail=f"unknown family {family!r}; known: {', '.join(_built_in())}; declare your "
            "own with POST /v1/families (or Client.declare_family)",
        )
    found = find_family(family)
    space = (
        found.space
        if found is not None
        else declared_family(record.name, record.params, record.defaults, record.description).space
    )
    return _family(family, space, declared=True, created_at=record.created_at)


@router.post(
    "/families",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Depends(require_scope("write"))],
    responses={
        200: {"model": FamilyPublic, "description": "Declared already with the same space."},
        409: {
            "model": ErrorPublic,
            "description": "A built-in name, or declared already with another space.",
        },
        422: {"description": "A space that is not valid; the message names the field."},
    },
)
def declare_family(body: FamilyCreate, store: StoreDep, response: Response) -> FamilyPublic:
    """Declare a family of your own by its search space (idempotent for the same space)."""
    try:
        record, created, family = declare(store, body.name, body.space, body.description)
    except BuiltInNameError as error:
        raise HTTPException(status_code=status.HTTP_409_CONFLICT, detail=str(error)) from None
    except DeclarationError as error:
        raise HTTPException(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=[
                {
                    "loc": ["body", *_loc(error.field)],
                    "msg": str(error),
                    "type": "invalid_space",
                }
            ],
        ) from None
    if not created:
        response.status_code = status.HTTP_200_OK
    return _family(body.name, family.space, declared=True, created_at=record.created_at)
