"""Candidates as arrays: the unit-cube encoding of a pool without building every config.

A Sobol pool's configs are decoded only when read (most candidates are only scored),
and blocks are chained without decoding them.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, cast

import numpy as np

from hyperprior.training.features import ConfigBlock


class _LazyConfigs(Sequence[dict[str, Any]]):
    """The configs of unit-cube points, decoded on first access.

    A Sobol pool holds 2,048 points but a request reads about a hundred configs (those
    that pass the screen); decoding them all costs more than scoring them. Rows decode
    independently, so a row decoded late equals the one an eager decode gives.
    """

    def __init__(self, space: Any, u: np.ndarray, task: str) -> None:
        self._space = space
        self._u = u
        self._task = task
        self._done: list[dict[str, Any] | None] = [None] * len(u)

    def __len__(self) -> int:
        return len(self._done)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        config = self._done[i]
        if config is None:
            self.prefetch([i])
            config = self._done[i]
        return config

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.prefetch(range(len(self)))
        return iter(cast(list[dict[str, Any]], self._done))

    def prefetch(self, index: Iterable[int]) -> None:
        """Decode the rows at ``index`` in one batch.

        Pools are shared between threads without a lock: two threads decoding the same
        row write equal dicts.
        """
        missing = [int(i) for i in index if self._done[int(i)] is None]
        if missing:
            configs = self._space.decode_many(self._u[missing], self._task)
            for i, config in zip(missing, configs, strict=True):
                self._done[i] = config


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

    def prefetch(self, index: Iterable[int]) -> None:
        """Decode the rows at ``index`` of the lazy parts in one batch each."""
        wanted: dict[int, list[int]] = {}
        for i in index:
            k, j = self._locate(int(i))
            wanted.setdefault(k, []).append(j)
        for k, rows in wanted.items():
            _prefetch(self._parts[k], rows)


def _prefetch(configs: Sequence[dict[str, Any]], index: Iterable[int]) -> None:
    if isinstance(configs, _LazyConfigs | _Chain):
        configs.prefetch(index)


def _chain(blocks: Sequence[ConfigBlock]) -> ConfigBlock:
    """``ConfigBlock.concat`` that leaves lazily decoded configs undecoded."""
    keys = set(blocks[0].raw)
    return ConfigBlock(
        configs=cast(Any, _Chain([b.configs for b in blocks])),
        unit=np.vstack([b.unit for b in blocks]),
        raw={k: np.concatenate([b.raw[k] for b in blocks]) for k in keys},
    )


def _encode_points(family: str, space: Any, u: np.ndarray, task: str) -> ConfigBlock:
    """``encode_configs(family, space.decode_many(u, task))`` with configs decoded lazily.

    The unit encoding and raw interaction inputs are computed per parameter from the
    decoded values, through the same ``from_unit`` / ``to_unit`` / ``indices`` /
    ``_raw_column`` calls that decoding and encoding make (tested equal, bit for bit).
    """
    from hyperprior.training.features import _raw_column, interactions_for
    from hyperprior.training.spaces import INACTIVE, encode_column

    n = len(u)
    unit = np.full((n, len(space.params)), INACTIVE, dtype=np.float64)
    values: dict[str, list[Any]] = {}
    present: dict[str, np.ndarray] = {}
    cat_index: dict[str, np.ndarray] = {}
    for j, p in enumerate(space.params):
        if not p.applies_to(task):
            mask = np.zeros(n, dtype=bool)
            decoded: list[Any] = [None] * n
        else:
            decoded = p.from_unit(u[:, j])
            mask = np.ones(n, dtype=bool)
            if p.condition is not None:
                parent, allowed = p.condition
                parent_param = space.param(parent)
                parent_idx = cat_index[parent]
                mask = present[parent].copy()
                hit = np.zeros(n, dtype=bool)
                for v in allowed:
                    hit |= parent_idx == parent_param.index_of(v)
                mask &= hit
        rows = np.flatnonzero(mask)
        chosen = [decoded[i] for i in rows] if len(rows) < n else decoded
        encode_column(p, chosen, rows, unit, j, cat_index)
        values[p.name] = decoded
        present[p.name] = mask
    needed = sorted({q for ix in interactions_for(family) for q in ix.params})
    by_name = {p.name: p for p in space.params}
    raw = {}
    for name in needed:
        param = by_name.get(name, name)
        if name not in values:
            raw[name] = _raw_column([{}] * n, param)
            continue
        vals, mask = values[name], present[name]
        # One-key configs: _raw_column reads nothing else.
        raw[name] = _raw_column(
            [{name: v} if m else {} for v, m in zip(vals, mask.tolist(), strict=True)], param
        )
    configs = _LazyConfigs(space, u, task)
    # ConfigBlock holds a tuple; the lazy sequence stands in for it (len, index, iterate).
    return ConfigBlock(configs=cast(Any, configs), unit=unit, raw=raw)
