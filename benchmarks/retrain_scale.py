"""Retrain time and peak memory for 10k, 100k and 1M synthetic runs.

Each size runs in its own subprocess (so peak memory is that size's alone): it builds
a synthetic LightGBM history of that many runs (60 per dataset: the default and 47
Sobol configs at full fidelity, 12 of them again at fidelity 0.25; not timed), then
times the retrain pipeline on it: features and normalised target, grouped CV by
dataset, the fit on all runs, and the portfolio. With ``--store-max N`` the sizes up to
N also go through a real SQLite store: ingested (not timed), then the complete
``hyperprior.training.retrain.retrain`` is timed, reading the runs back included.

Peak memory is the largest resident set size above the one before the timed part,
sampled every 50 ms (LightGBM's C++ allocations included).

Prints a table and writes ``benchmarks/results/retrain_scale.json`` and
``retrain_scale.png``. Target: 1M runs in under 2 minutes.

Usage::

    python benchmarks/retrain_scale.py
    python benchmarks/retrain_scale.py --sizes 10000,100000 --store-max 100000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
FAMILY = "lightgbm"
RUNS_PER_DATASET = 60
TARGET_SECONDS_1M = 120.0


def _rss() -> int:
    """Resident set size of this process in bytes (Linux ``/proc``; else the peak so far)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class PeakRSS:
    """Samples this process's resident set size in a thread; ``peak`` in bytes."""

    def __init__(self, interval: float = 0.05) -> None:
        self.baseline = _rss()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._interval = interval
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, _rss())


def synthetic_frame(n_runs: int) -> Any:
    """A LightGBM history of about ``n_runs`` runs."""
    from hyperprior.training.synthetic_history import SyntheticHistory

    n_datasets = max(3, round(n_runs / RUNS_PER_DATASET))
    return SyntheticHistory(FAMILY, seed=0).frame(n_datasets, 48, n_reduced=12)


def one_size(n_runs: int, with_store: bool) -> dict[str, Any]:
    """Time one size in this process."""
    from hyperprior.training.features import build_training_set
    from hyperprior.training.suggest import Portfolio, with_portfolio
    from hyperprior.training.surrogate import (
        SurrogateParams,
        cross_validate,
        cv_subset,
        fit,
        grouped_folds,
    )

    t0 = time.perf_counter()
    frame = synthetic_frame(n_runs)
    generate_s = time.perf_counter() - t0
    params = SurrogateParams()
    out: dict[str, Any] = {
        "runs": len(frame),
        "datasets": int(frame["dataset_id"].nunique()),
        "generate_seconds": round(generate_s, 2),
        "cv_datasets": min(params.cv_max_datasets, int(frame["dataset_id"].nunique())),
        "params": params.to_dict(),
    }
    with PeakRSS() as mem:
        stages: dict[str, float] = {}
        t = time.perf_counter()
        ts = build_training_set(frame, FAMILY, normalisation=params.normalisation)
        stages["features"] = time.perf_counter() - t
        t = time.perf_counter()
        cv_ts = cv_subset(ts, params)
        report = cross_validate(cv_ts, params, folds=grouped_folds(cv_ts, params.cv_folds))
        stages["grouped_cv"] = time.perf_counter() - t
        t = time.perf_counter()
        surrogate = fit(ts, params, cv=report)
        stages["fit"] = time.perf_counter() - t
        t = time.perf_counter()
        surrogate = with_portfolio(surrogate, Portfolio.from_frame(frame, FAMILY))
        stages["portfolio"] = time.perf_counter() - t
    out["stages_seconds"] = {k: round(v, 2) for k, v in stages.items()}
    out["seconds"] = round(sum(stages.values()), 2)
    out["peak_memory_mb"] = round((mem.peak - mem.baseline) / 2**20, 1)
    out["model_text_mb"] = round(len(surrogate.text) / 2**20, 2)
    out["cv"] = {k: report.metrics.get(k) for k in ("regret_at_1", "ndcg_at_5", "spearman")}
    if with_store:
        out["store"] = _through_store(frame)
    return out


