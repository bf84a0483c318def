"""Validated ingest: a run's config checked against its family's space.

Every path that stores runs from outside (``POST /v1/runs``, ``Client.record`` in
process, the importers) applies the same rules, so the history only holds configs the
surrogate can learn from:

* **refused** (422 naming the field and what is allowed): a config that is not a JSON
  object, an unknown key (``eta`` for ``lightgbm``, ``C`` on a regression dataset of
  ``linear``), a value of the wrong type (``num_leaves="abc"``, ``bootstrap=1``), a
  value the library itself rejects (``num_leaves=-5``, ``learning_rate=0``,
  ``num_leaves=99999999`` above LightGBM's limit, a categorical that is not a choice);
* **stored and flagged** (a warning in the answer): a value the library accepts but
  outside the search space's box (``n_estimators=5000``), and a parameter that has no
  effect under its parent (``subsample`` with ``subsample_freq=0``). Such runs are real
  measurements: refusing them would refuse what users actually train (library defaults
  such as ``reg_alpha=0`` lie outside some boxes). The surrogate encodes an out-of-box
  value at the nearest face of the box and ignores an inactive one, so the warning
  says that it learns less from them than the value suggests.

Keys missing from a config are allowed: they mean the library default. Declared families
(``POST /v1/families``) are checked against their declared space like the built-in ones.
A run of a family that is neither built in nor declared is refused by
:func:`check_new_runs` (422: declare it first), because nothing could be learned from
it: its configs have no space to encode them in. :func:`check_config` itself returns
``None`` for such a family, so a client that cannot see the server's declarations (the
importers over HTTP) leaves the verdict to the server.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hyperprior.training.families import FAMILIES, find_family
from hyperprior.training.spaces import Categorical, Param, Space, _Numeric, check_task

__all__ = [
    "ConfigCheck",
    "InvalidConfigError",
    "check_config",
    "undeclared_message",
    "check_new_runs",
]

_MAX_LISTED = 12


@dataclass(frozen=True)
class ConfigCheck:
    """The verdict on one config.

    Attributes:
        errors: ``(field, message)`` of every refused key (``field`` like
            ``config.num_leaves``); empty when the config may be stored.
        warnings: ``(field, message)`` of values stored but flagged.
    """

    errors: tuple[tuple[str, str], ...] = ()
    warnings: tuple[tuple[str, str], ...] = ()

    @property
    def ok(self) -> bool:
        """Whether the config may be stored."""
        return not self.errors


class InvalidConfigError(ValueError):
    """Runs whose configs do not fit their family's space.

    Attributes:
        entries: One per problem, in the API's error shape: ``loc``, ``msg`` (naming
            the run and the field), ``type`` (``invalid_config``), ``run_index``,
            ``run_id``, ``field``.
    """

    def __init__(self, entries: Sequence[Mapping[str, Any]]) -> None:
        self.entries = [dict(e) for e in entries]
        super().__init__("; ".join(str(e["msg"]) for e in self.entries))


def _show(value: Any) -> str:
    """A value as JSON shows it (``true``, ``null``, ``"sqrt"``)."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _listing(values: Sequence[Any]) -> str:
    shown = ", ".join(str(v) for v in values[:_MAX_LISTED])
    return shown + (", ..." if len(values) > _MAX_LISTED else "")


def _allowed(p: Param) -> str:
    """What ``p`` accepts, in words."""
    if isinstance(p, Categorical):
        return "one of " + _listing([_show(c) for c in p.choices])
    assert isinstance(p, _Numeric)
    kind = "an integer" if type(p).__name__ == "Int" else "a number"
    bounds = []
    if p.minimum is not None:
        bounds.append(f"{'>' if p.exclusive_minimum else '>='} {p.minimum:g}")
    if p.maximum is not None:
        bounds.append(f"<= {p.maximum:g}")
    out = kind + (" " + " and ".join(bounds) if bounds else "")
    if p.none_means is not None:
        out += ", or null"
    return f"{out} (search space {p.low:g}..{p.high:g})"


def _in_box(p: Param, value: Any) -> bool:
    if not isinstance(p, _Numeric) or value is None:
        return True
    return p.low <= float(value) <= p.high


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
        except (TypeError, ValueError):
            return False
    return type(a) is type(b) and a == b


def _default(p: Param, task: str | None) -> Any:
    try:
        return p.default_for(task)
    except ValueError:
        return None


