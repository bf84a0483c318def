"""Compiled trees (hyperprior.training.compiled) predict what LightGBM predicts.

Every shipped surrogate, all compiled slices (the screen, all outputs and the SHAP
contributions), within 1e-9; the cache is hit on a second load and a bad entry in it is
refused; the answers of the golden requests are the same with compiled trees; ``off``
never imports tl2cgen.
Compiles run on the compiler's background thread; the tests wait on ``wait()`` (an
event), never on a clock.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

pytest.importorskip("tl2cgen")
pytest.importorskip("treelite")

import test_suggest_golden as golden  # noqa: E402  (tests/training is on sys.path)

from hyperprior.training.compiled import (  # noqa: E402
    TOLERANCE,
    ZERO_THRESHOLD,
    CompiledPredictor,
    CompiledTrees,
    CompiledTreesError,
    ShapPredictor,
    TreeCompiler,
    TreeSlice,
    find_c_compiler,
    probe_matrix,
    shap_tables,
)
from hyperprior.training.seed import SEED_DIR  # noqa: E402
from hyperprior.training.suggest import PolicySettings  # noqa: E402
from hyperprior.training.surrogate import (  # noqa: E402
    Surrogate,
    from_text,
    load,
    member_text,
    sha256_text,
)

pytestmark = pytest.mark.skipif(find_c_compiler() is None, reason="no C compiler")

SHIPPED = sorted(p.stem for p in (SEED_DIR / "surrogates").glob("*.txt"))
FRACTION = PolicySettings().screen_fraction
LOGGER = "hyperprior.training.compiled"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the module: each slice is compiled once, then found."""
    return tmp_path_factory.mktemp("compiled")


def attach(surrogate: Surrogate, cache: Path) -> CompiledTrees:
    """Compiled trees for ``surrogate`` from ``cache``, once every slice is ready or failed."""
    trees = surrogate.use_compiled(TreeCompiler("auto", cache), screen_fractions=(FRACTION,))
    assert trees is not None
    assert trees.wait()
    return trees


def compiled_surrogate(family: str, cache: Path) -> Surrogate:
    surrogate = load(SEED_DIR / "surrogates", family)
    attach(surrogate, cache)
    return surrogate


def inputs(surrogate: Surrogate, n: int = 300) -> np.ndarray:
    """Random rows on the features' scales, some missing, and the probe matrix."""
    rng = np.random.default_rng(1)
    X = rng.normal(0.0, 2.0, (n, len(surrogate.feature_names)))
    X[rng.random(X.shape) < 0.1] = np.nan
    return np.vstack([X, probe_matrix(surrogate.text, X.shape[1])])


def screen_slice(surrogate: Surrogate) -> str:
    return f"screen-r{max(1, round(surrogate.params.n_rounds * FRACTION))}"


def all_slices(surrogate: Surrogate) -> tuple[str, ...]:
    return tuple(sorted(["outputs", screen_slice(surrogate), "shap"]))


@pytest.mark.parametrize("family", SHIPPED)
def test_compiled_slices_equal_lightgbm_on_every_shipped_surrogate(
    family: str, cache: Path
) -> None:
    surrogate = compiled_surrogate(family, cache)
    assert surrogate.compiled is not None
    assert surrogate.compiled.ready == all_slices(surrogate)
    plain = load(SEED_DIR / "surrogates", family)  # LightGBM alone
    assert plain.compiled is None
    X = inputs(surrogate)
    members, beats = surrogate.predict_outputs(X)
    want_members, want_beats = plain.predict_outputs(X)
    assert np.max(np.abs(members - want_members)) <= TOLERANCE
    assert (beats is None) == (want_beats is None)
    if beats is not None:
        assert np.max(np.abs(beats - want_beats)) <= TOLERANCE
    screened = surrogate.screen(X, fraction=FRACTION)
    assert np.max(np.abs(screened - plain.screen(X, fraction=FRACTION))) <= TOLERANCE
    contributions = surrogate.contributions(X)
    assert np.max(np.abs(contributions - plain.contributions(X))) <= TOLERANCE
    # Called, not just loaded: the compiled slice answers these shapes.
    assert surrogate.compiled.predict("outputs", X) is not None
    assert surrogate.compiled.predict(screen_slice(surrogate), X) is not None
    assert surrogate.compiled.predict("shap", X) is not None


