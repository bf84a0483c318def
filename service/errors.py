"""The one place where errors become HTTP responses.

* Store errors: not found 404, conflict 409, invalid 422, database down 503 with
  ``Retry-After``.
* Configs that do not fit their family's space (`hyperprior.training.ingest`): 422 naming the
  run and the field, like request validation.
* Request validation: 422 whose messages say which run (index and id) and which
  field is wrong, e.g. ``runs[3] (id 0b5f...): score: Input should be a finite number``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from hyperprior.db.errors import (
    AlreadyExistsError,
    ConflictError,
    DatabaseUnavailableError,
    DatasetConflictError,
    InvalidArgumentError,
    InvalidStateError,
    NotFoundError,
    SchemaOutOfDateError,
    StoreError,
    UnknownDatasetError,
)
from hyperprior.training.ingest import InvalidConfigError

__all__ = [
    "MAX_REPORTED_ERRORS",
    "describe_validation_errors",
    "install_error_handlers",
    "store_error_response",
]

logger = logging.getLogger(__name__)

#: At most this many validation errors are listed in one response.
MAX_REPORTED_ERRORS = 50


def _run_id(body: Any, index: int) -> str | None:
    try:
        run_id = body["runs"][index]["id"]
    except (KeyError, IndexError, TypeError):
        return None
    return run_id if isinstance(run_id, str) else None


def _field(parts: Sequence[Any]) -> str:
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def describe_validation_errors(
    errors: Sequence[Mapping[str, Any]], body: Any
) -> list[dict[str, Any]]:
    """Turn pydantic errors into entries that name the run and the field.

    Args:
        errors: ``RequestValidationError.errors()``.
        body: The parsed request body, to look up run ids.

    Returns:
        One entry per error: ``loc``, ``msg`` (self-contained sentence), ``type``,
        and for errors inside ``runs``: ``run_index``, ``run_id``, ``field``.
    """
    described = []
    for error in errors:
        loc = list(error.get("loc", ()))
        raw_msg = str(error.get("msg", "invalid"))
        # pydantic prefixes messages of custom validators with "Value error, ".
        msg = raw_msg.removeprefix("Value error, ")
        entry: dict[str, Any] = {"loc": loc, "type": error.get("type", "value_error")}
        if len(loc) >= 3 and loc[:2] == ["body", "runs"] and isinstance(loc[2], int):
            index = loc[2]
            run_id = _run_id(body, index)
            field = _field(loc[3:]) or "run"
            entry.update(run_index=index, run_id=run_id, field=field)
            who = f"runs[{index}]" + (f" (id {run_id})" if run_id else "")
            entry["msg"] = f"{who}: {field}: {msg}"
        else:
            where = _field(loc[1:] if loc and loc[0] in ("body", "query", "path") else loc)
            entry["msg"] = f"{where}: {msg}" if where else msg
        described.append(entry)
    return described


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    errors = error.errors()
    described = describe_validation_errors(errors[:MAX_REPORTED_ERRORS], error.body)
    content: dict[str, Any] = {"detail": described}
    if len(errors) > MAX_REPORTED_ERRORS:
        content["error_count"] = len(errors)
    return JSONResponse(status_code=422, content=content)


def store_error_response(error: StoreError) -> JSONResponse:
    """The HTTP response for a store error (also used by middleware, outside the handlers)."""
    if isinstance(error, UnknownDatasetError):
        entry = {
            "loc": ["body", "runs", error.run_index, "dataset_id"],
            "msg": str(error),
            "type": "unknown_dataset",
            "run_index": error.run_index,
            "run_id": error.run_id,
            "field": "dataset_id",
        }
        return JSONResponse(status_code=422, content={"detail": [entry]})
    if isinstance(error, NotFoundError):
        return JSONResponse(status_code=404, content={"detail": str(error)})
    if isinstance(error, ConflictError):
        return JSONResponse(status_code=409, content={"detail": str(error), "run_id": error.run_id})
    if isinstance(error, DatasetConflictError):
        content = {"detail": str(error), "dataset_id": error.dataset_id}
        return JSONResponse(status_code=409, content=content)
    if isinstance(error, AlreadyExistsError | InvalidStateError):
        return JSONResponse(status_code=409, content={"detail": str(error)})
    if isinstance(error, InvalidArgumentError):
        entry = {"loc": [], "msg": str(error), "type": "value_error"}
        return JSONResponse(status_code=422, content={"detail": [entry]})
    if isinstance(error, DatabaseUnavailableError):
        logger.warning("database unavailable: %s", error)
        return JSONResponse(
            status_code=503,
            content={"detail": f"database unavailable, retry later: {error}"},
            headers={"Retry-After": str(error.retry_after)},
        )
    if isinstance(error, SchemaOutOfDateError):
        logger.error("%s", error)
        return JSONResponse(status_code=503, content={"detail": str(error)})
    logger.error("unhandled store error: %s", error)
    return JSONResponse(status_code=500, content={"detail": str(error)})


async def _invalid_config(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, InvalidConfigError)
    entries = error.entries
    content: dict[str, Any] = {"detail": entries[:MAX_REPORTED_ERRORS]}
    if len(entries) > MAX_REPORTED_ERRORS:
        content["error_count"] = len(entries)
    return JSONResponse(status_code=422, content=content)


async def _store_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StoreError)
    return store_error_response(error)


def install_error_handlers(app: FastAPI) -> None:
    """Register the exception handlers on the app."""
    app.add_exception_handler(StoreError, _store_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(InvalidConfigError, _invalid_config)
