"""Datasets seen in the run history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from hyperprior.service.auth import require_scope
from hyperprior.service.deps import StoreDep
from hyperprior.service.schemas import MAX_ID, DatasetPublic, DatasetsPublic, ErrorPublic, PlainName
from hyperprior.vocabulary import Task

router = APIRouter(tags=["datasets"])


@router.get("/datasets", dependencies=[Depends(require_scope("read"))])
def list_datasets(
    store: StoreDep,
    task: Task | None = None,
    name: PlainName | None = None,
    cursor: Annotated[str | None, Query(min_length=1)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DatasetsPublic:
    """List datasets, oldest first, paginated by cursor."""
    page = store.list_datasets(task=task, name=name, cursor=cursor, limit=limit)
    return DatasetsPublic(
        data=[DatasetPublic.from_dataset(d) for d in page.data],
        count=page.count,
        next_cursor=page.next_cursor,
    )


@router.get(
    "/datasets/{dataset_id}",
    dependencies=[Depends(require_scope("read"))],
    responses={404: {"model": ErrorPublic}},
)
def get_dataset(
    dataset_id: Annotated[int, Path(gt=0, le=MAX_ID)], store: StoreDep
) -> DatasetPublic:
    """One dataset by id."""
    return DatasetPublic.from_dataset(store.get_dataset(dataset_id))
