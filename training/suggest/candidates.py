"""Candidates as arrays: the unit-cube encoding of a pool without building every config.

A Sobol pool's configs are built only when read (most candidates are only scored),
and blocks are chained and indexed without building them.
"""

from __future__ import annotations

import bisect
import itertools
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from hyperprior.training.features import ConfigBlock
from hyperprior.training.spaces import _round_significant


class _LazyConfigs(Sequence[dict[str, Any]]):
    """The configs of unit-cube points, built on first access from decoded columns.

    :func:`_encode_points` decodes every parameter as a column to encode it; a config
    is the row's present values in parameter order, as ``Space.decode_many`` builds it
    (tested equal). A pool holds 2,048 points but a request reads about twenty configs
    (the head of the ranking): building them from the columns costs nothing, where
    decoding them again (``decode_many``) cost more than scoring them.
    """

    def __init__(self, columns: Sequence[tuple[str, Any, list[bool] | None]], n: int) -> None:
        self._columns = columns
        self._done: list[dict[str, Any] | None] = [None] * n

    def __len__(self) -> int:
        return len(self._done)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        config = self._done[i]
        if config is None:
            # Pools are shared between threads without a lock: two threads building
            # the same row write equal dicts.
            config = {
                name: values[i].item() if isinstance(values, np.ndarray) else values[i]
                for name, values, present in self._columns
                if present is None or present[i]
            }
            self._done[i] = config
        return config


class _Taken(Sequence[dict[str, Any]]):
    """The configs at ``index`` of another sequence, read through (nothing decoded)."""

    def __init__(self, parent: Sequence[dict[str, Any]], index: np.ndarray) -> None:
        self._parent = parent
        self._index = index.tolist()

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self._parent[j] for j in self._index[i]]
        return self._parent[self._index[i]]


class _Chain(Sequence[dict[str, Any]]):
    """Configs of several blocks end to end, without decoding the lazy ones."""

    def __init__(self, parts: Sequence[Sequence[dict[str, Any]]]) -> None:
        self._parts = list(parts)
        self._ends = list(itertools.accumulate(len(p) for p in self._parts))

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def _locate(self, i: int) -> tuple[int, int]:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = bisect.bisect_right(self._ends, i)
        return k, i - (self._ends[k - 1] if k else 0)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        k, j = self._locate(int(i))
        return self._parts[k][j]


def _take(block: ConfigBlock, index: np.ndarray) -> ConfigBlock:
    """``block.take(index)`` that leaves lazily built configs unbuilt."""
    idx = np.asarray(index, dtype=np.int64)
    return ConfigBlock(
        configs=cast(Any, _Taken(block.configs, idx)),
        unit=block.unit[idx],
        raw={k: v[idx] for k, v in block.raw.items()},
    )


def _chain(blocks: Sequence[ConfigBlock]) -> ConfigBlock:
    """``ConfigBlock.concat`` that leaves lazily decoded configs undecoded."""
    keys = set(blocks[0].raw)
    return ConfigBlock(
        configs=cast(Any, _Chain([b.configs for b in blocks])),
        unit=np.vstack([b.unit for b in blocks]),
        raw={k: np.concatenate([b.raw[k] for b in blocks]) for k in keys},
    )


@dataclass(frozen=True)
class _NumericPlan:
    """The numeric (Float and Int) parameters of a space for one task, as column arrays."""

    columns: np.ndarray  # their dimensions in the unit cube
    lo: np.ndarray
    span: np.ndarray
    low: np.ndarray
    high: np.ndarray
    log: np.ndarray  # positions (in ``columns``) of log-scaled ones
    floats: np.ndarray  # positions of Float parameters
    ints: np.ndarray  # positions of Int parameters
    pow2: np.ndarray  # positions of power-of-two Int parameters
    where: dict[str, tuple[int, bool]]  # parameter name -> (position, whether an Int)


# (id of the space, task) -> (the space, weakly, and its plan): a space built later (a
# declared family) may get a dead one's id, so the entry holds only if it is the same space.
_PLANS: dict[tuple[int, str], tuple[weakref.ref[Any], _NumericPlan]] = {}


def _numeric_plan(space: Any, task: str) -> _NumericPlan:
    key = (id(space), task)
    hit = _PLANS.get(key)
    if hit is not None and hit[0]() is space:
        return hit[1]
    from hyperprior.training.spaces import Float, Int

    chosen = [
        (j, p) for j, p in enumerate(space.params) if p.applies_to(task) and type(p) in (Float, Int)
    ]

    def positions(test: Any) -> np.ndarray:
        return np.array([k for k, (_, p) in enumerate(chosen) if test(p)], dtype=np.int64)

    plan = _NumericPlan(
        columns=np.array([j for j, _ in chosen], dtype=np.int64),
        lo=np.array([p._lo for _, p in chosen], dtype=np.float64),
        span=np.array([p._span for _, p in chosen], dtype=np.float64),
        low=np.array([p.low for _, p in chosen], dtype=np.float64),
        high=np.array([p.high for _, p in chosen], dtype=np.float64),
        log=positions(lambda p: p.log),
        floats=positions(lambda p: type(p) is Float),
        ints=positions(lambda p: type(p) is Int),
        pow2=positions(lambda p: type(p) is Int and p.power_of_two),
        where={p.name: (k, type(p) is Int) for k, (_, p) in enumerate(chosen)},
    )
    _PLANS[key] = (weakref.ref(space), plan)
    return plan


