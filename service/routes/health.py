"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from hyperprior.db import migrate
from hyperprior.db.errors import DatabaseUnavailableError, SchemaOutOfDateError
from hyperprior.service.auth import public
from hyperprior.service.deps import StoreDep

router = APIRouter(tags=["health"])


@router.get("/healthz", dependencies=[Depends(public)])
def healthz() -> dict[str, str]:
    """The process is up (does not touch the database)."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    dependencies=[Depends(public)],
    responses={503: {"description": "Database unreachable or schema not at head."}},
)
def readyz(store: StoreDep) -> JSONResponse:
    """Ready to serve: the database answers and its schema is at head."""
    try:
        store.ping()
        migrate.verify_schema(store.engine)
    except DatabaseUnavailableError as error:
        return JSONResponse(
            status_code=503,
            content={"status": "database_unavailable", "detail": str(error)},
            headers={"Retry-After": str(error.retry_after)},
        )
    except SchemaOutOfDateError as error:
        return JSONResponse(
            status_code=503, content={"status": "schema_out_of_date", "detail": str(error)}
        )
    return JSONResponse(
        content={"status": "ready", "database": store.backend, "schema": migrate.head_revision()}
    )
