"""Time of ``compute_metafeatures`` on generated frames of 50 mixed columns.

Each frame has 40 numeric columns (normal, log-normal and integer-valued; 5% of the
cells missing) and 10 categorical ones (cardinality 2 to 1,000, 2% missing), with a
target that depends on a few of them, for each task. For every size and task the
meta-features (landmarkers included, as the SDK and the upload path compute them) are
timed ``--repeats`` times in one process after a warm-up call; the table shows the
median and the slowest. Prints a table and writes ``benchmarks/results/metafeatures.json``
and ``metafeatures.png``.

Usage::

    python benchmarks/metafeatures.py
    python benchmarks/metafeatures.py --rows 1000,100000 --repeats 5

Target: under 2 s for a 100,000 x 50 frame (every task, slowest repeat).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hyperprior.vocabulary import TASKS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TARGET_ROWS = 100_000
TARGET_SECONDS = 2.0


def make_frame(n_rows: int, task: str, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """A 50-column frame (40 numeric, 10 categorical, some missing) and its target."""
    rng = np.random.default_rng([seed, n_rows, TASKS.index(task)])
    columns: dict[str, Any] = {}
    for j in range(40):
        if j % 3 == 0:
            col = rng.normal(0.0, 1.0, n_rows)
        elif j % 3 == 1:
            col = rng.lognormal(0.0, 1.0, n_rows)
        else:
            col = rng.integers(0, 20, n_rows).astype(np.float64)
        col[rng.random(n_rows) < 0.05] = np.nan
        columns[f"x{j}"] = col
    for j, card in enumerate((2, 3, 5, 8, 12, 20, 50, 100, 300, 1000)):
        values = rng.integers(0, card, n_rows).astype(str).astype(object)
        values[rng.random(n_rows) < 0.02] = None
        columns[f"c{j}"] = values
    X = pd.DataFrame(columns)
    signal = np.nan_to_num(X["x0"].to_numpy()) + 0.5 * np.log1p(np.nan_to_num(X["x1"].to_numpy()))
    signal += (X["c1"] == "1").to_numpy() - 0.3 * np.nan_to_num(X["x2"].to_numpy()) / 10
    signal += rng.normal(0.0, 1.0, n_rows)
    if task == "regression":
        y = pd.Series(signal, name="y")
    elif task == "binary":
        y = pd.Series(np.where(signal > np.median(signal), "yes", "no"), name="y")
    else:
        y = pd.Series(np.digitize(signal, np.quantile(signal, [0.2, 0.45, 0.7, 0.9])), name="y")
    return X, y


def bench(n_rows: int, task: str, repeats: int) -> dict[str, Any]:
    """Time ``compute_metafeatures`` on one generated frame."""
    from hyperprior.training.metafeatures import compute_metafeatures

    X, y = make_frame(n_rows, task)
    compute_metafeatures(X, y, task, seed=0)  # warm-up: imports, first-call costs
    times = []
    for r in range(repeats):
        started = time.perf_counter()
        meta = compute_metafeatures(X, y, task, seed=r)
        times.append(time.perf_counter() - started)
    return {
        "rows": n_rows,
        "columns": X.shape[1],
        "task": task,
        "repeats": repeats,
        "median_s": round(statistics.median(times), 4),
        "max_s": round(max(times), 4),
        "n_metafeatures": len(meta),
    }


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Seconds against rows, one line per task, with the target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for task in TASKS:
        rows = [r for r in results if r["task"] == task]
        if rows:
            ax.plot([r["rows"] for r in rows], [r["max_s"] for r in rows], marker="o", label=task)
    ax.scatter([TARGET_ROWS], [TARGET_SECONDS], color="red", marker="x", zorder=3)
    ax.axhline(TARGET_SECONDS, color="red", linestyle="--", label=f"target at {TARGET_ROWS:,} rows")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("rows (50 columns)")
    ax.set_ylabel("seconds, slowest repeat")
    ax.set_title("compute_metafeatures, landmarkers included")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the results; exit 1 if the target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="1000,10000,100000,300000")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.rows.split(",")]
    tasks = [t for t in args.tasks.split(",") if t]
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown or args.repeats < 1:
        parser.error(f"unknown task(s) {unknown}" if unknown else "--repeats must be >= 1")

    load_before = os.getloadavg()[0]
    results = [bench(n, task, args.repeats) for n in sizes for task in tasks]
    at_target = [r for r in results if r["rows"] == TARGET_ROWS]
    met = all(r["max_s"] < TARGET_SECONDS for r in at_target) if at_target else None

    print(f"{'rows':>8} {'task':<11} {'median s':>9} {'max s':>8} {'features':>9}")
    for r in results:
        print(
            f"{r['rows']:>8} {r['task']:<11} {r['median_s']:>9.3f} {r['max_s']:>8.3f} "
            f"{r['n_metafeatures']:>9}"
        )
    if met is not None:
        print(f"target: < {TARGET_SECONDS} s at {TARGET_ROWS:,} x 50: {'met' if met else 'MISSED'}")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "metafeatures",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average_1m": {"before": load_before, "after": os.getloadavg()[0]},
        "target": {"rows": TARGET_ROWS, "columns": 50, "seconds": TARGET_SECONDS, "met": met},
        "results": results,
    }
    (args.output_dir / "metafeatures.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(results, args.output_dir / "metafeatures.png")
    print(
        f"wrote {args.output_dir / 'metafeatures.json'} and {args.output_dir / 'metafeatures.png'}"
    )
    return 0 if met in (None, True) else 1


if __name__ == "__main__":
    sys.exit(main())