def _through_store(frame: Any) -> dict[str, Any]:
    from hyperprior.db import migrate
    from hyperprior.db.engine import make_engine
    from hyperprior.db.store import Store
    from hyperprior.training.retrain import retrain
    from hyperprior.training.synthetic_history import new_runs

    with tempfile.TemporaryDirectory(prefix="hp-bench-retrain-") as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        migrate.upgrade(url)
        store = Store(make_engine(url))
        t = time.perf_counter()
        for start in range(0, len(frame), 10_000):
            store.ingest_runs(new_runs(frame.iloc[start : start + 10_000]))
        ingest_s = time.perf_counter() - t
        t = time.perf_counter()
        store.runs_frame(family=FAMILY, status=None)
        read_s = time.perf_counter() - t
        with PeakRSS() as mem:
            t = time.perf_counter()
            result = retrain(store, FAMILY, force=True)
            total_s = time.perf_counter() - t
        return {
            "ingest_seconds": round(ingest_s, 1),
            "runs_frame_seconds": round(read_s, 2),
            "retrain_seconds": round(total_s, 2),
            "peak_memory_mb": round((mem.peak - mem.baseline) / 2**20, 1),
            "outcome": result.outcome,
        }


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Stacked time per stage and peak memory against the number of runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    labels = [f"{r['runs']:,}" for r in rows]
    bottom = [0.0] * len(rows)
    for stage in ("features", "grouped_cv", "fit", "portfolio"):
        values = [r["stages_seconds"][stage] for r in rows]
        left.bar(labels, values, bottom=bottom, label=stage)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    for i, r in enumerate(rows):
        left.text(i, r["seconds"], f"{r['seconds']:.1f} s", ha="center", va="bottom", fontsize=9)
    left.axhline(TARGET_SECONDS_1M, color="k", ls="--", lw=1, label="target for 1M")
    left.set_xlabel("runs")
    left.set_ylabel("seconds")
    left.set_title("retrain time (features + grouped CV + fit)")
    left.legend(fontsize=8)
    right.bar(labels, [r["peak_memory_mb"] for r in rows], color="C4")
    for i, r in enumerate(rows):
        right.text(
            i,
            r["peak_memory_mb"],
            f"{r['peak_memory_mb']:.0f} MB",
            ha="center",
            va="bottom",
            fontsize=9,
        )
    right.set_xlabel("runs")
    right.set_ylabel("MB above the resident set before retraining")
    right.set_title("peak memory")
    fig.suptitle(f"synthetic LightGBM histories, {os.cpu_count()} cores, num_threads=1", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run every size in a subprocess, then write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument(
        "--store-max",
        type=int,
        default=100_000,
        help="also time a full retrain through SQLite up to this size",
    )
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--with-store", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.one is not None:
        print(json.dumps(one_size(args.one, args.with_store)))
        return 0

    rows = []
    for size in (int(s) for s in args.sizes.split(",") if s.strip()):
        cmd = [sys.executable, __file__, "--one", str(size)]
        if size <= args.store_max:
            cmd.append("--with-store")
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            raise SystemExit(f"size {size} failed")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(
            f"{r['runs']:>9,} runs  {r['datasets']:>6,} datasets  {r['seconds']:7.1f} s  "
            f"peak {r['peak_memory_mb']:7.0f} MB  stages {r['stages_seconds']}"
            + (f"  via SQLite {r['store']['retrain_seconds']} s" if "store" in r else ""),
            flush=True,
        )
    report = {
        "benchmark": "retrain_scale",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "target_seconds_1m": TARGET_SECONDS_1M,
        "results": rows,
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "retrain_scale.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(rows, args.output_dir / "retrain_scale.png")
    out = args.output_dir
    print(f"wrote {out / 'retrain_scale.json'} and {out / 'retrain_scale.png'}")
    big = [r for r in rows if r["runs"] >= 900_000]
    return 0 if all(r["seconds"] <= TARGET_SECONDS_1M for r in big) else 1


if __name__ == "__main__":
    sys.exit(main())
