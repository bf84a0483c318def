"""The shortcuts the suggestion policy takes for speed give what the long way gives.

Speed itself is measured by ``benchmarks/suggest.py``, never asserted here.
"""

from __future__ import annotations

import numpy as np
import pytest

from hyperprior.training.features import ConfigBlock, encode_configs
from hyperprior.training.spaces import get_space
from hyperprior.training.suggest.candidates import _chain, _encode_points, _prefetch

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
    # Decoded late, a few rows at a time, in any order: the same configs.
    _prefetch(got.configs, [399, 5, 7])
    assert got.configs[5] == want.configs[5]
    assert list(reversed(got.configs)) == list(reversed(want.configs))


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
    _prefetch(chained.configs, [0, 60, 119])
    assert [chained.configs[i] for i in (0, 49, 50, 60, 119)] == [
        want.configs[i] for i in (0, 49, 50, 60, 119)
    ]
    assert chained.configs[-1] == want.configs[-1]
    assert chained.configs[48:52] == list(want.configs[48:52])
    assert chained.take([119, 0]).configs == (want.configs[119], want.configs[0])
