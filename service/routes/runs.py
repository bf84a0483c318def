"""Run ingestion and listing."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from hyperprior.db.errors import InvalidArgumentError
from hyperprior.db.store import Store
from hyperprior.service.auth import require_scope
from hyperprior.service.deps import SettingsDep, StoreDep
from hyperprior.service.schemas import (
    MAX_ID,
    ErrorPublic,
    IngestResultPublic,
    IsoDateTime,
    PlainName,
    RunPublic,
    RunsCreate,
    RunsPublic,
)
from hyperprior.training.ingest import check_new_runs
from hyperprior.vocabulary import RunSource, RunStatus

router = APIRouter(tags=["runs"])


@router.post(
    "/runs",
    status_code=status.HTTP_201_CREATED,
    response_model_exclude_none=True,
    dependencies=[Depends(require_scope("write"))],
    responses={
        200: {"model": IngestResultPublic, "description": "Nothing new: all were duplicates."},
        409: {
            "model": ErrorPublic,
            "description": "A run id was reused with other content, or an inline dataset "
            "names a stored dataset with other data (the answer names its `dataset_id`).",
        },
        413: {"model": ErrorPublic, "description": "Request body too large."},
        503: {"model": ErrorPublic, "description": "Database unavailable; retry."},
    },
)
def create_runs(
    body: RunsCreate, store: StoreDep, settings: SettingsDep, response: Response
) -> IngestResultPublic:
    """Ingest runs all-or-nothing and idempotently, configs checked; answers their dataset ids."""
    if len(body.runs) > settings.max_runs_per_batch:
        raise InvalidArgumentError(
            f"runs: {len(body.runs)} runs in one request, the limit is "
            f"{settings.max_runs_per_batch} (HYPERPRIOR_MAX_RUNS_PER_BATCH): split the batch"
        )
    runs = [run.to_new_run() for run in body.runs]
    # Refused configs never reach the store, so a rejected batch changes nothing.
    flagged = check_new_runs(runs, task_of_dataset=lambda i: _task_of(store, i))
    result = store.ingest_runs(runs)
    if result.inserted == 0:
        response.status_code = status.HTTP_200_OK
    return IngestResultPublic(
        inserted=result.inserted,
        duplicates=result.duplicates,
        dataset_ids=list(result.dataset_ids),
        warnings=flagged or None,
    )


def _task_of(store: Store, dataset_id: int) -> str | None:
    dataset = store.find_dataset(dataset_id)
    return None if dataset is None else dataset.task


@router.get("/runs", dependencies=[Depends(require_scope("read"))])
def list_runs(
    store: StoreDep,
    dataset_id: Annotated[int | None, Query(gt=0, le=MAX_ID)] = None,
    family: PlainName | None = None,
    source: RunSource | None = None,
    status: RunStatus | None = None,
    since: Annotated[
        IsoDateTime | None, Query(description="ISO 8601; without offset means UTC.")
    ] = None,
    cursor: Annotated[
        str | None, Query(min_length=1, description="`next_cursor` of the last page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> RunsPublic:
    """List runs, oldest first, filtered and paginated by cursor."""
    page = store.list_runs(
        dataset_id=dataset_id,
        family=family,
        source=source,
        status=status,
        since=since,
        cursor=cursor,
        limit=limit,
    )
    return RunsPublic(
        data=[RunPublic.from_run(run) for run in page.data],
        count=page.count,
        next_cursor=page.next_cursor,
    )


@router.get(
    "/runs/{run_id}",
    dependencies=[Depends(require_scope("read"))],
    responses={404: {"model": ErrorPublic}},
)
def get_run(run_id: uuid.UUID, store: StoreDep) -> RunPublic:
    """One run by id."""
    return RunPublic.from_run(store.get_run(run_id))
