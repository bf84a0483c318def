"""Ingest throughput over HTTP: a real uvicorn server on SQLite and on PostgreSQL.

For each backend: a fresh database (temp SQLite file; new PostgreSQL schema), a
``uvicorn service.app:app_factory`` subprocess on a free port, then a few client
threads POST pre-serialised batches of 1,000 runs to ``/v1/runs``. Prints a table and
writes ``benchmarks/results/ingest.json`` and ``benchmarks/results/ingest.png``.

Usage::

    python benchmarks/ingest.py                       # both backends
    python benchmarks/ingest.py --backends sqlite --batches 20 --clients 4

Targets: >= 10,000 runs/s on SQLite, >= 5,000 runs/s on PostgreSQL.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from hyperprior.service.devserver import serve_subprocess
from hyperprior.vocabulary import TASKS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TARGETS = {"sqlite": 10_000, "postgres": 5_000}
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def make_batches(n_batches: int, batch_size: int, seed: int = 0) -> list[bytes]:
    """Serialised ``{"runs": [...]}`` bodies with LightGBM-like configs on 20 datasets."""
    rng = random.Random(seed)
    datasets = []
    for i in range(20):
        task = TASKS[i % 3]
        meta: dict[str, Any] = {
            "n_rows": rng.randint(200, 200_000),
            "n_features": rng.randint(3, 300),
            "n_numeric": rng.randint(0, 200),
            "class_entropy": rng.random(),
            "skewness_mean": rng.gauss(0, 1),
            "kurtosis_mean": rng.gauss(3, 1),
            "landmark_1nn": rng.random(),
            "landmark_stump": rng.random(),
        }
        if task != "regression":
            meta["n_classes"] = 2 if task == "binary" else rng.randint(3, 10)
        datasets.append({"name": f"bench-{i}", "task": task, "meta_features": meta})
    bodies = []
    for _ in range(n_batches):
        runs = []
        for _ in range(batch_size):
            dataset = rng.choice(datasets)
            runs.append(
                {
                    "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    "dataset": dataset,
                    "family": "lightgbm",
                    "config": {
                        "learning_rate": 10 ** rng.uniform(-3, 0),
                        "num_leaves": rng.randint(4, 512),
                        "min_child_samples": rng.randint(2, 200),
                        "subsample": rng.uniform(0.5, 1),
                        "colsample_bytree": rng.uniform(0.3, 1),
                        "reg_alpha": 10 ** rng.uniform(-6, 1),
                        "reg_lambda": 10 ** rng.uniform(-6, 1),
                        "n_estimators": rng.randint(50, 2000),
                    },
                    "metric": "rmse" if dataset["task"] == "regression" else "roc_auc",
                    "direction": "minimize" if dataset["task"] == "regression" else "maximize",
                    "score": rng.random(),
                    "fidelity": rng.choice([0.1, 0.33, 1.0]),
                    "cost_seconds": rng.expovariate(0.2),
                    "source": "bootstrap",
                }
            )
        bodies.append(json.dumps({"runs": runs}).encode())
    return bodies


@contextlib.contextmanager
def database(backend: str, postgres_url: str) -> Iterator[str]:
    """A fresh database URL at head; removed afterwards."""
    from sqlalchemy import make_url, text

    from hyperprior.db import migrate
    from hyperprior.db.engine import make_engine

    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="hp-bench-") as tmp:
            url = f"sqlite:///{tmp}/bench.db"
            migrate.upgrade(url)
            yield url
        return
    admin = make_engine(postgres_url, pool_size=1, connect_timeout_s=5)
    schema = f"hp_bench_{uuid.uuid4().hex[:10]}"
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = (
        make_url(postgres_url)
        .update_query_dict({"options": f"-csearch_path={schema}"})
        .render_as_string(hide_password=False)
    )
    try:
        migrate.upgrade(url)
        yield url
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def write_key(url: str) -> str:
    """A fresh API key with scope write on ``url`` (ingest needs one)."""
    from hyperprior.db.engine import make_engine
    from hyperprior.db.store import Store
    from hyperprior.service.auth import issue_key

    engine = make_engine(url)
    try:
        return issue_key(Store(engine), "write", name="bench-ingest")[1]
    finally:
        engine.dispose()


def post_all(
    base: str, bodies: list[bytes], clients: int, key: str
) -> tuple[float, list[float], int]:
    """POST every body using ``clients`` threads; return wall time, latencies, inserted."""
    headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
    queue = list(enumerate(bodies))
    latencies: list[float] = []
    inserted = 0

    def worker(items: list[tuple[int, bytes]]) -> tuple[list[float], int]:
        done, count = [], 0
        with httpx.Client(base_url=base, timeout=120) as client:
            for _, body in items:
                start = time.perf_counter()
                response = client.post("/v1/runs", content=body, headers=headers)
                done.append(time.perf_counter() - start)
                if response.status_code not in (200, 201):
                    raise RuntimeError(f"POST failed: {response.status_code} {response.text}")
                count += response.json()["inserted"]
        return done, count

    shares = [queue[i::clients] for i in range(clients)]
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for done, count in pool.map(worker, shares):
            latencies.extend(done)
            inserted += count
    return time.perf_counter() - start, latencies, inserted


def bench(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark on one backend."""
    bodies = make_batches(args.batches + args.warmup, args.batch_size, seed=len(backend))
    warmup, timed = bodies[: args.warmup], bodies[args.warmup :]
    with (
        database(backend, args.postgres_url) as url,
        serve_subprocess(url, workers=args.workers, cwd=ROOT) as base,
    ):
        key = write_key(url)
        post_all(base, warmup, 1, key)
        seconds, latencies, inserted = post_all(base, timed, args.clients, key)
        resend_seconds, _, reinserted = post_all(base, timed, args.clients, key)
    runs = len(timed) * args.batch_size
    if inserted != runs or reinserted != 0:
        raise RuntimeError(f"{backend}: inserted {inserted} of {runs}, re-sent {reinserted}")
    quantiles = statistics.quantiles(latencies, n=20)
    return {
        "backend": backend,
        "runs": runs,
        "batch_size": args.batch_size,
        "clients": args.clients,
        "server_workers": args.workers,
        "seconds": round(seconds, 3),
        "runs_per_s": round(runs / seconds),
        "duplicates_runs_per_s": round(runs / resend_seconds),
        "batch_latency_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "batch_latency_p95_ms": round(quantiles[18] * 1000, 1),
        "target_runs_per_s": TARGETS[backend],
    }


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Bar plot of runs/s per backend with the targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    names = [r["backend"] for r in results]
    values = [r["runs_per_s"] for r in results]
    bars = ax.bar(names, values, color=["#4C72B0", "#55A868"][: len(names)])
    for bar, result in zip(bars, results, strict=True):
        ax.hlines(
            result["target_runs_per_s"],
            bar.get_x(),
            bar.get_x() + bar.get_width(),
            colors="red",
            linestyles="--",
            label="target" if bar is bars[0] else None,
        )
        ax.annotate(
            f"{result['runs_per_s']:,}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
        )
    ax.set_ylim(0, max(max(values), *TARGETS.values()) * 1.2)
    ax.set_ylabel("runs ingested per second")
    ax.set_title(
        f"POST /v1/runs, batches of {results[0]['batch_size']:,}, "
        f"{results[0]['clients']} clients, {results[0]['server_workers']} worker(s)"
    )
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--batches", type=int, default=40, help="timed batches per backend")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4, help="concurrent client threads")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("HYPERPRIOR_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL),
    )
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    results = [bench(backend, args) for backend in args.backends.split(",")]

    print(f"{'backend':<10} {'runs':>8} {'seconds':>8} {'runs/s':>8} {'target':>8} {'p95 ms':>8}")
    for r in results:
        print(
            f"{r['backend']:<10} {r['runs']:>8} {r['seconds']:>8.2f} {r['runs_per_s']:>8} "
            f"{r['target_runs_per_s']:>8} {r['batch_latency_p95_ms']:>8}"
        )
    args.output_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "ingest",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average_1m": os.getloadavg()[0],
        "results": results,
    }
    (args.output_dir / "ingest.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(results, args.output_dir / "ingest.png")
    print(f"wrote {args.output_dir / 'ingest.json'} and {args.output_dir / 'ingest.png'}")
    return 0 if all(r["runs_per_s"] >= r["target_runs_per_s"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
