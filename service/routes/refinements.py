"""POST /v1/refinements, GET /v1/refinements[/{id}], POST .../{id}/cancel: verify suggestions.

One path takes two bodies: ``multipart/form-data`` with a CSV or Parquet ``file`` and
its ``target`` column, or JSON naming a ``dataset`` of the catalog (data the service
already has). Either way the answer is 202 with the job's id and URL; the job runs in a
worker process (see `hyperprior.service.jobs`) and ``GET`` shows its progress, then its result.
A cancelled job stops before its next trial; the trials it measured stay in the history.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Annotated, Any, get_args

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from hyperprior.db.entities import Job
from hyperprior.db.errors import InvalidStateError, NotFoundError
from hyperprior.db.store import Store
from hyperprior.service import uploads
from hyperprior.service.auth import (
    Principal,
    WriteDep,
    check_job_quota,
    grants,
    job_admission,
    require_scope,
)
from hyperprior.service.deps import SettingsDep, StoreDep
from hyperprior.service.jobs import JOB_KIND, JobRunner, RefinementRequest, refine_request_public
from hyperprior.service.schemas import ErrorPublic, FamilyName
from hyperprior.service.settings import Settings
from hyperprior.training.families import find_family
from hyperprior.vocabulary import JobStatus, Task

router = APIRouter(tags=["refinements"])

Family = FamilyName
#: Room for the multipart envelope and the form fields around the file.
_FORM_OVERHEAD = 256 * 1024
_MAX_CONFIGS = 10


def get_runner(request: Request) -> JobRunner | None:
    """The job runner of this process (None when jobs run elsewhere)."""
    runner: JobRunner | None = getattr(request.app.state, "jobs", None)
    return runner


RunnerDep = Annotated[JobRunner | None, Depends(get_runner)]


class _Options(BaseModel):
    """What both bodies share."""

    model_config = ConfigDict(extra="forbid")

    family: Family = Field(
        description="The model family to tune: a built-in one (the service cannot run a "
        "declared family: it has no estimator).",
    )

    @field_validator("family", mode="before")
    @classmethod
    def _runnable(cls, value: Any) -> Any:
        # Say why a declared family is refused, not only which names are allowed.
        if isinstance(value, str) and value not in get_args(Family) and find_family(value):
            raise ValueError(
                f"{value!r} is a declared family: the service cannot run it (it has no "
                "estimator); refine it in your own code and record the runs"
            )
        return value
    task: Task | None = Field(
        default=None, description="The task; inferred from the target when omitted."
    )
    budget_seconds: float = Field(
        default=60.0,
        gt=0,
        allow_inf_nan=False,
        description="Wall-clock budget of the verification runs (at most "
        "HYPERPRIOR_REFINE_MAX_BUDGET_S).",
    )
    n_candidates: int = Field(
        default=8,
        ge=1,
        le=50,
        description="Suggestions to verify (the library default is always added as the "
        "control; at most HYPERPRIOR_REFINE_MAX_CANDIDATES).",
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Same seed, same plan.")
    configs: list[dict[str, Any]] = Field(
        default_factory=list,
        max_length=_MAX_CONFIGS,
        description="Your own configs to verify alongside the suggestions.",
    )


class RefinementCreate(_Options):
    """A refinement on a dataset of the catalog."""

    dataset: str = Field(
        min_length=1,
        max_length=200,
        description="Name of a catalog dataset, e.g. sklearn/wine.",
    )


class RefinementUpload(_Options):
    """The form fields of a refinement on an uploaded file."""

    target: str = Field(min_length=1, max_length=500, description="The target column.")
    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="The dataset's name in the history (default: upload/ and a content hash).",
    )

    @field_validator("configs", mode="before")
    @classmethod
    def _configs_from_json(cls, value: Any) -> Any:
        # A form field is a string: configs come as one JSON list.
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"configs must be a JSON list of objects: {exc}") from None
        return value


class RefinementAccepted(BaseModel):
    """A queued refinement."""

    id: uuid.UUID
    status: str
    url: str = Field(description="Where to poll for progress and the result.")
    created_at: dt.datetime


class RefinementPublic(BaseModel):
    """A refinement job: its status, progress and, once it succeeded, the result."""

    id: uuid.UUID
    status: JobStatus
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    heartbeat_at: dt.datetime | None
    progress: dict[str, Any] = Field(
        description="phase, rung (of rungs), trials_done of trials_planned, elapsed_seconds, "
        "budget_seconds, best_score."
    )
    request: dict[str, Any]
    result: dict[str, Any] | None = Field(
        description="config, score, metric, default_config, default_score, zero_shot, "
        "trials (config, fidelity, rung, score, status, seconds), notes."
    )
    error: str | None

    @classmethod
    def from_job(cls, job: Job) -> RefinementPublic:
        """The response schema of a stored job."""
        return cls(
            id=job.id,
            status=job.status,  # type: ignore[arg-type]
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            heartbeat_at=job.heartbeat_at,
            progress=job.progress,
            request=refine_request_public(job.request),
            result=job.result,
            error=job.error,
        )


_FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["file", "target", "family"],
    "properties": {
        "file": {"type": "string", "format": "binary", "description": "CSV or Parquet."},
        "target": {"type": "string", "description": "The target column."},
        "family": {"type": "string", "enum": list(get_args(Family))},
        "task": {"type": "string", "enum": list(get_args(Task))},
        "budget_seconds": {"type": "number", "exclusiveMinimum": 0},
        "n_candidates": {"type": "integer", "minimum": 1, "maximum": 50},
        "seed": {"type": "integer", "minimum": 0},
        "name": {"type": "string"},
        "configs": {"type": "string", "description": "A JSON list of configs."},
    },
}
_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": RefinementCreate.model_json_schema()},
            "multipart/form-data": {"schema": _FORM_SCHEMA},
        },
    }
}


def _invalid(error: ValidationError, body: Any) -> RequestValidationError:
    errors = [{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_url=False)]
    return RequestValidationError(errors, body=body)


def _check_bounds(options: _Options, settings: Settings) -> None:
    problems = []
    if options.budget_seconds > settings.refine_max_budget_s:
        problems.append(
            {
                "loc": ["body", "budget_seconds"],
                "msg": f"budget_seconds: at most {settings.refine_max_budget_s:g} "
                "(HYPERPRIOR_REFINE_MAX_BUDGET_S)",
                "type": "less_than_equal",
            }
        )
    if options.n_candidates > settings.refine_max_candidates:
        problems.append(
            {
                "loc": ["body", "n_candidates"],
                "msg": f"n_candidates: at most {settings.refine_max_candidates} "
                "(HYPERPRIOR_REFINE_MAX_CANDIDATES)",
                "type": "less_than_equal",
            }
        )
    if problems:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=problems)


def _from_catalog(body: RefinementCreate) -> RefinementRequest:
    from hyperprior.training.datasets import get_entry

    try:
        entry = get_entry(body.dataset)
    except KeyError as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=[
                {"loc": ["body", "dataset"], "msg": str(exc).strip("'\""), "type": "value_error"}
            ],
        ) from None
    if body.task is not None and body.task != entry.task:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=[
                {
                    "loc": ["body", "task"],
                    "msg": f"{entry.name} is a {entry.task} dataset, not {body.task}",
                    "type": "value_error",
                }
            ],
        )
    return RefinementRequest(
        family=body.family,
        task=entry.task,
        budget_seconds=body.budget_seconds,
        n_candidates=body.n_candidates,
        seed=body.seed,
        source={"kind": "catalog", "dataset": entry.name, "rows": entry.rows},
        dataset_name=entry.name,
        configs=tuple(body.configs),
    )


async def _from_upload(request: Request, settings: Settings) -> RefinementRequest:
    declared = request.headers.get("content-length")
    if (
        declared
        and declared.isdigit()
        and int(declared) > settings.max_upload_bytes + _FORM_OVERHEAD
    ):
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            detail=f"the upload is larger than the limit of {settings.max_upload_bytes} bytes "
            "(HYPERPRIOR_MAX_UPLOAD_BYTES)",
        )
    form = await request.form(max_files=1, max_fields=20, max_part_size=64 * 1024)
    try:
        fields = {k: v for k, v in form.items() if not isinstance(v, UploadFile)}
        try:
            options = RefinementUpload.model_validate(fields)
        except ValidationError as error:
            raise _invalid(error, fields) from None
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail=[
                    {
                        "loc": ["body", "file"],
                        "msg": "file: a CSV or Parquet file is required",
                        "type": "missing",
                    }
                ],
            )
        _check_bounds(options, settings)
        stored = await uploads.save_upload(upload, settings)
    finally:
        await form.close()
    try:
        return await run_in_threadpool(_check_stored, stored, options, settings)
    except BaseException:
        uploads.remove_upload(settings, stored.name)
        raise


def _check_stored(
    stored: uploads.StoredUpload, options: RefinementUpload, settings: Settings
) -> RefinementRequest:
    path = uploads.upload_path(settings, stored.name)
    try:
        frame = uploads.read_frame(path, stored.kind, max_rows=settings.max_upload_rows)
    except ValueError as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=[{"loc": ["body", "file"], "msg": str(exc), "type": "value_error"}],
        ) from None
    info = uploads.check_target(frame, options.target, options.task, settings)
    return RefinementRequest(
        family=options.family,
        task=info.task,
        budget_seconds=options.budget_seconds,
        n_candidates=options.n_candidates,
        seed=options.seed,
        source=uploads.describe_upload(stored, info, options.target),
        dataset_name=options.name or f"upload/{stored.sha256[:12]}",
        configs=tuple(options.configs),
    )


async def read_submission(
    request: Request, principal: WriteDep, store: StoreDep, settings: SettingsDep
) -> RefinementRequest:
    """The refinement a request asks for, validated (an upload is saved, then checked)."""
    # At its limit, a key is refused before it uploads anything.
    await run_in_threadpool(check_job_quota, store, settings, principal)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        return await _from_upload(request, settings)
    if content_type in ("application/json", ""):
        raw = await request.body()
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RequestValidationError(
                [{"loc": ("body",), "msg": f"invalid JSON: {exc}", "type": "json_invalid"}],
                body=None,
            ) from None
        try:
            parsed = RefinementCreate.model_validate(body)
        except ValidationError as error:
            raise _invalid(error, body) from None
        _check_bounds(parsed, settings)
        return _from_catalog(parsed)
    raise HTTPException(
        status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
        detail="send multipart/form-data (a file and its target) or JSON naming a catalog dataset",
    )


SubmissionDep = Annotated[RefinementRequest, Depends(read_submission)]


def _queue(
    store: Store, settings: Settings, principal: Principal, submission: RefinementRequest
) -> Job:
    try:
        with job_admission(store, settings, principal):
            return store.create_job(JOB_KIND, submission.to_json(), owner=principal.key_id)
    except BaseException:
        uploads.remove_upload(settings, submission.upload)
        raise


@router.post(
    "/refinements",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        400: {"model": ErrorPublic, "description": "A malformed multipart body."},
        413: {"model": ErrorPublic, "description": "File too large, or too many rows."},
        415: {"model": ErrorPublic, "description": "Neither CSV nor Parquet, or another body."},
        422: {"description": "Bad fields, unknown dataset, unusable target or task."},
        429: {"model": ErrorPublic, "description": "This key has too many jobs running."},
    },
    openapi_extra=_REQUEST_BODY,
)
async def create_refinement(
    submission: SubmissionDep,
    principal: WriteDep,
    store: StoreDep,
    settings: SettingsDep,
    runner: RunnerDep,
    response: Response,
) -> RefinementAccepted:
    """Queue a refinement of suggestions on an uploaded file or a catalog dataset."""
    job = await run_in_threadpool(_queue, store, settings, principal, submission)
    if runner is not None:
        runner.wake()
    url = f"/v1/refinements/{job.id}"
    response.headers["Location"] = url
    return RefinementAccepted(id=job.id, status=job.status, url=url, created_at=job.created_at)


@router.get(
    "/refinements/{refinement_id}",
    dependencies=[Depends(require_scope("read"))],
    responses={404: {"model": ErrorPublic, "description": "No such refinement."}},
)
def get_refinement(refinement_id: uuid.UUID, store: StoreDep) -> RefinementPublic:
    """A refinement's status, progress and result."""
    job = store.get_job(refinement_id)
    if job.kind != JOB_KIND:
        raise NotFoundError(f"refinement {refinement_id} not found")
    return RefinementPublic.from_job(job)


