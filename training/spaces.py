"""Search spaces: the parameter types, the unit-cube encoding and Sobol sampling.

Each family defines its own :class:`Space` in its module
(:mod:`hyperprior.training.families`); :data:`SPACES` and :func:`get_space` read them
from the family registry. One module of about 800 lines, not split: the parameter
types, their encoding and :class:`Space` are one contract (what ``validate`` accepts,
``encode`` must place and ``decode`` must give back), best read together.

A *config* is the estimator's own keyword arguments for the tuned parameters, so
``lightgbm.LGBMClassifier(**config)`` just works. Fixed arguments that are not
hyperparameters (``verbose``, ``n_jobs``, ``random_state``, ``max_iter`` of the linear
models...) are added by the family when it builds the estimator, never stored in a
config.

Parameters are typed:

- :class:`Float` and :class:`Int`: a sampling box ``[low, high]``, linear or log scale.
  The box is where :meth:`Space.sample` draws from; the *valid* range (what
  :meth:`Space.validate` accepts) is wider and is the library's own, so a library
  default may lie outside the box (LightGBM's ``reg_alpha=0``).
- :class:`Categorical`: a tuple of choices (str, int, float, bool or ``None``), matched
  by type as well as value, so ``1`` (one feature) and ``1.0`` (all features) stay
  different choices of ``max_features``.

Any parameter may be *conditional*: ``condition=("parent", (allowed values,))`` makes
it active only when the (categorical) parent is active and takes one of those values.
A parameter may also apply to some tasks only (``tasks=("regression",)``). Inactive
parameters are **omitted** from configs (the library would ignore them, or refuse
them: scikit-learn rejects ``max_samples`` without ``bootstrap``).

Encoding into the unit cube (one dimension per parameter, :attr:`Space.dim_names`;
the same dimensions for every task of a family, so one surrogate per family):

- Float/Int: ``(v - low) / (high - low)``, on ``log`` for log-scaled parameters, then
  clipped to ``[0, 1]`` (so out-of-box values, e.g. ``reg_alpha=0``, land on the
  nearest face). ``None`` (where valid, e.g. ``max_samples``) encodes as the value it
  means for the library (``none_means``).
- Categorical with ``k`` choices: ``index / (k - 1)``, one dimension, choices listed in
  a meaningful order where there is one (``max_depth`` from shallow to unlimited).
  Decoding cuts ``[0, 1]`` into ``k`` equal bins, so Sobol points pick every choice
  equally often and ``decode(encode(c)) == c``.
- Inactive parameters (condition not met, other task, or missing): :data:`INACTIVE`
  (0.5). The parent's own dimension tells a tree model that the child is off, and a
  mid-box value never looks like an extreme setting.

Decoding rounds floats to :data:`SIGNIFICANT_DIGITS` significant digits (readable
configs, and ``decode(encode(decode(u))) == decode(u)`` exactly), rounds ints to the
nearest integer (``batch_size`` to a power of two), and clips everything to the box.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from hyperprior.vocabulary import CLASSIFICATION_TASKS, TASKS

__all__ = [
    "INACTIVE",
    "SIGNIFICANT_DIGITS",
    "SPACES",
    "TASKS",
    "Categorical",
    "Float",
    "Int",
    "Param",
    "Space",
    "UnknownFamilyError",
    "check_task",
    "get_space",
    "is_classification",
]

CLASSIFICATION = CLASSIFICATION_TASKS

INACTIVE = 0.5
"""Unit-cube value of an inactive parameter (see the module docstring)."""

SIGNIFICANT_DIGITS = 6
"""Decoded floats are rounded to this many significant digits."""

_MISSING: Any = object()


class UnknownFamilyError(KeyError, ValueError):
    """A family name that is not built in; both a ``KeyError`` and a ``ValueError``."""

    def __str__(self) -> str:
        # KeyError would print the repr of the message, quotes and all.
        return str(self.args[0]) if self.args else ""


def check_task(task: str) -> str:
    """Return ``task`` if it is one of :data:`TASKS`, else raise ``ValueError``."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    return task


def is_classification(task: str) -> bool:
    """Whether ``task`` is ``binary`` or ``multiclass``."""
    return check_task(task) in CLASSIFICATION


# ---------------------------------------------------------------------------- params