def _decode_numeric(plan: _NumericPlan, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every numeric parameter's decoded values and their unit encoding, as matrices.

    Column by column the arithmetic of ``from_unit_array`` then ``to_unit_array`` (the
    same numpy functions, element by element; tested equal bit for bit), in a dozen
    calls instead of a dozen per parameter. Int columns hold whole numbers as float64.
    """
    from hyperprior.training.spaces import INACTIVE, SIGNIFICANT_DIGITS

    x = plan.lo + np.clip(u[:, plan.columns], 0.0, 1.0) * plan.span
    if len(plan.log):
        x[:, plan.log] = np.exp(x[:, plan.log])
    if len(plan.floats):
        f = plan.floats
        x[:, f] = np.clip(
            _round_significant(x[:, f], SIGNIFICANT_DIGITS), plan.low[f], plan.high[f]
        )
    if len(plan.ints):
        i = plan.ints
        if len(plan.pow2):
            x[:, plan.pow2] = 2.0 ** np.round(np.log2(x[:, plan.pow2]))
        x[:, i] = np.clip(np.round(x[:, i]), plan.low[i], plan.high[i])
    a = x.copy()
    if len(plan.log):
        g = plan.log
        a[:, g] = np.log(np.where(a[:, g] > 0, a[:, g], plan.low[g]))
    unit = np.clip((a - plan.lo) / plan.span, 0.0, 1.0)
    unit[np.isnan(unit)] = INACTIVE
    return x, unit


def _encode_points(family: str, space: Any, u: np.ndarray, task: str) -> ConfigBlock:
    """``encode_configs(family, space.decode_many(u, task))`` with configs built lazily.

    The unit encoding and raw interaction inputs are computed from the decoded values,
    with the arithmetic of ``from_unit`` / ``to_unit`` / ``indices`` / raw values but on
    arrays, never through Python lists (tested equal, bit for bit).
    """
    from hyperprior.training.features import interactions_for, raw_values
    from hyperprior.training.spaces import INACTIVE, Categorical, encode_column

    n = len(u)
    unit = np.full((n, len(space.params)), INACTIVE, dtype=np.float64)
    values: dict[str, Any] = {}
    present: dict[str, np.ndarray] = {}
    cat_index: dict[str, np.ndarray] = {}
    plan = _numeric_plan(space, task)
    num_x, num_unit = _decode_numeric(plan, u)
    # (name, decoded values, where present; None: on every row) of each active parameter.
    columns: list[tuple[str, Any, list[bool] | None]] = []
    for j, p in enumerate(space.params):
        decoded: Any
        if not p.applies_to(task):
            if isinstance(p, Categorical):
                cat_index[p.name] = np.full(n, -1, dtype=np.int64)
            values[p.name] = [None] * n
            present[p.name] = np.zeros(n, dtype=bool)
            continue
        mask: np.ndarray | None = None
        if p.condition is not None:
            parent, allowed = p.condition
            parent_param = space.param(parent)
            parent_idx = cat_index[parent]
            mask = present[parent].copy()
            hit = np.zeros(n, dtype=bool)
            for v in allowed:
                hit |= parent_idx == parent_param.index_of(v)
            mask &= hit
        rows = None if mask is None else np.flatnonzero(mask)
        numeric = plan.where.get(p.name)
        if numeric is not None:
            # Numbers stay an array (float64 or int64); configs read them with .item().
            k, is_int = numeric
            decoded = num_x[:, k].astype(np.int64) if is_int else num_x[:, k].copy()
            if rows is None:
                unit[:, j] = num_unit[:, k]
            elif len(rows):
                unit[rows, j] = num_unit[rows, k]
        elif isinstance(p, Categorical):
            # The decoded choice's index is the bin itself (choices are distinct).
            idx = p.unit_to_index(u[:, j])
            choices = p.choices
            decoded = [choices[i] for i in idx.tolist()]
            n_choices = len(choices)
            if rows is not None:
                full = np.full(n, -1, dtype=np.int64)
                full[rows] = idx[rows]
                idx = full
                if len(rows):
                    unit[rows, j] = idx[rows] / (n_choices - 1) if n_choices > 1 else 0.0
            elif n:
                unit[:, j] = idx / (n_choices - 1) if n_choices > 1 else 0.0
            cat_index[p.name] = idx
        else:  # another Param type: the list round trip of decode_many / encode_many
            decoded = p.from_unit(u[:, j])
            where = np.arange(n) if rows is None else rows
            encode_column(p, [decoded[i] for i in where.tolist()], where, unit, j, cat_index)
        columns.append((p.name, decoded, None if mask is None else mask.tolist()))
        values[p.name] = decoded
        present[p.name] = np.ones(n, dtype=bool) if mask is None else mask
    needed = sorted({q for ix in interactions_for(family) for q in ix.params})
    by_name = {p.name: p for p in space.params}
    raw = {}
    for name in needed:
        param = by_name.get(name, name)
        if name not in values:
            raw[name] = raw_values(param, [None] * n, np.zeros(n, dtype=bool))
            continue
        raw[name] = raw_values(param, values[name], present[name])
    configs = _LazyConfigs(columns, n)
    # ConfigBlock holds a tuple; the lazy sequence stands in for it (len, index, iterate).
    return ConfigBlock(configs=cast(Any, configs), unit=unit, raw=raw)
