"""Declared families: a user's own model family, known by its search space alone.

A team declares a family (``POST /v1/families``, ``Client.declare_family``, or an Optuna
study's distributions) with a name, typed parameters and defaults per task. The
declaration is stored in the database and turned here into a :class:`Family` of the
training registry, so ingest validation, suggestions (the portfolio from the first
run, a surrogate once the nightly retrain has :data:`MIN_DECLARED_DATASETS` datasets)
and the retrain run through the same code as the built-in families.

A declared family has no estimator: hyperprior never trains it itself (refinement
and ``make_estimator`` refuse it with :class:`NotRunnableError`); its runs come from the
user's own training.

The declaration's JSON (:data:`SPACE_SCHEMA`)::

    {"params": [
        {"name": "max_depth", "type": "int", "low": 2, "high": 12, "default": 6},
        {"name": "learning_rate", "type": "float", "low": 0.01, "high": 0.3, "log": true,
         "default": 0.3, "minimum": 0, "exclusive_minimum": true},
        {"name": "booster", "type": "categorical", "choices": ["gbtree", "dart"],
         "default": "gbtree"},
        {"name": "rate_drop", "type": "float", "low": 0.0, "high": 0.5, "default": 0.0,
         "condition": {"parent": "booster", "values": ["dart"]}}],
     "defaults": {"regression": {"max_depth": 4}}}

``low``/``high`` bound where suggestions are drawn; values outside them are still valid
(stored and flagged) unless ``minimum``/``maximum`` say the library refuses them.
"""

from __future__ import annotations

import hashlib
import json
import re
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hyperprior.training.families.base import Family
from hyperprior.training.spaces import Categorical, Float, Int, Param, Space
from hyperprior.vocabulary import TASKS, canonical_json

__all__ = [
    "MIN_DECLARED_DATASETS",
    "BuiltInNameError",
    "declare",
    "NAME_PATTERN",
    "SPACE_SCHEMA",
    "DeclarationError",
    "NotRunnableError",
    "declared_family",
    "declared_names",
    "forget_declared",
    "is_declared",
    "normalise_declaration",
    "register_declared",
    "spec_sha256",
]

MIN_DECLARED_DATASETS = 10
"""A declared family gets a surrogate once its runs cover this many datasets.

Below it the retrain answers ``no_data`` and suggestions stay the portfolio (the nearest
datasets' best configs). Why 10: a user's history is one source group, so the grouped CV
falls back to holding out datasets, and its default 10 folds hold out one dataset each
only from 10 datasets on; with fewer, the promotion decision and the ``p_beats_default``
calibration rest on a handful of held-out datasets, where copying the nearest dataset's
best config is as good a bet. (A choice, not a measurement; built-in families need 3.)"""

NAME_PATTERN = r"^[a-z][a-z0-9_]{1,63}$"
_NAME = re.compile(NAME_PATTERN)
_MAX_PARAMS = 64
_MAX_CHOICES = 256
_TYPES = ("float", "int", "categorical")

_CHOICE = {"type": ["string", "number", "integer", "boolean", "null"]}
SPACE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["params"],
    "additionalProperties": False,
    "properties": {
        "params": {
            "type": "array",
            "minItems": 1,
            "maxItems": _MAX_PARAMS,
            "items": {
                "type": "object",
                "required": ["name", "type"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"},
                    "type": {"enum": list(_TYPES)},
                    "low": {"type": "number"},
                    "high": {"type": "number"},
                    "log": {"type": "boolean"},
                    "minimum": {"type": ["number", "null"]},
                    "maximum": {"type": ["number", "null"]},
                    "exclusive_minimum": {"type": "boolean"},
                    "choices": {"type": "array", "minItems": 1, "items": _CHOICE},
                    "default": _CHOICE,
                    "condition": {
                        "type": ["object", "null"],
                        "required": ["parent", "values"],
                        "properties": {
                            "parent": {"type": "string"},
                            "values": {"type": "array", "minItems": 1, "items": _CHOICE},
                        },
                    },
                    "tasks": {"type": ["array", "null"], "items": {"enum": list(TASKS)}},
                    "doc": {"type": "string"},
                },
            },
        },
        "defaults": {
            "type": "object",
            "description": "Per task (binary, multiclass, regression): parameter -> default, "
            "overriding the parameters' own `default`.",
            "additionalProperties": {"type": "object"},
        },
    },
}
"""The JSON Schema of a declaration's space (served in the OpenAPI document)."""