def _choice_key(value: Any) -> tuple[str, Any]:
    """A hashable key that keeps ``True``, ``1`` and ``1.0`` apart."""
    if value is None:
        return ("none", None)
    if isinstance(value, bool | np.bool_):
        return ("bool", bool(value))
    if isinstance(value, int | np.integer):
        return ("int", int(value))
    if isinstance(value, float | np.floating):
        return ("float", float(value))
    if isinstance(value, str):
        return ("str", value)
    raise TypeError(f"unsupported choice type {type(value).__name__}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


@dataclass(frozen=True)
class Param:
    """Fields shared by every parameter type.

    Attributes:
        name: The estimator keyword argument.
        default: The library's default (used to fill a missing key), unless
            ``task_defaults`` has one for the task.
        task_defaults: Per-task defaults, where the library's differs by task
            (``max_features`` of a random forest).
        condition: ``(parent, allowed values)``: active only when the categorical
            ``parent`` is active and takes one of the values.
        tasks: Tasks the parameter applies to; ``None`` for all.
        doc: One line for the docs and ``GET /v1/families``.
    """

    name: str
    default: Any = field(default=None, kw_only=True)
    task_defaults: Mapping[str, Any] = field(default_factory=dict, kw_only=True, compare=False)
    condition: tuple[str, tuple[Any, ...]] | None = field(default=None, kw_only=True)
    tasks: tuple[str, ...] | None = field(default=None, kw_only=True)
    doc: str = field(default="", kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "task_defaults", MappingProxyType(dict(self.task_defaults)))
        if self.condition is not None:
            parent, allowed = self.condition
            if not isinstance(parent, str) or not isinstance(allowed, tuple) or not allowed:
                raise ValueError(
                    f"{self.name}: condition must be (parent name, non-empty tuple of values)"
                )
        if self.tasks is not None:
            for task in self.tasks:
                check_task(task)

    def applies_to(self, task: str | None) -> bool:
        """Whether the parameter exists for ``task`` (``None``: any task)."""
        return task is None or self.tasks is None or task in self.tasks

    def default_for(self, task: str | None) -> Any:
        """The library default for ``task`` (raises if it depends on an unknown task)."""
        if not self.task_defaults:
            return self.default
        if task is None:
            values = {_choice_key(v) for v in self.task_defaults.values()}
            if len(values) > 1:
                raise ValueError(f"{self.name}: the default depends on the task; pass task=")
            return next(iter(self.task_defaults.values()))
        return self.task_defaults.get(task, self.default)

    # Subclasses implement the four methods below.
    def check(self, value: Any) -> Any:  # pragma: no cover - abstract
        """Return the canonical form of a valid value, or raise ``ValueError``."""
        raise NotImplementedError

    def to_unit(self, values: Sequence[Any]) -> np.ndarray:  # pragma: no cover - abstract
        """Encode present values (no missing ones) into ``[0, 1]``."""
        raise NotImplementedError

    def from_unit(self, u: np.ndarray) -> list[Any]:  # pragma: no cover - abstract
        """Decode unit values into valid in-box values (plain Python objects)."""
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        """JSON description of the parameter."""
        out: dict[str, Any] = {"name": self.name, "type": type(self).__name__.lower()}
        out["default"] = self.default
        if self.task_defaults:
            out["task_defaults"] = dict(self.task_defaults)
        if self.condition is not None:
            out["condition"] = {"parent": self.condition[0], "values": list(self.condition[1])}
        if self.tasks is not None:
            out["tasks"] = list(self.tasks)
        if self.doc:
            out["doc"] = self.doc
        return out


@dataclass(frozen=True)
class _Numeric(Param):
    low: float = field(default=0.0, kw_only=True)
    high: float = field(default=1.0, kw_only=True)
    log: bool = field(default=False, kw_only=True)
    minimum: float | None = field(default=None, kw_only=True)
    maximum: float | None = field(default=None, kw_only=True)
    exclusive_minimum: bool = field(default=False, kw_only=True)
    none_means: float | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(f"{self.name}: need finite low < high, got {self.low}, {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"{self.name}: a log-scaled box needs low > 0")
        # Precomputed so that encode_many is a handful of numpy ops per parameter.
        lo, hi = (math.log(self.low), math.log(self.high)) if self.log else (self.low, self.high)
        object.__setattr__(self, "_lo", lo)
        object.__setattr__(self, "_span", hi - lo)

    def _check_range(self, value: float, raw: Any) -> None:
        # Messages quote the value as given, not its float conversion.
        if not math.isfinite(value):
            raise ValueError(f"{self.name}={raw!r} is not finite")
        if self.minimum is not None:
            if value < self.minimum or (self.exclusive_minimum and value == self.minimum):
                op = ">" if self.exclusive_minimum else ">="
                raise ValueError(f"{self.name}={raw!r} must be {op} {self.minimum:g}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"{self.name}={raw!r} must be <= {self.maximum:g}")

    def to_unit(self, values: Sequence[Any]) -> np.ndarray:
        nm = self.none_means
        try:
            arr = np.array([nm if v is None else v for v in values], dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{self.name}: non-numeric value in {list(values)[:5]!r}") from exc
        return self.to_unit_array(arr)

    def to_unit_array(self, arr: np.ndarray) -> np.ndarray:
        """:meth:`to_unit` of a numeric array (``None`` already replaced)."""
        arr = np.asarray(arr, dtype=np.float64)
        if self.log:
            # Values <= 0 (reg_alpha=0) lie below any log box: they clip to 0.
            with np.errstate(divide="ignore", invalid="ignore"):
                arr = np.log(np.where(arr > 0, arr, self.low))
        unit = (arr - self._lo) / self._span  # type: ignore[attr-defined]
        # Same as clip(nan_to_num(unit)): +-inf clip to the faces either way.
        unit = np.clip(unit, 0.0, 1.0)
        unit[np.isnan(unit)] = INACTIVE
        return unit

    def from_unit(self, u: np.ndarray) -> list[Any]:
        return self.from_unit_array(u).tolist()

    def from_unit_array(self, u: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        """:meth:`from_unit` as an array (float64 or int64), before ``tolist``."""
        raise NotImplementedError

    def _from_unit_float(self, u: np.ndarray) -> np.ndarray:
        x = self._lo + np.clip(u, 0.0, 1.0) * self._span  # type: ignore[attr-defined]
        return np.exp(x) if self.log else x

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out.update(low=self.low, high=self.high, log=self.log)
        if self.minimum is not None:
            out["minimum"] = self.minimum
            out["exclusive_minimum"] = self.exclusive_minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        if self.none_means is not None:
            out["none_means"] = self.none_means
        return out


def _round_significant(x: np.ndarray, digits: int) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        mag = np.floor(np.log10(np.abs(x)))
        mag = np.where(np.isfinite(mag), mag, 0.0)
        factor = 10.0 ** (digits - 1 - mag)
        out = np.round(x * factor) / factor
    # Subnormal inputs overflow the factor; they are as good as zero anyway.
    return np.where(np.isfinite(out), out, 0.0)


@dataclass(frozen=True, init=False)
class Float(_Numeric):
    """A float parameter.

    Args:
        name: Keyword argument.
        low: Lower end of the sampling box.
        high: Upper end of the sampling box.
        log: Sample and encode on a log scale.
        default: Library default (may lie outside the box).
        minimum: Smallest valid value (``None``: unbounded).
        maximum: Largest valid value (``None``: unbounded).
        exclusive_minimum: ``minimum`` itself is invalid (a learning rate of 0).
        none_means: Allow ``None`` and encode it as this value (``max_samples=None``
            is all rows, 1.0).
        **kwargs: ``task_defaults``, ``condition``, ``tasks``, ``doc`` of :class:`Param`.
    """

    def __init__(
        self,
        name: str,
        low: float,
        high: float,
        log: bool = False,
        *,
        default: Any = None,
        minimum: float | None = None,
        maximum: float | None = None,
        exclusive_minimum: bool = False,
        none_means: float | None = None,
        task_defaults: Mapping[str, Any] | None = None,
        condition: tuple[str, tuple[Any, ...]] | None = None,
        tasks: tuple[str, ...] | None = None,
        doc: str = "",
    ) -> None:
        _init_fields(self, locals())

    def check(self, value: Any) -> float | None:
        if value is None and self.none_means is not None:
            return None
        if not _is_number(value):
            raise ValueError(f"{self.name}={value!r} must be a number")
        out = float(value)
        self._check_range(out, value)
        return out

    def from_unit_array(self, u: np.ndarray) -> np.ndarray:
        x = _round_significant(self._from_unit_float(u), SIGNIFICANT_DIGITS)
        return np.clip(x, self.low, self.high)


@dataclass(frozen=True, init=False)
class Int(_Numeric):
    """An integer parameter; ``power_of_two`` decodes to the nearest power of two.

    Args: as :class:`Float`, plus ``power_of_two``.
    """

    power_of_two: bool = field(default=False, kw_only=True)

    def __init__(
        self,
        name: str,
        low: int,
        high: int,
        log: bool = False,
        *,
        default: Any = None,
        minimum: float | None = None,
        maximum: float | None = None,
        exclusive_minimum: bool = False,
        none_means: float | None = None,
        power_of_two: bool = False,
        task_defaults: Mapping[str, Any] | None = None,
        condition: tuple[str, tuple[Any, ...]] | None = None,
        tasks: tuple[str, ...] | None = None,
        doc: str = "",
    ) -> None:
        _init_fields(self, locals())

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.power_of_two and not (
            _is_pow2(int(self.low)) and _is_pow2(int(self.high)) and self.log
        ):
            raise ValueError(f"{self.name}: power_of_two needs a log box between powers of two")

    def check(self, value: Any) -> int | None:
        if value is None and self.none_means is not None:
            return None
        # JSON from other tools may carry 100.0 for 100; anything fractional is an error.
        if not _is_number(value) or not float(value).is_integer():
            raise ValueError(f"{self.name}={value!r} must be an integer")
        out = int(value)
        self._check_range(float(out), value)
        return out

    def from_unit_array(self, u: np.ndarray) -> np.ndarray:
        x = self._from_unit_float(u)
        if self.power_of_two:
            x = 2.0 ** np.round(np.log2(x))
        return np.clip(np.round(x), self.low, self.high).astype(np.int64)

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        if self.power_of_two:
            out["power_of_two"] = True
        return out


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


@dataclass(frozen=True, init=False)
class Categorical(Param):
    """A categorical parameter, encoded as ``index / (k - 1)`` in one dimension.

    Args:
        name: Keyword argument.
        choices: The values, in the order the encoding uses (put ordinal choices in
            order). Matched by type and value.
        default: Library default; must be one of the choices.
        **kwargs: ``task_defaults``, ``condition``, ``tasks``, ``doc`` of :class:`Param`.
    """

    choices: tuple[Any, ...] = field(default=(), kw_only=True)

    def __init__(
        self,
        name: str,
        choices: Sequence[Any],
        *,
        default: Any = None,
        task_defaults: Mapping[str, Any] | None = None,
        condition: tuple[str, tuple[Any, ...]] | None = None,
        tasks: tuple[str, ...] | None = None,
        doc: str = "",
    ) -> None:
        _init_fields(self, {**locals(), "choices": tuple(choices)})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.choices:
            raise ValueError(f"{self.name}: needs at least one choice")
        keys = [_choice_key(c) for c in self.choices]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{self.name}: duplicate choices {self.choices!r}")
        object.__setattr__(self, "_index", {k: i for i, k in enumerate(keys)})
        # Keyed by (exact type, value): one dict lookup per value on the hot path of
        # encode_many; numpy scalars and other subclasses take the slow path.
        object.__setattr__(self, "_fast", {(type(c), c): i for i, c in enumerate(self.choices)})

    def index_of(self, value: Any) -> int:
        """Index of ``value`` among the choices, or -1 if it is not one."""
        try:
            return self._index.get(_choice_key(value), -1)  # type: ignore[attr-defined]
        except TypeError:
            return -1

    def check(self, value: Any) -> Any:
        i = self.index_of(value)
        if i < 0:
            raise ValueError(f"{self.name}={value!r} must be one of {list(self.choices)!r}")
        return self.choices[i]

    def indices(self, values: Sequence[Any]) -> np.ndarray:
        """Choice indices of present values; raises ``ValueError`` for a non-choice."""
        fast = self._fast  # type: ignore[attr-defined]
        try:
            found = [fast.get((v.__class__, v), -1) for v in values]
        except TypeError:  # an unhashable value: let the slow path name it
            found = [-1] * len(values)
        idx = np.array(found, dtype=np.int64)
        for i in np.flatnonzero(idx < 0).tolist():
            idx[i] = self.index_of(values[i])
            if idx[i] < 0:
                raise ValueError(f"{self.name}={values[i]!r} must be one of {list(self.choices)!r}")
        return idx

    def to_unit(self, values: Sequence[Any]) -> np.ndarray:
        k = len(self.choices)
        idx = self.indices(values)
        return idx / (k - 1) if k > 1 else np.zeros(len(idx))

    def unit_to_index(self, u: np.ndarray) -> np.ndarray:
        """Equal bins of ``[0, 1]``, one per choice."""
        k = len(self.choices)
        return np.minimum(np.floor(np.clip(u, 0.0, 1.0) * k), k - 1).astype(np.int64)

    def from_unit(self, u: np.ndarray) -> list[Any]:
        choices = self.choices
        # tolist: indexing a tuple with Python ints beats iterating numpy ints.
        return [choices[i] for i in self.unit_to_index(u).tolist()]

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out["choices"] = list(self.choices)
        return out


def _init_fields(obj: Param, values: Mapping[str, Any]) -> None:
    # Explicit __init__s give readable positional signatures (Float(name, low, high,
    # log)) while the dataclass machinery keeps eq, repr and frozenness.
    for f in obj.__dataclass_fields__.values():
        if f.name in values:
            value = values[f.name]
            if f.name == "task_defaults" and value is None:
                value = {}
            object.__setattr__(obj, f.name, value)
    obj.__post_init__()


# ---------------------------------------------------------------------------- space


@dataclass(frozen=True)
class Space:
    """The search space of one family.

    Attributes:
        family: Family name (``lightgbm``...).
        params: Parameters in dimension order; a conditional parameter comes after its
            parent.
        description: One line for the docs.
        notes: What the family adds when building, and other design notes.
    """

    family: str
    params: tuple[Param, ...]
    description: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.family}: duplicate parameter names {names}")
        by_name: dict[str, Param] = {}
        for p in self.params:
            if p.condition is not None:
                parent = by_name.get(p.condition[0])
                if not isinstance(parent, Categorical):
                    raise ValueError(
                        f"{self.family}.{p.name}: condition parent {p.condition[0]!r} must be "
                        "an earlier categorical parameter"
                    )
                for v in p.condition[1]:
                    parent.check(v)
            by_name[p.name] = p
        object.__setattr__(self, "_by_name", MappingProxyType(by_name))
        # Every task's default must itself be a valid config.
        for task in self.tasks:
            self.validate({}, task)

    # -- structure -------------------------------------------------------------------

    @property
    def dim_names(self) -> tuple[str, ...]:
        """Names of the encoding's dimensions (one per parameter), in order."""
        return tuple(p.name for p in self.params)

    @property
    def tasks(self) -> tuple[str, ...]:
        """Tasks the family supports (all of :data:`TASKS`)."""
        return TASKS

    @property
    def task_dependent(self) -> bool:
        """Whether some parameter exists for some tasks only."""
        return any(p.tasks is not None for p in self.params)

    def param(self, name: str) -> Param:
        """The parameter called ``name`` (``KeyError`` if there is none)."""
        try:
            return self._by_name[name]  # type: ignore[attr-defined]
        except KeyError:
            raise KeyError(f"{self.family} has no parameter {name!r}") from None

    def params_for(self, task: str) -> tuple[Param, ...]:
        """The parameters that exist for ``task`` (active or conditional)."""
        check_task(task)
        return tuple(p for p in self.params if p.applies_to(task))

    # -- configs ---------------------------------------------------------------------

    def default(self, task: str) -> dict[str, Any]:
        """The library's own default config for ``task`` (inactive keys omitted)."""
        return self.validate({}, check_task(task))

    def validate(self, config: Mapping[str, Any], task: str | None = None) -> dict[str, Any]:
        """Check a config and complete it with library defaults.

        Args:
            config: Keyword arguments; missing keys take the library default.
            task: The task; needed to fill defaults that depend on it (and to reject
                parameters of other tasks).

        Returns:
            A new dict in parameter order: values in canonical form (``100.0`` for an
            int parameter becomes ``100``), inactive parameters dropped because the
            library ignores or rejects them.

        Raises:
            ValueError: naming every unknown key and every invalid value.
        """
        if task is not None:
            check_task(task)
        if not isinstance(config, Mapping):
            raise ValueError(f"a config must be a mapping, got {type(config).__name__}")
        errors: list[str] = []
        known = {p.name for p in self.params if p.applies_to(task)}
        unknown = [k for k in config if k not in known]
        if unknown:
            hint = f" for task {task!r}" if task is not None else ""
            errors.append(
                f"unknown parameter(s) {sorted(map(str, unknown))}{hint}; "
                f"{self.family} accepts {sorted(known)}"
            )
        out: dict[str, Any] = {}
        for p in self.params:
            if not p.applies_to(task) or not self._condition_met(p, out):
                continue
            if p.name in config:
                value = config[p.name]
            else:
                try:
                    value = p.default_for(task)
                except ValueError as exc:
                    errors.append(str(exc))
                    continue
            try:
                out[p.name] = p.check(value)
            except ValueError as exc:
                errors.append(str(exc))
                # Keep the raw value so children's conditions still see the parent.
                out[p.name] = value
        if errors:
            raise ValueError(f"invalid {self.family} config: " + "; ".join(errors))
        return out

    def _condition_met(self, p: Param, config: Mapping[str, Any]) -> bool:
        if p.condition is None:
            return True
        parent, allowed = p.condition
        if parent not in config:
            return False
        key = _safe_key(config[parent])
        return key is not None and key in {_choice_key(v) for v in allowed}

    # -- sampling and encoding -------------------------------------------------------

    def sample(self, n: int, seed: int, task: str) -> list[dict[str, Any]]:
        """``n`` configs from a scrambled Sobol sequence over the box, decoded.

        The first ``n`` points of ``2**ceil(log2 n)`` are used; the same seed gives
        the same configs.
        """
        check_task(task)
        if n <= 0:
            return []
        from scipy.stats import qmc

        d = len(self.params)
        try:
            engine = qmc.Sobol(d, scramble=True, rng=seed)
        except TypeError:  # SciPy < 1.15 names it seed
            engine = qmc.Sobol(d, scramble=True, seed=seed)
        u = engine.random_base2(max(0, math.ceil(math.log2(n))))[:n]
        return self.decode_many(u, task)

    def decode(self, u: Sequence[float] | np.ndarray, task: str | None = None) -> dict[str, Any]:
        """A unit-cube point back to a valid config (see :meth:`decode_many`)."""
        arr = np.asarray(u, dtype=np.float64).reshape(1, -1)
        return self.decode_many(arr, task)[0]

    def decode_many(self, u: np.ndarray, task: str | None = None) -> list[dict[str, Any]]:
        """Unit-cube points (``n x dim``) to valid configs.

        Args:
            u: Points; values outside ``[0, 1]`` are clipped.
            task: Needed when the family has task-specific parameters (``linear``).

        Returns:
            One config per row; inactive dimensions are ignored.
        """
        u = np.asarray(u, dtype=np.float64)
        if u.ndim != 2 or u.shape[1] != len(self.params):
            raise ValueError(
                f"{self.family}: expected shape (n, {len(self.params)}), got {u.shape}"
            )
        if task is None and self.task_dependent:
            raise ValueError(f"{self.family}: the space depends on the task; pass task=")
        if task is not None:
            check_task(task)
        n = u.shape[0]
        configs: list[dict[str, Any]] = [{} for _ in range(n)]
        for j, p in enumerate(self.params):
            if not p.applies_to(task):
                continue
            values = p.from_unit(u[:, j])
            if p.condition is None:
                for cfg, v in zip(configs, values, strict=True):
                    cfg[p.name] = v
            else:
                for cfg, v in zip(configs, values, strict=True):
                    if self._condition_met(p, cfg):
                        cfg[p.name] = v
        return configs

    def encode(self, config: Mapping[str, Any]) -> np.ndarray:
        """One config to a point of the unit cube (see :meth:`encode_many`)."""
        return self.encode_many([config])[0]

    def encode_many(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Configs to an ``n x dim`` float array in ``[0, 1]``, vectorised per parameter.

        Configs are expected to be valid (from :meth:`validate`, :meth:`decode` or
        :meth:`default`); missing and inactive parameters encode as :data:`INACTIVE`.
        Unknown keys are ignored here (use :meth:`validate` to reject them).

        Raises:
            ValueError: a value of the wrong type or a categorical value that is not a
                choice.
        """
        n = len(configs)
        out = np.full((n, len(self.params)), INACTIVE, dtype=np.float64)
        if n == 0:
            return out
        # Per categorical parameter: choice index per config, -1 where inactive.
        cat_index: dict[str, np.ndarray] = {}
        for j, p in enumerate(self.params):
            raw = [c.get(p.name, _MISSING) for c in configs]
            present = np.fromiter((v is not _MISSING for v in raw), dtype=bool, count=n)
            if p.condition is not None:
                parent_idx = cat_index[p.condition[0]]
                parent = self._by_name[p.condition[0]]  # type: ignore[attr-defined]
                allowed = [parent.index_of(v) for v in p.condition[1]]
                present &= np.isin(parent_idx, allowed)
            rows = np.flatnonzero(present)
            values = [raw[i] for i in rows] if len(rows) < n else raw
            encode_column(p, values, rows, out, j, cat_index)
        return out

    # -- description -----------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready description, as served by ``GET /v1/families``."""
        return {
            "family": self.family,
            "description": self.description,
            "notes": self.notes,
            "tasks": list(self.tasks),
            "params": [p.to_json() for p in self.params],
            "dim_names": list(self.dim_names),
            "defaults": {task: self.default(task) for task in self.tasks},
            "encoding": {
                "numeric": "(v - low) / (high - low), on log(v) for log params, clipped to [0, 1]",
                "categorical": "index / (k - 1), choices in the listed order",
                "inactive": INACTIVE,
            },
        }


def encode_column(
    p: Param,
    values: Sequence[Any],
    rows: np.ndarray,
    out: np.ndarray,
    j: int,
    cat_index: dict[str, np.ndarray],
) -> None:
    """Write column ``j`` of ``out`` (unit cube) for the ``rows`` where ``p`` is present.

    ``values`` are ``p``'s raw values on those rows; a categorical's choice indices (-1
    where absent) go to ``cat_index`` for the conditions of its children.
    """
    if isinstance(p, Categorical):
        idx = np.full(out.shape[0], -1, dtype=np.int64)
        if len(rows):
            idx[rows] = p.indices(values)
            k = len(p.choices)
            out[rows, j] = idx[rows] / (k - 1) if k > 1 else 0.0
        cat_index[p.name] = idx
    elif len(rows):
        out[rows, j] = p.to_unit(values)


def _safe_key(value: Any) -> tuple[str, Any] | None:
    try:
        return _choice_key(value)
    except TypeError:
        return None


# ---------------------------------------------------------------------------- registry

# Each family's space is defined in its module (hyperprior.training.families.<name>);
# these read the registry, imported on first use because the family modules import
# this one.


class _RegistrySpaces(Mapping[str, Space]):
    """A live, read-only view: family name -> space, in registry order."""

    def __getitem__(self, family: str) -> Space:
        from hyperprior.training.families import FAMILIES

        return FAMILIES[family].space

    def __iter__(self) -> Iterator[str]:
        from hyperprior.training.families import FAMILIES

        return iter(FAMILIES)

    def __len__(self) -> int:
        from hyperprior.training.families import FAMILIES

        return len(FAMILIES)

    def __repr__(self) -> str:
        return f"SPACES({', '.join(self)})"


SPACES: Mapping[str, Space] = _RegistrySpaces()
"""The registered families' spaces, by family name (read from ``FAMILIES``)."""

# The built-in spaces under their old names, read from their modules on first access.
_BY_CONSTANT = {
    "LIGHTGBM": "lightgbm",
    "RANDOM_FOREST": "random_forest",
    "LINEAR": "linear",
    "KERAS_MLP": "keras_mlp",
}


def __getattr__(name: str) -> Any:
    if name in _BY_CONSTANT:
        return get_space(_BY_CONSTANT[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_space(family: str) -> Space:
    """The space of a registered family.

    Raises:
        UnknownFamilyError: (a ``KeyError`` and ``ValueError``) listing the known ones.
    """
    from hyperprior.training.families import get_family

    return get_family(family).space
