"""The words every layer shares, defined once: tasks, directions, statuses, sources,
the canonical JSON of a config, and what counts as a finite number.

Pure Python with no dependencies, so the SDK, the store, training and the service can
all import it without pulling each other in. Family names are not here: a family is
defined by its module, and ``hyperprior.training.families.FAMILIES`` is their list.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal, get_args

Task = Literal["binary", "multiclass", "regression"]
TASKS: tuple[str, ...] = get_args(Task)
CLASSIFICATION_TASKS: tuple[str, ...] = ("binary", "multiclass")

Direction = Literal["maximize", "minimize"]
DIRECTIONS: tuple[str, ...] = get_args(Direction)

RunStatus = Literal["ok", "failed"]
RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)

# Where a run came from: a user's training script, the bootstrap, a refinement's
# verification trial, or an importer (Optuna, CSV, MLflow).
RunSource = Literal["user", "bootstrap", "verification", "import"]
RUN_SOURCES: tuple[str, ...] = get_args(RunSource)

SurrogateStatus = Literal["candidate", "active", "retired"]
SURROGATE_STATUSES: tuple[str, ...] = get_args(SurrogateStatus)

JobKind = Literal["refine", "retrain", "bootstrap"]
JOB_KINDS: tuple[str, ...] = get_args(JobKind)

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JOB_STATUSES: tuple[str, ...] = get_args(JobStatus)


def _plain(value: Any) -> Any:
    # numpy scalars sneak in from sampling and pandas; store them as plain numbers.
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {value!r}")


# One encoder for all calls: json.dumps with options builds a new one every time.
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_plain
)


def canonical_json(value: Any) -> str:
    """The one serialisation of a config (or any JSON value) that ids and dedup rest on.

    Sorted keys, no whitespace, numpy scalars as plain numbers, NaN and infinity refused
    (``ValueError``). Run ids of the shipped seed are uuid5 of strings that contain it,
    so it must never change: ``tests/test_vocabulary.py`` pins them.
    """
    return _CANONICAL.encode(value)


def finite_or_none(value: Any) -> Any:
    """``value``, or None where it is a float that is NaN or infinite (JSON has neither).

    Anything that is not a float (ints, strings, None) is returned as it is.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def finite_values(mapping: Any) -> dict[str, Any]:
    """A copy of ``mapping`` with :func:`finite_or_none` applied to every value."""
    return {k: finite_or_none(v) for k, v in mapping.items()}
