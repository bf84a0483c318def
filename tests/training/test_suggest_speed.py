"""The shortcuts the suggestion policy takes for speed give what the long way gives.

Speed itself is measured by ``benchmarks/suggest.py``, never asserted here.
"""

from __future__ import annotations

import numpy as np
import pytest

from hyperprior.training.features import ConfigBlock, _raw_value, encode_configs, raw_values
from hyperprior.training.spaces import get_space
from hyperprior.training.suggest.candidates import _chain, _encode_points, _take

FAMILIES = ("lightgbm", "random_forest", "linear", "keras_mlp")
TASKS = ("binary", "multiclass", "regression")


def _points(family: str, seed: int) -> np.ndarray:
    d = len(get_space(family).params)
    rng = np.random.default_rng(seed)
    u = rng.random((400, d))
    u[:60] = rng.integers(0, 2, (60, d))  # the corners: inactive children, box ends
    return u


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("task", TASKS)
def test_encoding_points_equals_decoding_then_encoding(family: str, task: str) -> None:
    space = get_space(family)
    u = _points(family, 3)
    want = encode_configs(family, space.decode_many(u, task))
    got = _encode_points(family, space, u, task)
    np.testing.assert_array_equal(got.unit, want.unit)
    assert sorted(got.raw) == sorted(want.raw)
    for name in want.raw:
        np.testing.assert_array_equal(got.raw[name], want.raw[name], err_msg=name)
    # Built late, a few rows at a time, in any order: the same configs, keys in order.
    assert [list(got.configs[i].items()) for i in (399, 5, 7, -1)] == [
        list(want.configs[i].items()) for i in (399, 5, 7, -1)
    ]
    assert list(reversed(got.configs)) == list(reversed(want.configs))
    # Plain Python values (not numpy scalars), as decode_many gives them.
    for i in (0, 5, 399):
        assert [type(v) for v in got.configs[i].values()] == [
            type(v) for v in want.configs[i].values()
        ]


def test_chained_blocks_index_like_concatenated_ones() -> None:
    family, task = "lightgbm", "binary"
    space = get_space(family)
    u = _points(family, 4)
    eager = encode_configs(family, space.decode_many(u[:50], task))
    lazy = _encode_points(family, space, u[50:120], task)
    chained = _chain([eager, lazy])
    want = ConfigBlock.concat([eager, encode_configs(family, space.decode_many(u[50:120], task))])
    assert len(chained) == len(want) == 120
    np.testing.assert_array_equal(chained.unit, want.unit)
    assert [chained.configs[i] for i in (0, 49, 50, 60, 119)] == [
        want.configs[i] for i in (0, 49, 50, 60, 119)
    ]
    assert chained.configs[-1] == want.configs[-1]
    assert chained.configs[48:52] == list(want.configs[48:52])
    assert chained.take([119, 0]).configs == (want.configs[119], want.configs[0])


def test_taken_rows_index_like_take() -> None:
    family, task = "lightgbm", "binary"
    space = get_space(family)
    u = _points(family, 5)
    lazy = _encode_points(family, space, u, task)
    index = np.array([399, 0, 7, 7, 250])
    got = _take(lazy, index)
    want = encode_configs(family, space.decode_many(u, task)).take(index)
    np.testing.assert_array_equal(got.unit, want.unit)
    for name in want.raw:
        np.testing.assert_array_equal(got.raw[name], want.raw[name], err_msg=name)
    assert len(got) == len(want) == 5
    assert [got.configs[i] for i in range(-5, 5)] == [want.configs[i] for i in range(-5, 5)]
    assert got.configs[1:4] == list(want.configs[1:4])


def _raw_one_by_one(param: object, values: list[object], present: list[bool]) -> np.ndarray:
    """What ``raw_values`` stands for, value by value (the conventions of ConfigBlock)."""
    name = getattr(param, "name", param)
    none_means = getattr(param, "none_means", None)
    fill = np.nan
    if getattr(param, "condition", None) is not None:
        default = getattr(param, "default", None)
        value = _raw_value(none_means if default is None else default, str(name))
        fill = np.nan if value is None else value
    out = np.full(len(values), fill)
    for i, (value, p) in enumerate(zip(values, present, strict=True)):
        if p:
            value = none_means if value is None and none_means is not None else value
            raw = _raw_value(value, str(name))
            out[i] = np.nan if raw is None else raw
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_raw_values_in_one_go_equal_value_by_value(family: str) -> None:
    space = get_space(family)
    odd = [None, True, False, 0, 1.5, 3, "auto", "sqrt", float("nan"), -1, 10**20, [1, [2]]]
    for task in TASKS:
        if task not in space.tasks:
            continue
        configs = space.decode_many(_points(family, 6), task)
        for p in space.params:
            cases = [
                [c.get(p.name) for c in configs],
                [v for v in odd for _ in range(3)],
                [1, 2.5, True],
                [],
            ]
            for values in cases:
                present = [i % 3 != 1 for i in range(len(values))]
                got = raw_values(p, values, present)
                want = _raw_one_by_one(p, values, present)
                assert got.tobytes() == want.tobytes(), (p.name, values[:6])
            if hasattr(p, "from_unit_array"):
                # Decoded numbers given as an array, as _encode_points passes them.
                u = _points(family, 6)[:, space.params.index(p)]
                present = [i % 3 != 1 for i in range(len(u))]
                got = raw_values(p, p.from_unit_array(u), np.array(present))
                want = _raw_one_by_one(p, p.from_unit(u), present)
                assert got.tobytes() == want.tobytes(), p.name