def check_config(family: str, config: Any, task: str | None) -> ConfigCheck | None:
    """Check one run's config against the space of ``family``.

    Args:
        family: The run's family.
        config: The run's config (a mapping; anything else is refused).
        task: The dataset's task, or ``None`` when unknown (then a parameter of any
            task is accepted).

    Returns:
        The verdict, or ``None`` for a family that is neither built in nor declared.
    """
    space = _space_of(family)
    if space is None:
        return None
    if task is not None:
        check_task(task)
    if not isinstance(config, Mapping):
        return ConfigCheck(
            errors=(("config", f"must be a JSON object, got {type(config).__name__}"),)
        )
    errors: list[tuple[str, str]] = []
    warnings: list[tuple[str, str]] = []
    known = [p.name for p in space.params if p.applies_to(task)]
    for key in config:
        if key in known:
            continue
        other_task = any(p.name == key for p in space.params)
        why = (
            f"is not a parameter of {family} for a {task} task"
            if other_task
            else (f"is not a parameter of {family}")
        )
        errors.append(
            (
                f"config.{key}",
                f"{why}; it accepts {_listing(known)} (missing keys mean the library default)",
            )
        )
    # Canonical values seen so far, so that children see their parent's value.
    seen: dict[str, Any] = {}
    for p in space.params:
        if not p.applies_to(task):
            continue
        if p.name not in config:
            try:
                seen[p.name] = p.default_for(task)
            except ValueError:
                pass  # default depends on the unknown task; no child depends on it
            continue
        field = f"config.{p.name}"
        value = config[p.name]
        try:
            canonical = p.check(value)
        except ValueError:
            errors.append((field, f"{_show(value)} is not allowed: must be {_allowed(p)}"))
            continue
        seen[p.name] = canonical
        if p.condition is not None and not space._condition_met(p, seen):
            parent, values = p.condition
            warnings.append(
                (
                    field,
                    f"has no effect unless {parent} is {_listing([_show(v) for v in values])}"
                    f" (here {_show(seen.get(parent))}): stored, ignored by the surrogate",
                )
            )
        elif (
            isinstance(p, _Numeric)
            and not _in_box(p, canonical)
            and not _same(canonical, _default(p, task))
        ):
            warnings.append(
                (
                    field,
                    f"{_show(value)} is valid but outside the search space "
                    f"{p.low:g}..{p.high:g}: stored; the surrogate sees it as the nearest edge",
                )
            )
    return ConfigCheck(errors=tuple(errors), warnings=tuple(warnings))


def _space_of(family: Any) -> Space | None:
    found = find_family(family) if isinstance(family, str) else None
    return None if found is None else found.space


def undeclared_message(family: str) -> str:
    """Why a run of an unknown family is refused, and how to declare it."""
    return (
        f"family {family!r} is not declared: declare it with POST /v1/families (or "
        "Client.declare_family) with its search space, then send its runs again; "
        f"built-in families: {', '.join(FAMILIES)}"
    )


def check_new_runs(
    runs: Sequence[Any], *, task_of_dataset: Callable[[int], str | None]
) -> list[str]:
    """Check the configs of a batch of ``NewRun`` before it is stored.

    Args:
        runs: The batch (``hyperprior.db.entities.NewRun`` or anything with ``id``, ``family``,
            ``config``, ``dataset`` and ``dataset_id``).
        task_of_dataset: The task of a stored dataset id (``None`` if there is none:
            the store reports unknown ids itself).

    Returns:
        One warning per flagged value, naming the run and the field.

    Raises:
        InvalidConfigError: Every refused value of every run, and every run of a family
            neither built in nor declared (nothing is stored).
    """
    entries: list[dict[str, Any]] = []
    flagged: list[str] = []
    tasks: dict[int, str | None] = {}
    for index, run in enumerate(runs):
        if _space_of(run.family) is None:
            entries.append(
                {
                    "loc": ["body", "runs", index, "family"],
                    "msg": f"runs[{index}] (id {run.id}): family: {undeclared_message(run.family)}",
                    "type": "undeclared_family",
                    "run_index": index,
                    "run_id": str(run.id),
                    "field": "family",
                }
            )
            continue
        if run.dataset is not None:
            task = run.dataset.task
        elif run.dataset_id is not None:
            if run.dataset_id not in tasks:
                tasks[run.dataset_id] = task_of_dataset(run.dataset_id)
            task = tasks[run.dataset_id]
        else:
            task = None
        verdict = check_config(run.family, run.config, task)
        if verdict is None:
            continue
        who = f"runs[{index}] (id {run.id})"
        for field, message in verdict.errors:
            entries.append(
                {
                    "loc": ["body", "runs", index, *field.split(".")],
                    "msg": f"{who}: {field}: {message}",
                    "type": "invalid_config",
                    "run_index": index,
                    "run_id": str(run.id),
                    "field": field,
                }
            )
        flagged.extend(f"{who}: {field}: {message}" for field, message in verdict.warnings)
    if entries:
        raise InvalidConfigError(entries)
    return flagged