_KEYS = {
    "float": {"low", "high", "log", "minimum", "maximum", "exclusive_minimum"},
    "int": {"low", "high", "log", "minimum", "maximum", "exclusive_minimum"},
    "categorical": {"choices"},
}
_COMMON = {"name", "type", "default", "condition", "tasks", "doc"}

# Names of the families registered from declarations (the rest of FAMILIES is code).
_DECLARED: set[str] = set()


class DeclarationError(ValueError):
    """A declaration that cannot be a space; ``field`` names where (``params[2].low``)."""

    def __init__(self, message: str, field: str = "space") -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class BuiltInNameError(ValueError):
    """A declaration under the name of a family registered in code."""


class NotRunnableError(RuntimeError):
    """A declared family has no estimator: the service cannot train or build it."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _choice(value: Any, where: str) -> Any:
    if value is None or isinstance(value, str | bool | int | float):
        return value
    raise DeclarationError(
        f"{json.dumps(value, default=str)} is not a choice: use a string, number, boolean or null",
        where,
    )


def _number(entry: Mapping[str, Any], key: str, where: str, *, required: bool) -> float | None:
    value = entry.get(key)
    if value is None:
        if required:
            raise DeclarationError(f"{key} is required for a {entry['type']} parameter", where)
        return None
    if not _is_number(value) or value != value or value in (float("inf"), float("-inf")):
        raise DeclarationError(f"{key} must be a finite number, got {value!r}", f"{where}.{key}")
    return value


def _param(entry: Any, index: int, defaults: Mapping[str, Mapping[str, Any]]) -> Param:
    where = f"space.params[{index}]"
    if not isinstance(entry, Mapping):
        raise DeclarationError("a parameter must be an object", where)
    name = entry.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", name):
        raise DeclarationError(
            f"name {name!r} must be a keyword argument name (letters, digits, _; at most 64)",
            f"{where}.name",
        )
    where = f"space.params[{index}] ({name})"
    kind = entry.get("type")
    if kind not in _TYPES:
        raise DeclarationError(
            f"type {kind!r} is not one of {', '.join(_TYPES)} (log scale: "
            '"type": "float", "log": true)',
            f"{where}.type",
        )
    unknown = sorted(set(entry) - _COMMON - _KEYS[kind])
    if unknown:
        raise DeclarationError(
            f"unknown key(s) {unknown} for a {kind} parameter; allowed: "
            f"{sorted(_COMMON | _KEYS[kind])}",
            where,
        )
    task_defaults = {t: d[name] for t, d in defaults.items() if name in d}
    common: dict[str, Any] = {
        "default": entry.get("default"),
        "task_defaults": task_defaults,
        "doc": str(entry.get("doc", "")),
    }
    condition = entry.get("condition")
    if condition is not None:
        if (
            not isinstance(condition, Mapping)
            or not isinstance(condition.get("parent"), str)
            or not isinstance(condition.get("values"), list)
            or not condition["values"]
        ):
            raise DeclarationError(
                'must be {"parent": NAME, "values": [VALUE, ...]}', f"{where}.condition"
            )
        values = tuple(_choice(v, f"{where}.condition.values") for v in condition["values"])
        common["condition"] = (condition["parent"], values)
    tasks = entry.get("tasks")
    if tasks is not None:
        if not isinstance(tasks, list) or not tasks or any(t not in TASKS for t in tasks):
            raise DeclarationError(
                f"must be a non-empty list of {', '.join(TASKS)}", f"{where}.tasks"
            )
        common["tasks"] = tuple(tasks)
    try:
        if kind == "categorical":
            choices = entry.get("choices")
            if not isinstance(choices, list) or not choices or len(choices) > _MAX_CHOICES:
                raise DeclarationError(
                    f"choices must be a list of 1 to {_MAX_CHOICES} values", f"{where}.choices"
                )
            return Categorical(
                name, tuple(_choice(c, f"{where}.choices") for c in choices), **common
            )
        low = _number(entry, "low", where, required=True)
        high = _number(entry, "high", where, required=True)
        assert low is not None
        assert high is not None
        log = entry.get("log", False)
        if not isinstance(log, bool):
            raise DeclarationError("log must be true or false", f"{where}.log")
        if not low < high:
            raise DeclarationError(f"low ({low:g}) must be below high ({high:g})", where)
        if log and low <= 0:
            raise DeclarationError(f"a log-scaled parameter needs low > 0, got {low:g}", where)
        if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
            raise DeclarationError("an int parameter needs integer low and high", where)
        exclusive = entry.get("exclusive_minimum", False)
        if not isinstance(exclusive, bool):
            raise DeclarationError("exclusive_minimum must be true or false", where)
        bounds: dict[str, Any] = {
            "minimum": _number(entry, "minimum", where, required=False),
            "maximum": _number(entry, "maximum", where, required=False),
            "exclusive_minimum": exclusive,
        }
        if kind == "int":
            return Int(name, int(low), int(high), log, **bounds, **common)
        return Float(name, float(low), float(high), log, **bounds, **common)
    except DeclarationError:
        raise
    except (TypeError, ValueError) as exc:
        raise DeclarationError(str(exc), where) from None


def normalise_declaration(space: Any) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Check a declaration's shape; return ``(params, defaults)`` as plain JSON.

    Raises:
        DeclarationError: naming the field and what to change.
    """
    if not isinstance(space, Mapping):
        raise DeclarationError('must be an object {"params": [...], "defaults": {...}}')
    unknown = sorted(set(space) - {"params", "defaults"})
    if unknown:
        raise DeclarationError(f"unknown key(s) {unknown}; a space has params and defaults")
    params = space.get("params")
    if not isinstance(params, list) or not params:
        raise DeclarationError("must be a non-empty list of parameters", "space.params")
    if len(params) > _MAX_PARAMS:
        raise DeclarationError(
            f"at most {_MAX_PARAMS} parameters, got {len(params)}", "space.params"
        )
    defaults = space.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise DeclarationError("must be an object: task -> {parameter: value}", "space.defaults")
    names = [p.get("name") for p in params if isinstance(p, Mapping)]
    for task, values in defaults.items():
        if task not in TASKS:
            raise DeclarationError(
                f"{task!r} is not a task; one of {', '.join(TASKS)}", "space.defaults"
            )
        if not isinstance(values, Mapping):
            raise DeclarationError("must be an object {parameter: value}", f"space.defaults.{task}")
        extra = sorted(k for k in values if k not in names)
        if extra:
            raise DeclarationError(
                f"{extra} are not parameters of this space", f"space.defaults.{task}"
            )
    # A JSON round trip: what is stored is exactly what is compared and rebuilt.
    plain = json.loads(json.dumps({"params": list(params), "defaults": dict(defaults)}))
    return plain["params"], plain["defaults"]