@pytest.mark.parametrize("family", FAMILIES)
def test_numeric_to_unit_of_odd_values_as_before(family: str) -> None:
    """to_unit replaces NaN after clipping: the same as clip(nan_to_num(unit)), bit for bit."""
    for p in get_space(family).params:
        if not hasattr(p, "to_unit_array"):
            continue
        values = [p.low, p.high, 0, -0.0, -1, 1e300, float("inf"), -float("inf"), float("nan")]
        arr = np.array(values, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            if p.log:
                arr = np.log(np.where(arr > 0, arr, p.low))
            unit = (arr - p._lo) / p._span
            want = np.clip(np.nan_to_num(unit, nan=0.5), 0.0, 1.0)
        assert p.to_unit(values).tobytes() == want.tobytes(), p.name


def _diverse_row_by_row(
    order: np.ndarray, block: ConfigBlock, free: np.ndarray, n: int, min_distance: float
) -> list[int]:
    """The picks as first written: each candidate's distance to the picks, one at a time."""
    from hyperprior.vocabulary import canonical_json

    dims = free if free.any() else np.ones_like(free)
    unit = block.unit[:, dims]
    picked: list[int] = []
    seen: set[str] = set()
    skipped: list[int] = []
    position: dict[int, int] = {}
    for p, i in enumerate(order.tolist()):
        if picked:
            d = np.sqrt(((unit[picked] - unit[i]) ** 2).mean(axis=1)).min()
            if d < min_distance:
                skipped.append(i)
                position[i] = p
                continue
        text = canonical_json(block.configs[i])
        if text in seen:
            continue
        seen.add(text)
        picked.append(i)
        position[i] = p
        if len(picked) >= n:
            return picked
    for i in skipped:
        text = canonical_json(block.configs[i])
        if text not in seen:
            seen.add(text)
            picked.append(i)
            if len(picked) >= n:
                break
    return sorted(picked, key=position.__getitem__)


@pytest.mark.parametrize("family", FAMILIES)
def test_diverse_picks_equal_the_row_by_row_ones(family: str) -> None:
    from hyperprior.training.suggest.policy import _diverse

    space = get_space(family)
    rng = np.random.default_rng(8)
    for trial in range(30):
        u = rng.random((int(rng.integers(1, 120)), len(space.params)))
        # Clusters and exact duplicates, as refinement children make them.
        u[len(u) // 2 :] = u[: len(u) - len(u) // 2] + rng.normal(0, 0.03, u[len(u) // 2 :].shape)
        u = np.clip(u, 0, 1)
        u[-3:] = u[0]
        block = encode_configs(family, space.decode_many(u, "binary"))
        order = rng.permutation(len(u))
        free = rng.random(len(space.dim_names)) < 0.8
        for n, min_distance in ((1, 0.08), (5, 0.08), (12, 0.2), (50, 0.0)):
            assert _diverse(order, block, free, n, min_distance) == _diverse_row_by_row(
                order, block, free, n, min_distance
            ), (trial, n, min_distance)


def test_answer_copies_are_deep_and_equal() -> None:
    from hyperprior.training.suggest.policy import _copy_json

    class Tagged(dict):  # a dict subclass: marshal refuses it, the Python walk copies it
        pass

    values = [
        {"a": [1, 2.5, None, True, "x"], "b": {"c": (1, [2])}, "d": -0.0},
        {"n": np.float64(0.25), "nested": [{"k": np.int64(3)}]},
        Tagged(z=[1]),
    ]
    for value in values:
        copy = _copy_json(value)
        assert copy == value
        assert copy is not value
        assert [type(v) for v in copy.values()] == [type(v) for v in value.values()]
    copy = _copy_json(values[0])
    copy["a"].append(9)
    copy["b"]["c"][1].append(3)
    assert values[0] == {"a": [1, 2.5, None, True, "x"], "b": {"c": (1, [2])}, "d": -0.0}
    assert str(_copy_json(values[0])["d"]) == "-0.0"


@pytest.mark.parametrize("family", FAMILIES)
def test_remembered_transforms_give_the_interactions_computed_afresh(family: str) -> None:
    from hyperprior.training.features import design_matrix, interactions_for, landmarkers

    space = get_space(family)
    block = encode_configs(family, space.decode_many(_points(family, 9)[:80], "binary"))
    meta = {"n_rows": 3000.0, "n_features": 12.0, "n_classes": 2.0}
    meta.update({name: 0.7 for name in landmarkers()})
    X = design_matrix(family, block, meta, task="binary")
    ixs = interactions_for(family)
    # The same functions on a plain dict (nothing remembered) give the same columns.
    plain: dict[str, np.ndarray] = dict(block.raw)
    plain.update(rows=np.array([3000.0]), epoch_fraction=np.ones(1), features=np.array([12.0]))
    plain.update({name: np.array([0.7]) for name in landmarkers()})
    with np.errstate(divide="ignore", invalid="ignore"):
        for k, ix in enumerate(ixs):
            want = np.broadcast_to(np.asarray(ix.fn(plain), dtype=np.float64), (80,))
            want = np.where(np.isfinite(want), want, np.nan)
            got = X[:, X.shape[1] - len(ixs) + k]
            assert got.tobytes() == np.ascontiguousarray(want).tobytes(), ix.name
