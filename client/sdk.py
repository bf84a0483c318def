"""The Python SDK's old single-module path, kept importable: ``hyperprior.client.sdk``.

The SDK now lives in three modules along its seams: `hyperprior.client.types` (the
values: `Description`, `Suggestions`, `Refinement`, `RecordResult` ...),
`hyperprior.client.transports` (HTTP and in-process) and `hyperprior.client.client`
(`Client`). Prefer ``from hyperprior import Client``.
"""

from __future__ import annotations

from hyperprior.client.client import MAX_BATCH, Client, infer_task
from hyperprior.client.transports import DEFAULT_DATABASE_URL
from hyperprior.client.types import (
    Description,
    RecordResult,
    Refinement,
    Suggestion,
    Suggestions,
    direction_of,
    family_params,
)

__all__ = [
    "DEFAULT_DATABASE_URL",
    "MAX_BATCH",
    "Client",
    "Description",
    "RecordResult",
    "Refinement",
    "Suggestion",
    "Suggestions",
    "direction_of",
    "family_params",
    "infer_task",
]
