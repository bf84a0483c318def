"""Latency and throughput of POST /v1/suggestions, in-process and over HTTP.

Setup: a fresh SQLite database holding a run history (the shipped seed history when
there is one and ``--history seed``, else a synthetic one of ``--datasets`` datasets x
48 configs), and an active surrogate retrained on it with the production recipe.

* in-process: ``SuggestionEngine.suggest`` for ``--requests`` requests, each with
  other meta-features (n=5, fixed seed, every candidate scored), single-threaded; the
  same with a new seed per request, so the Sobol pool is never cached ("cold"); and
  one request repeated (served from the answer cache).
* HTTP: a real ``uvicorn service.app:app_factory`` with ``--workers`` processes,
  ``--clients`` concurrent keep-alive clients posting pre-serialised bodies, every one
  distinct (no answer-cache hits); requests/s and latency.

Prints a table and writes ``benchmarks/results/suggest.json`` and ``suggest.png``.
Targets on a 2-core machine: in-process p50 <= 15 ms and p99 <= 60 ms; >= 200
requests/s over HTTP.

Usage::

    python benchmarks/suggest.py
    python benchmarks/suggest.py --requests 300 --clients 1,4,8 --workers 2
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from service.devserver import serve_subprocess

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
FAMILY = "lightgbm"
TARGETS = {"p50_ms": 15.0, "p99_ms": 60.0, "http_requests_per_s": 200.0}


def _quantiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000.0
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p90_ms": round(float(np.percentile(ms, 90)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "mean_ms": round(float(ms.mean()), 2),
    }


def prepare(url: str, history: str, n_datasets: int) -> dict[str, Any]:
    """Fill the database and activate a surrogate; return what was done."""
    from db import migrate
    from db.engine import make_engine
    from db.store import Store
    from training.retrain import retrain
    from training.seed import load_seed, read_seed
    from training.synthetic_history import SyntheticHistory, new_runs

    migrate.upgrade(url)
    store = Store(make_engine(url))
    _, seed_runs = read_seed()
    if history == "seed" and not seed_runs.empty:
        load_seed(store)
        source = "seed"
    else:
        frame = SyntheticHistory(FAMILY, seed=0).frame(n_datasets, 48, n_reduced=12)
        for start in range(0, len(frame), 5000):
            store.ingest_runs(new_runs(frame.iloc[start : start + 5000]))
        source = "synthetic"
    started = time.perf_counter()
    result = retrain(store, FAMILY, force=True)
    return {
        "history": source,
        "surrogate_id": result.candidate_id,
        "n_runs": result.n_runs,
        "n_datasets": result.n_datasets,
        "retrain_seconds": round(time.perf_counter() - started, 2),
        "cv": {k: result.metrics.get(k) for k in ("regret_at_1", "ndcg_at_5", "spearman")},
    }


def request_bodies(n: int, seed: int = 1) -> list[dict[str, Any]]:
    """``n`` request bodies for binary datasets with distinct meta-features."""
    from training.synthetic_history import SyntheticHistory

    history = SyntheticHistory(FAMILY, seed=0)
    rng = np.random.default_rng(seed)
    bodies = []
    for _ in range(n):
        meta = history.sample_meta(rng, "binary")
        bodies.append(
            {
                "family": FAMILY,
                "task": "binary",
                "dataset": {"meta_features": meta},
                "n": 5,
                "seed": 0,
            }
        )
    return bodies


def bench_in_process(url: str, bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """Latency of the policy itself, one request at a time."""
    from db.engine import make_engine
    from db.store import Store
    from training.suggest import SuggestionEngine, SuggestionRequest

    store = Store(make_engine(url))
    engine = SuggestionEngine(store, store)

    def ask(body: dict[str, Any], seed: int) -> None:
        engine.suggest(
            SuggestionRequest(FAMILY, "binary", body["dataset"]["meta_features"], n=5, seed=seed)
        )

    started = time.perf_counter()
    ask(bodies[0], 0)  # loads the surrogate and builds the Sobol pool
    first_ms = (time.perf_counter() - started) * 1000
    warm, cold = [], []
    cpu0 = time.process_time()
    for body in bodies:
        t0 = time.perf_counter()
        ask(body, 0)
        warm.append(time.perf_counter() - t0)
    cpu_ms = (time.process_time() - cpu0) / len(bodies) * 1000
    for i, body in enumerate(bodies):
        t0 = time.perf_counter()
        ask(body, 1000 + i)
        cold.append(time.perf_counter() - t0)
    repeated = []
    for _ in range(len(bodies)):
        t0 = time.perf_counter()
        ask(bodies[0], 0)  # the same request again: served from the answer cache
        repeated.append(time.perf_counter() - t0)
    policy = engine.policy(FAMILY)
    return {
        "requests": len(bodies),
        "first_request_ms": round(first_ms, 1),
        "warm": _quantiles(warm),
        "cold_pool": _quantiles(cold),
        "repeated_request": _quantiles(repeated),
        "cpu_ms_per_request": round(cpu_ms, 2),
        "candidates": {
            "sobol": policy.settings.n_sobol,
            "screened_to": policy.settings.screen_top,
            "portfolio": policy.settings.n_neighbors * policy.settings.per_dataset,
            "local": policy.settings.refine_parents * policy.settings.refine_children,
            "ensemble_members": policy.surrogate.n_members if policy.surrogate else 0,
            "trees_per_member": policy.surrogate.params.n_rounds if policy.surrogate else 0,
        },
    }


def _post_many(host: str, port: int, bodies: list[bytes]) -> list[float]:
    # http.client keeps the client's own CPU cost low: it shares the 2 cores with the server.
    conn = http.client.HTTPConnection(host, port, timeout=60)
    headers = {"content-type": "application/json"}
    latencies = []
    for body in bodies:
        t0 = time.perf_counter()
        conn.request("POST", "/v1/suggestions", body=body, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        latencies.append(time.perf_counter() - t0)
        if response.status != 200:
            raise RuntimeError(f"POST failed: {response.status} {payload[:300]!r}")
    conn.close()
    return latencies


def bench_http(
    url: str, bodies: list[dict[str, Any]], workers: int, clients: list[int], per_client: int
) -> list[dict[str, Any]]:
    """Requests/s and latency over HTTP for each number of concurrent clients."""
    # Every request is distinct (no answer-cache hits): warm-up first, then each
    # concurrency level takes the next unused bodies.
    encoded = [json.dumps(b).encode() for b in bodies]
    needed = 4 * workers + sum(clients) * per_client
    if len(encoded) < needed:
        raise ValueError(f"need {needed} distinct bodies, got {len(encoded)}")
    rows = []
    with serve_subprocess(url, workers=workers, cwd=ROOT) as base:
        host, port = "127.0.0.1", int(base.rsplit(":", 1)[1])
        # Warm every worker: the first request of a process loads the surrogate.
        for i in range(4 * workers):
            _post_many(host, port, [encoded[i]])
        offset = 4 * workers
        for n_clients in clients:
            shares = [
                encoded[offset + c * per_client : offset + (c + 1) * per_client]
                for c in range(n_clients)
            ]
            offset += n_clients * per_client
            started = time.perf_counter()
            with ThreadPoolExecutor(n_clients) as pool:
                results = list(pool.map(lambda share: _post_many(host, port, share), shares))
            seconds = time.perf_counter() - started
            latencies = [x for r in results for x in r]
            rows.append(
                {
                    "clients": n_clients,
                    "server_workers": workers,
                    "requests": len(latencies),
                    "seconds": round(seconds, 3),
                    "requests_per_s": round(len(latencies) / seconds, 1),
                    **_quantiles(latencies),
                }
            )
    return rows


def plot(report: dict[str, Any], path: Path) -> None:
    """Latency quantiles and HTTP throughput, with the targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    ip = report["in_process"]
    names = ["in-process", "in-process\n(cold pool)"] + [
        f"HTTP\n{r['clients']} clients" for r in report["http"]
    ]
    p50 = [ip["warm"]["p50_ms"], ip["cold_pool"]["p50_ms"]] + [r["p50_ms"] for r in report["http"]]
    p99 = [ip["warm"]["p99_ms"], ip["cold_pool"]["p99_ms"]] + [r["p99_ms"] for r in report["http"]]
    x = np.arange(len(names))
    left.bar(x - 0.2, p50, 0.4, label="p50")
    left.bar(x + 0.2, p99, 0.4, label="p99")
    left.axhline(TARGETS["p50_ms"], color="C0", ls="--", lw=1, label="p50 target (in-process)")
    left.axhline(TARGETS["p99_ms"], color="C1", ls="--", lw=1, label="p99 target (in-process)")
    left.set_xticks(x, names, fontsize=8)
    left.set_ylabel("latency (ms)")
    left.set_title("POST /v1/suggestions, n=5")
    left.legend(fontsize=8)
    clients = [r["clients"] for r in report["http"]]
    rps = [r["requests_per_s"] for r in report["http"]]
    right.bar([str(c) for c in clients], rps, color="C2")
    right.axhline(TARGETS["http_requests_per_s"], color="k", ls="--", lw=1, label="target")
    for i, v in enumerate(rps):
        right.text(i, v, f"{v:.0f}", ha="center", va="bottom", fontsize=9)
    right.set_xlabel("concurrent clients")
    right.set_ylabel("requests / s")
    right.set_title(f"HTTP throughput, {report['http'][0]['server_workers']} uvicorn workers")
    right.legend(fontsize=8)
    fig.suptitle(
        f"{report['setup']['history']} history: {report['setup']['n_runs']:,} runs, "
        f"{report['setup']['n_datasets']} datasets; {os.cpu_count()} cores, "
        f"load average at start {report['load_average'][0]:.1f}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--history", choices=["seed", "synthetic"], default="seed")
    parser.add_argument("--datasets", type=int, default=100, help="synthetic datasets")
    parser.add_argument("--requests", type=int, default=300, help="in-process requests")
    parser.add_argument("--clients", default="1,4,8", help="concurrent HTTP clients")
    parser.add_argument("--per-client", type=int, default=150, help="HTTP requests per client")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    load = os.getloadavg()
    clients = [int(c) for c in args.clients.split(",") if c.strip()]
    http_bodies = request_bodies(4 * args.workers + sum(clients) * args.per_client, seed=2)
    bodies = request_bodies(max(args.requests, 64))
    with tempfile.TemporaryDirectory(prefix="hp-bench-suggest-") as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        setup = prepare(url, args.history, args.datasets)
        in_process = bench_in_process(url, bodies[: args.requests])
        http_rows = bench_http(url, http_bodies, args.workers, clients, args.per_client)
    report = {
        "benchmark": "suggest",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average": [round(x, 2) for x in load],
        "setup": setup,
        "in_process": in_process,
        "http": http_rows,
        "targets": TARGETS,
    }
    print(f"history: {setup['history']}, {setup['n_runs']} runs, {setup['n_datasets']} datasets")
    print(f"{'mode':28s} {'p50 ms':>8s} {'p90 ms':>8s} {'p99 ms':>8s} {'req/s':>8s}")
    for name, q in (
        ("in-process", in_process["warm"]),
        ("in-process, cold pool", in_process["cold_pool"]),
    ):
        print(f"{name:28s} {q['p50_ms']:8.2f} {q['p90_ms']:8.2f} {q['p99_ms']:8.2f} {'':>8s}")
    for r in http_rows:
        name = f"HTTP, {r['clients']} clients"
        print(
            f"{name:28s} {r['p50_ms']:8.2f} {r['p90_ms']:8.2f} {r['p99_ms']:8.2f} "
            f"{r['requests_per_s']:8.1f}"
        )
    print(f"in-process CPU per request: {in_process['cpu_ms_per_request']} ms")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "suggest.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, args.output_dir / "suggest.png")
    print(f"wrote {args.output_dir / 'suggest.json'} and {args.output_dir / 'suggest.png'}")
    ok = (
        in_process["warm"]["p50_ms"] <= TARGETS["p50_ms"]
        and in_process["warm"]["p99_ms"] <= TARGETS["p99_ms"]
        and max(r["requests_per_s"] for r in http_rows) >= TARGETS["http_requests_per_s"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