def test_a_second_load_is_a_cache_hit(
    cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    compiled_surrogate("lightgbm", cache)

    def no_compiling(*args: object) -> Path:
        raise AssertionError("compiled again instead of loading the cached library")

    monkeypatch.setattr(TreeCompiler, "_build", no_compiling)
    monkeypatch.setattr(TreeCompiler, "_build_shap", no_compiling)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        surrogate = compiled_surrogate("lightgbm", cache)
    assert surrogate.compiled is not None
    assert surrogate.compiled.ready == all_slices(surrogate)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def _copy_cache(cache: Path, target: Path) -> Path:
    compiled_surrogate("lightgbm", cache)  # the entries exist
    shutil.copytree(cache, target)
    return target


def _outputs_entry(cache: Path, surrogate: Surrogate) -> Path:
    (entry,) = cache.glob(f"{surrogate.sha256}-outputs-*.json")
    return entry


def _attach(
    surrogate: Surrogate, cache: Path, caplog: pytest.LogCaptureFixture
) -> tuple[CompiledTrees, list[str]]:
    """Compiled trees from ``cache``, once ready, and the warnings logged on the way."""
    with caplog.at_level(logging.INFO, logger=LOGGER):
        trees = attach(surrogate, cache)
    return trees, [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_corrupted_library_is_refused_and_compiled_anew(
    cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mine = _copy_cache(cache, tmp_path / "cache")
    surrogate = load(SEED_DIR / "surrogates", "lightgbm")
    entry = _outputs_entry(mine, surrogate)
    library = mine / json.loads(entry.read_text())["library"]
    data = bytearray(library.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: the recorded sha256 no longer matches
    library.write_bytes(bytes(data))
    trees, warnings = _attach(surrogate, mine, caplog)
    assert any("rejected the cached outputs" in m and "sha256" in m for m in warnings), warnings
    assert "outputs" in trees.ready  # compiled anew, verified
    X = inputs(surrogate)
    plain = load(SEED_DIR / "surrogates", "lightgbm")
    assert np.max(np.abs(surrogate.predict_members(X) - plain.predict_members(X))) <= TOLERANCE


def test_a_foreign_library_fails_the_probe_and_lightgbm_predicts(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    mine = _copy_cache(cache, tmp_path / "cache")
    surrogate = load(SEED_DIR / "surrogates", "lightgbm")
    entry = _outputs_entry(mine, surrogate)
    meta = json.loads(entry.read_text())
    # Another slice's library under this entry, its sha256 recorded as if it were ours:
    # only the probe can tell.
    (screen_entry,) = mine.glob(f"{surrogate.sha256}-{screen_slice(surrogate)}-*.json")
    foreign = mine / json.loads(screen_entry.read_text())["library"]
    (mine / meta["library"]).unlink()
    fake = f"{meta['key']}-{'0' * 16}.so"
    shutil.copyfile(foreign, mine / fake)
    meta["library"] = fake
    meta["library_sha256"] = json.loads(screen_entry.read_text())["library_sha256"]
    entry.write_text(json.dumps(meta))

    def cannot_compile(*args: object) -> Path:
        raise CompiledTreesError("no compiling in this test")

    monkeypatch.setattr(TreeCompiler, "_build", cannot_compile)
    trees, warnings = _attach(surrogate, mine, caplog)
    assert any("rejected the cached outputs" in m and "LightGBM" in m for m in warnings), warnings
    assert not entry.exists()  # the bad entry is gone
    assert trees.ready == (screen_slice(surrogate), "shap")
    assert trees.predict("outputs", np.zeros((2, len(surrogate.feature_names)))) is None
    X = inputs(surrogate)
    plain = load(SEED_DIR / "surrogates", "lightgbm")
    np.testing.assert_array_equal(surrogate.predict_members(X), plain.predict_members(X))


def test_rows_whose_low_word_reads_as_missing_go_to_the_fallback(cache: Path) -> None:
    # tl2cgen's union takes a double whose low 32 bits are all ones for missing.
    surrogate = compiled_surrogate("lightgbm", cache)
    assert surrogate.compiled is not None
    real = surrogate.compiled.find("outputs")
    assert real is not None
    width = len(surrogate.feature_names)
    sentinel = CompiledPredictor(
        real._library, width, real.path, lambda X: np.full((len(X), surrogate.n_outputs), 7.0)
    )
    X = np.zeros((4, width))
    X[1, 3] = np.nextafter(0.25, -np.inf)  # 0x3FCFFFFFFFFFFFFF
    X[3, 0] = np.nextafter(0.75, -np.inf)
    out = sentinel.predict(X)
    assert (out[[1, 3]] == 7.0).all()
    assert not (out[[0, 2]] == 7.0).any()
    # And through the real fallback, LightGBM's answer.
    plain = load(SEED_DIR / "surrogates", "lightgbm")
    np.testing.assert_allclose(
        surrogate.predict_members(X), plain.predict_members(X), rtol=0, atol=TOLERANCE
    )


def test_concurrent_predictions_are_the_single_threaded_ones(cache: Path) -> None:
    surrogate = compiled_surrogate("lightgbm", cache)
    X = inputs(surrogate)
    want = surrogate.predict_members(X)
    want_screen = surrogate.screen(X, fraction=FRACTION)
    want_contributions = surrogate.contributions(X[:50])
    bad: list[str] = []

    def work() -> None:
        for _ in range(20):
            if not np.array_equal(surrogate.predict_members(X), want):
                bad.append("members")
            if not np.array_equal(surrogate.screen(X, fraction=FRACTION), want_screen):
                bad.append("screen")
            if not np.array_equal(surrogate.contributions(X[:50]), want_contributions):
                bad.append("contributions")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad


def test_golden_answers_are_the_same_with_compiled_trees(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded: list[Surrogate] = []

    def compiled_from_text(text: str, meta: dict[str, object], **kw: object) -> Surrogate:
        surrogate = from_text(text, meta, **kw)  # type: ignore[arg-type]
        trees = attach(surrogate, cache)
        assert trees.ready == all_slices(surrogate)
        loaded.append(surrogate)
        return surrogate

    explained: list[tuple[Surrogate, np.ndarray]] = []
    contributions = Surrogate.contributions

    def recorded(self: Surrogate, X: np.ndarray) -> np.ndarray:
        explained.append((self, np.array(X)))
        return contributions(self, X)

    monkeypatch.setattr(golden, "from_text", compiled_from_text)
    monkeypatch.setattr(Surrogate, "contributions", recorded)
    want = json.loads(golden.ANSWERS.read_text(encoding="utf-8"))
    fresh = golden.answers()
    assert loaded
    assert [g["request"] for g in want] == [f["request"] for f in fresh]
    for w, got in zip(want, fresh, strict=True):
        assert got["answer"] == w["answer"], w["request"]
    # The rows the requests explained (real design-matrix rows), against LightGBM's.
    assert explained
    for surrogate, X in explained:
        plain = from_text(surrogate.text, surrogate.metadata)
        assert surrogate.compiled is not None
        assert surrogate.compiled.find("shap") is not None
        got, lightgbm = contributions(surrogate, X), contributions(plain, X)
        assert np.max(np.abs(got - lightgbm), initial=0.0) <= TOLERANCE


# ------------------------------------------------------------------------ SHAP slice


def trained_text(seed: int, *, categorical: bool = False, **params: object) -> str:
    """A small LightGBM regression on rows with missing values and exact zeros."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(600, 6))
    X[rng.random(X.shape) < 0.15] = np.nan
    X[rng.random(X.shape) < 0.1] = 0.0
    y = 2 * np.nan_to_num(X[:, 0]) + np.where(np.isnan(X[:, 1]), 1.0, X[:, 1] ** 2)
    y += np.where(X[:, 2] == 0.0, -1.0, 0.0) + rng.normal(0.0, 0.1, len(y))
    if categorical:
        X[:, 3] = rng.integers(0, 6, len(X))
        y += np.where(X[:, 3] % 2 == 0, 1.5, 0.0)
    lgb_params = {"objective": "regression", "num_leaves": 15, "min_data_in_leaf": 5}
    lgb_params |= {"verbose": -1, "seed": seed, **params}
    data = lgb.Dataset(X, y, categorical_feature=[3] if categorical else "auto")
    return lgb.train(lgb_params, data, 30).model_to_string()


def shap_spec(text: str) -> TreeSlice:
    booster = lgb.Booster(model_str=text)
    return TreeSlice(
        "shap",
        text=lambda: text,
        reference=lambda X: booster.predict(X, pred_contrib=True, num_threads=1),
        n_trees=booster.num_trees(),
        kind="shap",
    )


def missing_types(text: str) -> set[int]:
    lines = re.findall(r"^decision_type=(.*)$", text, flags=re.M)
    return {(int(v) >> 2) & 3 for line in lines for v in line.split()}


@pytest.mark.parametrize(
    ("params", "missing"),
    [
        ({}, 2),  # NaN is missing
        ({"zero_as_missing": True}, 1),  # zero is missing
        ({"use_missing": False}, 0),  # nothing is: NaN reads as zero
        ({"max_depth": 3, "num_leaves": 8, "learning_rate": 0.3}, 2),
    ],
)
def test_shap_equals_lightgbm_on_random_models_and_inputs(
    params: dict[str, object], missing: int, cache: Path
) -> None:
    text = trained_text(3, **params)
    assert missing in missing_types(text)
    predictor = TreeCompiler("auto", cache).load_or_build(sha256_text(text), shap_spec(text), 6)
    assert isinstance(predictor, ShapPredictor)
    rng = np.random.default_rng(4)
    X = rng.normal(0.0, 2.0, (500, 6))
    X[rng.random(X.shape) < 0.15] = np.nan
    X[rng.random(X.shape) < 0.05] = 0.0
    odd = rng.random(X.shape) < 0.03
    X[odd] = rng.choice(
        [ZERO_THRESHOLD, -ZERO_THRESHOLD, 1e-300, -0.0, np.inf, -np.inf], size=int(odd.sum())
    )
    X[:3] = np.nan  # whole rows missing
    X = np.vstack([X, probe_matrix(text, 6)])
    want = lgb.Booster(model_str=text).predict(X, pred_contrib=True)
    got = predictor.predict(X)
    assert got.shape == want.shape == (len(X), 7)
    assert np.max(np.abs(got - want)) <= TOLERANCE
    assert predictor.predict(np.empty((0, 6))).shape == (0, 7)


@pytest.mark.parametrize("n", [1, 5, 8, 9, 17])
def test_shap_of_a_block_of_rows_is_each_rows_own(n: int, cache: Path) -> None:
    # The routine walks each tree once for up to 8 rows; a row's answer must not depend on
    # the rows it shares the walk with.
    text = trained_text(6)
    predictor = TreeCompiler("auto", cache).load_or_build(sha256_text(text), shap_spec(text), 6)
    assert isinstance(predictor, ShapPredictor)
    rng = np.random.default_rng(n)
    X = rng.normal(0.0, 2.0, (n + 3, 6))
    X[rng.random(X.shape) < 0.15] = np.nan
    X[rng.random(X.shape) < 0.05] = 0.0
    X[: n // 2, :3] = X[0, :3]  # rows that agree on some splits, as a request's rows do
    for start in (0, 3):
        block = X[start : start + n]
        alone = np.vstack([predictor.predict(row[None, :]) for row in block])
        together = predictor.predict(block)
        assert together.shape == alone.shape == (n, 7)
        assert np.max(np.abs(together - alone)) <= TOLERANCE
        want = lgb.Booster(model_str=text).predict(block, pred_contrib=True)
        assert np.max(np.abs(together - want)) <= TOLERANCE


def test_trees_with_categorical_splits_are_left_to_lightgbm(tmp_path: Path) -> None:
    text = trained_text(5, categorical=True)
    assert re.search(r"^num_cat=[1-9]", text, flags=re.M)
    with pytest.raises(CompiledTreesError, match="categorical"):
        TreeCompiler("auto", tmp_path).load_or_build(sha256_text(text), shap_spec(text), 6)
    assert not list(tmp_path.glob("shap-*"))  # refused before the cache was touched


def test_shap_tables_refuse_what_is_not_a_tree() -> None:
    surrogate = load(SEED_DIR / "surrogates", "lightgbm")
    text = member_text(surrogate.text, 0, surrogate.n_outputs)
    n_features = len(surrogate.feature_names)
    tables = shap_tables(text, n_features)
    assert len(tables.num_leaves) == lgb.Booster(model_str=text).num_trees()
    assert tables.max_depth > 0
    with pytest.raises(CompiledTreesError, match="outside 0..9"):
        shap_tables(text, 10)
    looped = re.sub(r"^left_child=(-?\d+) ", r"left_child=0 ", text, count=1, flags=re.M)
    with pytest.raises(CompiledTreesError, match="not a tree"):
        shap_tables(looped, n_features)


def test_a_corrupted_shap_library_is_refused_and_compiled_anew(
    cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mine = _copy_cache(cache, tmp_path / "cache")
    surrogate = load(SEED_DIR / "surrogates", "lightgbm")
    (entry,) = mine.glob("shap-*.json")
    library = mine / json.loads(entry.read_text())["library"]
    data = bytearray(library.read_bytes())
    data[len(data) // 2] ^= 0xFF
    library.write_bytes(bytes(data))
    trees, warnings = _attach(surrogate, mine, caplog)
    assert any("rejected the cached shap" in m and "sha256" in m for m in warnings), warnings
    assert "shap" in trees.ready  # compiled anew, verified
    X = inputs(surrogate)
    plain = load(SEED_DIR / "surrogates", "lightgbm")
    assert np.max(np.abs(surrogate.contributions(X) - plain.contributions(X))) <= TOLERANCE


def test_a_shap_library_that_fails_the_probe_leaves_lightgbm_explaining(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    mine = _copy_cache(cache, tmp_path / "cache")
    honest = Surrogate._shap_slice

    def off_by_a_little(self: Surrogate) -> TreeSlice:
        spec = honest(self)
        return dataclasses.replace(spec, reference=lambda X: spec.reference(X) + 1e-6)

    monkeypatch.setattr(Surrogate, "_shap_slice", off_by_a_little)
    surrogate = load(SEED_DIR / "surrogates", "lightgbm")
    trees, warnings = _attach(surrogate, mine, caplog)
    assert any("differs from LightGBM" in m for m in warnings), warnings
    assert "shap" not in trees.ready
    X = inputs(surrogate)
    plain = load(SEED_DIR / "surrogates", "lightgbm")
    np.testing.assert_array_equal(surrogate.contributions(X), plain.contributions(X))


def test_compiling_writes_nothing_to_the_process_stderr(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # treelite's version note and tl2cgen's log lines go to the debug log, not stderr.
    surrogate = load(SEED_DIR / "surrogates", "lightgbm")
    rounds = max(1, round(surrogate.params.n_rounds * FRACTION))
    predictor = TreeCompiler("auto", tmp_path).load_or_build(
        surrogate.sha256, surrogate._screen_slice(rounds), len(surrogate.feature_names)
    )
    X = inputs(surrogate)
    np.testing.assert_allclose(
        predictor.predict(X)[:, 0], surrogate.screen(X, fraction=FRACTION), rtol=0, atol=TOLERANCE
    )
    out, err = capfd.readouterr()
    assert "Treelite" not in out + err
    assert "tl2cgen" not in out + err


def test_a_failing_code_generator_is_a_compile_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hyperprior.training.compiled as compiled

    monkeypatch.setattr(compiled, "_GENERATE_C", "import sys; sys.exit('no C today')")
    surrogate = load(SEED_DIR / "surrogates", "lightgbm")
    with pytest.raises(CompiledTreesError, match="generating C failed.*no C today"):
        TreeCompiler("auto", tmp_path).load_or_build(
            surrogate.sha256, surrogate._screen_slice(1), len(surrogate.feature_names)
        )


def test_off_never_imports_tl2cgen() -> None:
    code = """
import sys
from hyperprior.service.app import create_app
from hyperprior.service.settings import Settings
from hyperprior.training.seed import SEED_DIR
from hyperprior.training.surrogate import load

compiler = Settings().tree_compiler()
assert compiler.mode == "off", compiler.mode
surrogate = load(SEED_DIR / "surrogates", "lightgbm")
assert surrogate.use_compiled(compiler) is None
import numpy as np
X = np.zeros((3, len(surrogate.feature_names)))
surrogate.screen(X, fraction=0.5)
surrogate.predict_outputs(X)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tl2cgen", "treelite"))
assert not loaded, loaded
"""
    env = {**os.environ, "HYPERPRIOR_COMPILED_TREES": "off"}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown compiled-trees mode"):
        TreeCompiler("always")