class RefinementList(BaseModel):
    """Refinements, newest first."""

    data: list[RefinementPublic]


@router.get("/refinements", dependencies=[Depends(require_scope("read"))])
def list_refinements(
    store: StoreDep,
    status_: Annotated[
        JobStatus | None, Query(alias="status", description="Only jobs with this status.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="At most this many.")] = 20,
) -> RefinementList:
    """Recent refinements, newest first."""
    jobs = store.list_jobs(kind=JOB_KIND, status=status_, limit=limit)
    return RefinementList(data=[RefinementPublic.from_job(job) for job in jobs])


def _cancel(store: Store, settings: Settings, principal: Principal, job_id: uuid.UUID) -> Job:
    job = store.get_job(job_id)
    if job.kind != JOB_KIND:
        raise NotFoundError(f"refinement {job_id} not found")
    if not grants(principal.scopes, "admin") and (
        principal.key_id is None or job.owner != principal.key_id
    ):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"refinement {job_id} was submitted with another API key: cancel it with "
            "that key or an admin key",
        )
    if job.finished:
        raise InvalidStateError(f"refinement {job_id} already {job.status}: nothing to cancel")
    who = "an admin" if principal.key_id is None else f"API key '{principal.name}'"
    cancelled = store.update_job(job_id, status="cancelled", error=f"cancelled by {who}")
    if job.status == "queued":
        # No worker will claim it now (claiming needs 'queued'); a running worker removes
        # its own upload when it notices.
        uploads.remove_upload(settings, RefinementRequest.from_json(job.request).upload)
    return cancelled


@router.post(
    "/refinements/{refinement_id}/cancel",
    responses={
        403: {"model": ErrorPublic, "description": "Submitted with another API key."},
        404: {"model": ErrorPublic, "description": "No such refinement."},
        409: {"model": ErrorPublic, "description": "The refinement already finished."},
    },
)
def cancel_refinement(
    refinement_id: uuid.UUID,
    principal: WriteDep,
    store: StoreDep,
    settings: SettingsDep,
    runner: RunnerDep,
) -> RefinementPublic:
    """Cancel a queued or running refinement.

    The service stops a running one's worker within a poll (``HYPERPRIOR_JOB_POLL_S``),
    trials in flight included; the verification runs it already measured stay in the
    history.
    """
    job = _cancel(store, settings, principal, refinement_id)
    if runner is not None:
        runner.wake()
    return RefinementPublic.from_job(job)