def build_space(
    name: str,
    params: Sequence[Mapping[str, Any]],
    defaults: Mapping[str, Mapping[str, Any]],
    description: str = "",
) -> Space:
    """The :class:`Space` of a declaration (see the module docstring).

    Raises:
        DeclarationError: naming the field and what to change.
    """
    built = tuple(_param(entry, i, defaults) for i, entry in enumerate(params))
    earlier: dict[str, Param] = {}
    for i, p in enumerate(built):
        if p.condition is not None and not isinstance(earlier.get(p.condition[0]), Categorical):
            raise DeclarationError(
                f"the parent {p.condition[0]!r} must be an earlier categorical parameter",
                f"space.params[{i}] ({p.name}).condition",
            )
        earlier[p.name] = p
    try:
        return Space(family=name, params=built, description=description)
    except ValueError as exc:
        message = str(exc)
        if "invalid" in message and "config" in message:
            message = (
                f"the defaults are not a valid config ({message}); give every parameter a "
                '"default" (or one per task in "defaults")'
            )
        raise DeclarationError(message) from None


def _not_runnable(name: str) -> Callable[..., Any]:
    def build(*_: Any, **__: Any) -> Any:
        raise NotRunnableError(
            f"{name} is a declared family: hyperprior has no estimator for it and cannot "
            "train it (refine, make_estimator); train it yourself and record the runs"
        )

    return build


