"""Counts over the history."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from hyperprior.service.auth import require_scope
from hyperprior.service.deps import StoreDep
from hyperprior.service.schemas import StatsPublic

router = APIRouter(tags=["stats"])


@router.get("/stats", dependencies=[Depends(require_scope("read"))])
def get_stats(store: StoreDep) -> StatsPublic:
    """Numbers of runs and datasets, runs by family, task, source and status."""
    return StatsPublic.from_stats(store.stats())
