"""What a refinement job is asked to do: the request stored as the job's ``request``.

Shared by the route that queues a job, the runner that claims it and the worker that
runs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["JOB_KIND", "RefinementRequest", "refine_request_public"]

JOB_KIND = "refine"


@dataclass(frozen=True)
class RefinementRequest:
    """What a refinement job is asked to do (stored as the job's ``request``).

    Attributes:
        family: Model family.
        task: ``binary``, ``multiclass`` or ``regression`` (checked against the data).
        budget_seconds: Wall-clock budget of the verification trials.
        n_candidates: Suggestions to ask the surrogate for (the default comes on top).
        seed: Seeds the suggestions and every trial's folds.
        source: ``{"kind": "catalog", "dataset": NAME}`` or, for an upload, what
            :func:`hyperprior.service.uploads.describe_upload` says.
        dataset_name: How the recorded runs name the dataset.
        configs: Extra configs to verify alongside the suggestions.
    """

    family: str
    task: str
    budget_seconds: float
    n_candidates: int
    seed: int
    source: Mapping[str, Any]
    dataset_name: str
    configs: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        """The stored form."""
        return {
            "family": self.family,
            "task": self.task,
            "budget_seconds": self.budget_seconds,
            "n_candidates": self.n_candidates,
            "seed": self.seed,
            "source": dict(self.source),
            "dataset_name": self.dataset_name,
            "configs": [dict(c) for c in self.configs],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RefinementRequest:
        """Read the stored form back."""
        return cls(
            family=str(data["family"]),
            task=str(data["task"]),
            budget_seconds=float(data["budget_seconds"]),
            n_candidates=int(data["n_candidates"]),
            seed=int(data.get("seed", 0)),
            source=dict(data["source"]),
            dataset_name=str(data["dataset_name"]),
            configs=tuple(dict(c) for c in data.get("configs", ())),
        )

    @property
    def upload(self) -> str | None:
        """The stored upload's file name, if the data was uploaded."""
        if self.source.get("kind") == "upload":
            return str(self.source["file"])
        return None


def refine_request_public(request: Mapping[str, Any]) -> dict[str, Any]:
    """A job's request as the API shows it (no file names)."""
    source = {k: v for k, v in dict(request.get("source", {})).items() if k != "file"}
    shown = {k: v for k, v in request.items() if k != "source"}
    shown["source"] = source
    return shown
