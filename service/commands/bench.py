"""``hyperprior bench``: the project's benchmarks, from the source tree.

``hyperprior bench quality`` runs ``benchmarks/quality.py`` (leave-one-dataset-out
suggestion quality against the library default, FLAML, a k-NN portfolio, random
search and Optuna's optimisers) with the same options. The benchmarks ship with the
repository, not with the installed package, so the command looks for them next to the
``service`` package (an editable install or a checkout) and says so when they are not
there.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from hyperprior.service.commands import CommandError

_BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` from the source tree."""
    path = _BENCHMARKS / f"{name}.py"
    if not path.exists():
        raise CommandError(
            f"{path} not found: the benchmarks ship with the source tree; run from a checkout "
            "(pip install -e '.[bench]')"
        )
    module_name = f"benchmarks.{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    # The benchmarks import each other as `benchmarks.*`: the repository root must be
    # importable, as when they run as scripts.
    root = str(_BENCHMARKS.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a file that exists loads
        raise CommandError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def register(subparsers: Any) -> None:
    """Add ``hyperprior bench`` and its benchmarks."""
    parser = subparsers.add_parser(
        "bench",
        help="run a benchmark of the source tree (quality)",
        description="Run one of the project's benchmarks (they live in benchmarks/).",
    )
    benches = parser.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    quality = benches.add_parser(
        "quality",
        help="leave-one-dataset-out suggestion quality against the field (issue 6)",
        description=(
            "Leave one dataset out: for each held-out dataset, every method (library default, "
            "hyperprior zero-shot and refined, FLAML zero-shot, k-NN portfolio, random search, "
            "Optuna grid/GP/TPE/NSGA-II) chooses configs without its runs; each choice is "
            "measured with the history's CV protocol; normalised regret, ranks, win rate "
            "against the default and trials-equivalents are written as JSON, markdown and "
            "PNG. Resumable: re-running skips finished measurements."
        ),
    )
    if _BENCHMARKS.joinpath("quality.py").exists():
        _load("quality").add_arguments(quality)
    else:
        quality.add_argument("args", nargs=argparse.REMAINDER)
    quality.set_defaults(handler=run_quality)


def run_quality(args: argparse.Namespace) -> int:
    """Run ``benchmarks/quality.py`` with the parsed options."""
    module = _load("quality")
    try:
        return int(module.run_from_args(args))
    except ValueError as exc:
        raise CommandError(str(exc)) from None