def declared_family(
    name: str,
    params: Sequence[Mapping[str, Any]],
    defaults: Mapping[str, Mapping[str, Any]],
    description: str = "",
) -> Family:
    """The :class:`Family` of a declaration: its space, and no estimator.

    Raises:
        DeclarationError: a bad name or space.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise DeclarationError(
            f"{name!r} must be 2-64 lower-case letters, digits and _, starting with a letter",
            "name",
        )
    space = build_space(name, params, defaults, description or f"Declared family {name}.")
    build = _not_runnable(name)
    return Family(
        name=name,
        space=space,
        build=build,
        fidelity_unit="rows",
        description=space.description,
        estimator=build,
    )


def spec_sha256(params: Sequence[Mapping[str, Any]], defaults: Mapping[str, Any]) -> str:
    """What makes two declarations "the same space" (key order does not matter)."""
    text = canonical_json({"params": params, "defaults": defaults})
    return hashlib.sha256(text.encode()).hexdigest()


# ----------------------------------------------------------------------------- registry


def register_declared(family: Family) -> Family:
    """Register a declared family in the training registry (idempotent for its name)."""
    from hyperprior.training.families import _LOCK, FAMILIES, register

    with _LOCK:
        current = FAMILIES.get(family.name)
        if current is not None:
            return current
        _DECLARED.add(family.name)
        return register(family)


def is_declared(name: str) -> bool:
    """Whether ``name`` was registered from a declaration (not from code)."""
    return name in _DECLARED


def declared_names() -> tuple[str, ...]:
    """The declared families registered in this process."""
    return tuple(sorted(_DECLARED))


def forget_declared() -> None:
    """Unregister every declared family of this process (tests, a store switch)."""
    from hyperprior.training.families import unregister

    for name in list(_DECLARED):
        unregister(name)
        _DECLARED.discard(name)


def from_record(record: Any) -> Family:
    """The family of a stored declaration (``hyperprior.db.store.families.DeclaredFamily``)."""
    return declared_family(record.name, record.params, record.defaults, record.description)


def store_lookup(store: Any) -> Callable[[str], Family | None]:
    """A lookup for :func:`hyperprior.training.families.add_lookup`: the declaration of
    ``name`` in ``store``, so a family declared through another process is known here."""

    # A weak reference: a lookup left behind by a client that was never closed must not
    # keep its store (and database connections) alive.
    ref = weakref.ref(store)

    def lookup(name: str) -> Family | None:
        target = ref()
        if target is None or not isinstance(name, str) or not _NAME.match(name):
            return None
        record = target.find_family(name)
        return None if record is None else from_record(record)

    return lookup


def load_declared(store: Any) -> list[str]:
    """Register every family declared in ``store`` not yet known here; return their names."""
    from hyperprior.training.families import FAMILIES

    added = []
    for record in store.list_families():
        if record.name not in FAMILIES:
            register_declared(from_record(record))
            added.append(record.name)
    return added


def declare(store: Any, name: str, space: Any, description: str = "") -> tuple[Any, bool, Family]:
    """Check a declaration, store it and register it here (``POST /v1/families`` and the
    in-process SDK both call this).

    Returns:
        ``(record, created, family)``: the stored declaration, whether it is new (False:
        the same space was declared already), and the registered family.

    Raises:
        BuiltInNameError: ``name`` is a built-in (or plugin) family.
        DeclarationError: a bad name or space, naming the field.
        hyperprior.db.errors.AlreadyExistsError: ``name`` is declared with another space.
    """
    from hyperprior.training.families import FAMILIES

    if name in FAMILIES and not is_declared(name):
        raise BuiltInNameError(
            f"{name!r} is a built-in family; declare yours under another name (e.g. my_{name})"
        )
    params, defaults = normalise_declaration(space)
    family = declared_family(name, params, defaults, description)
    record, created = store.declare_family(
        name,
        params=params,
        defaults=defaults,
        spec_sha256=spec_sha256(params, defaults),
        description=description,
    )
    return record, created, register_declared(family)
