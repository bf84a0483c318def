"""Asking hyperprior as the local-mode suggest command does: a registry of the shipped
surrogates read from a directory, the request body, and the answer's fields."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.foreign_bench.collection import Loaded
from benchmarks.foreign_bench.settings import TOP_N

# ---------------------------------------------------------------------------------------
# Asking hyperprior as the local-mode suggest command does


@dataclass(frozen=True)
class _SurrogateRecord:
    id: int
    family: str
    created_at: datetime
    n_runs: int
    status: str
    meta: dict[str, Any]
    sha256: str
    model_text: str | None


class DirRegistry:
    """A surrogates registry over a directory of ``FAMILY.txt`` + ``FAMILY.json`` files.

    Every family with a file is active, as the shipped surrogates are after
    ``hyperprior db seed``; the engine verifies each text against its sha256.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._records: dict[int, _SurrogateRecord] = {}
        for i, meta_path in enumerate(sorted(self.directory.glob("*.json")), start=1):
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            text_path = meta_path.with_suffix(".txt")
            if not text_path.exists():
                continue
            registry = dict(meta.get("registry", {}))
            n_runs = registry.get("n_runs", meta.get("training", {}).get("n_runs", 0))
            self._records[i] = _SurrogateRecord(
                id=i,
                family=str(meta.get("family", meta_path.stem)),
                created_at=datetime.fromtimestamp(meta_path.stat().st_mtime, UTC),
                n_runs=int(n_runs or 0),
                status="active",
                meta=meta,
                sha256=str(meta.get("sha256", "")),
                model_text=text_path.read_text(encoding="utf-8"),
            )

    def list_surrogates(self, family: str | None = None) -> list[_SurrogateRecord]:
        """Registered surrogates without model text."""
        return [
            dataclasses.replace(r, model_text=None)
            for r in self._records.values()
            if family is None or r.family == family
        ]

    def get_surrogate(self, surrogate_id: int) -> _SurrogateRecord:
        """One surrogate with its model text."""
        return self._records[surrogate_id]

    def sha256(self, family: str) -> str | None:
        """The sha256 of the family's surrogate, if any."""
        for r in self._records.values():
            if r.family == family:
                return r.sha256
        return None


class _NoHistory:
    """The history reader: empty, so a surrogate without a portfolio answers without one."""

    def runs_frame(self, *, family: str | None = None, status: str | None = "ok") -> pd.DataFrame:
        return pd.DataFrame()


def make_engine(surrogates: Path) -> Any:
    """The suggestion engine of local mode, its active surrogates read from a directory."""
    from hyperprior.training.suggest import SuggestionEngine

    return SuggestionEngine(_NoHistory(), DirRegistry(surrogates))


def request_body(data: Loaded, family: str, n: int = TOP_N) -> dict[str, Any]:
    """The POST /v1/suggestions body ``hyperprior suggest`` builds for this data."""
    from hyperprior.training.metafeatures import compute_metafeatures

    meta = compute_metafeatures(data.X, data.y, data.task, seed=0)
    return {
        "family": family,
        "task": data.task,
        "dataset": {
            "name": data.spec.name.split("/")[-1],
            "meta_features": {
                k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in meta.items()
            },
        },
        "n": n,
    }


def ask(engine: Any, body: Mapping[str, Any]) -> dict[str, Any]:
    """The answer local mode prints with ``--json`` (the CLI's in-process client)."""
    from hyperprior.service.routes.suggestions import SuggestionCreate, to_public
    from hyperprior.training.suggest import SuggestionRequest

    request = SuggestionCreate.model_validate(body)
    result = engine.suggest(
        SuggestionRequest(
            family=request.family,
            task=request.task,
            meta_features=request.dataset.meta_features.as_mapping(),
            n=request.n,
            seed=request.seed,
            fixed=request.fixed,
            dataset_name=request.dataset.name,
        )
    )
    answer: dict[str, Any] = to_public(result).model_dump(mode="json")
    return answer


_DISTANCE_KEYS = ("distance", "distance_to_history", "history_distance", "nearest_distance")


def answer_fields(answer: Mapping[str, Any]) -> dict[str, Any]:
    """What the answer says beyond its configs, read defensively (fields are being added)."""
    suggestions = list(answer.get("suggestions") or [])
    nearest = None
    if suggestions:
        near = (suggestions[0].get("explanation") or {}).get("nearest_datasets") or []
        if near and isinstance(near[0], Mapping):
            nearest = {"name": near[0].get("name"), "distance": near[0].get("distance")}
    distance = {k: answer[k] for k in answer if any(d in k for d in _DISTANCE_KEYS)}
    return {
        "p_beats_default": [s.get("p_beats_default") for s in suggestions],
        "sources": [s.get("source") for s in suggestions],
        "predicted_quality": [s.get("predicted_quality") for s in suggestions],
        "warnings": list(answer.get("warnings") or []),
        "distance_fields": distance,
        "nearest_dataset": nearest,
        "surrogate": answer.get("surrogate"),
        "extra_keys": sorted(set(answer) - {"suggestions", "surrogate", "warnings"}),
    }
