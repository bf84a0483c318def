"""Latency and throughput of POST /v1/suggestions, in-process and over HTTP.

Setup: a fresh SQLite database holding a run history, and an active surrogate retrained
on it with the production recipe. ``--history``:

* ``seed``: the shipped seed history (``training/seed/``);
* ``seed3x``: the seed plus two perturbed replicas of every dataset and its runs (3x the
  datasets and runs, as the 300-dataset corpus will be): new names, meta-features
  perturbed (sizes by a log-normal factor, landmarker scores by a little noise), scores
  jittered, so the surrogate, the portfolio and the nearest-dataset index all grow 3x;
* ``synthetic``: ``--datasets`` synthetic datasets x 48 configs.

Each result records the history's fingerprint (the sha256 of the seed's parquet files,
with the replication recipe for ``seed3x``) and the code's commit.

* in-process: ``SuggestionEngine.suggest`` for ``--requests`` requests, each with
  other meta-features (n=5, fixed seed, every candidate scored), single-threaded; the
  same with a new seed per request, so the Sobol pool is never cached ("new pool"); and
  one request repeated (served from the answer cache).
* HTTP: a real ``uvicorn service.app:app_factory`` with ``--workers`` processes,
  ``--clients`` concurrent keep-alive clients posting pre-serialised bodies, every one
  distinct (no answer-cache hits); requests/s and latency.

Both use compiled trees as a server does (``HYPERPRIOR_COMPILED_TREES``, default ``auto``;
``off`` times LightGBM's predict); the in-process timings start once they are built (the
HTTP server builds them in the background, and its first requests use LightGBM).

Prints a table and writes ``benchmarks/results/suggest[.HISTORY][.LABEL].json`` (and a
plot when matplotlib is installed; the JSON never depends on it). ``--readme`` rewrites
the README's suggestion-speed table from the result files instead of measuring.

Targets (issue 19, 2 cores, the seed and its 3x): in-process p50 <= 3 ms, p99 <= 10 ms;
new Sobol pool p50 <= 10 ms; HTTP, 2 workers, 4 clients: >= 400 requests/s, p99 <= 40 ms.

``--baseline FILE`` adds an in-process A/B: the policy module in FILE (e.g. ``git show
554a6eb:training/suggest.py > /tmp/suggest_before.py``) and the current one answer the
same requests interleaved, and the answers are compared. ``--baseline git:REV`` takes the
whole training code of revision REV instead (policy, candidates, features, surrogate,
compiled trees: the request path spans them), loaded beside today's under another package
name; when REV has compiled trees, its surrogate uses its own, built the way REV builds them.

``--http-baseline REV`` serves revision REV (its service, training and db code, unpacked from
git) beside today's code on the same database and times both over HTTP with 4 clients, in
blocks of 240 requests taken in turn (``--http-rounds`` each), so that the machine's drift
falls on both: single HTTP runs move by a third from one to the next.

Usage::

    python benchmarks/suggest.py --requests 200 --clients 1,4 --per-client 100 --workers 2
    python benchmarks/suggest.py --clients '' --http-baseline 893a689 --http-rounds 8
    python benchmarks/suggest.py --history seed3x --requests 200 --clients 1,4 --per-client 100
    python benchmarks/suggest.py --readme
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import http.client
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
FAMILY = "lightgbm"
TARGETS = {
    "p50_ms": 3.0,
    "p99_ms": 10.0,
    "new_pool_p50_ms": 10.0,
    "http_requests_per_s": 400.0,
    "http_p99_ms": 40.0,
}
HISTORIES = ("seed", "seed3x", "synthetic")
# Replicas of the seed for --history seed3x (the seed itself is the first copy).
REPLICAS = 2
REPLICA_SEED = 19


def seed_fingerprint(directory: Path | None = None) -> str:
    """Short sha256 of the seed's datasets and runs files (what a history was built from)."""
    from hyperprior.training.seed import SEED_DIR

    directory = directory or SEED_DIR
    digest = hashlib.sha256()
    for name in ("datasets.parquet", "runs.parquet"):
        path = directory / name
        digest.update(path.read_bytes() if path.exists() else b"")
    return digest.hexdigest()[:12]


def _perturb_meta(meta: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    out = dict(meta)
    # Sizes move by a log-normal factor (about +-30%), derived ratios follow.
    for key in ("n_rows", "n_features"):
        if isinstance(out.get(key), int | float) and out[key]:
            out[key] = max(2, int(round(float(out[key]) * float(np.exp(rng.normal(0, 0.3))))))
    for key in ("log_n_rows", "log_n_features", "ratio_features_rows"):
        out.pop(key, None)  # recomputed from the counts on ingest
    for key, value in meta.items():
        if key.startswith("lm_") and isinstance(value, int | float):
            out[key] = float(np.clip(value + rng.normal(0, 0.02), 0.0, 1.0))
    return out


def replicate_seed(source: Path, target: Path, replica: int) -> None:
    """Write a perturbed copy of the seed in ``source`` to ``target`` (a seed directory).

    Every dataset gets a new name and perturbed meta-features; every run a new id
    (uuid5 of the old one) and a score jittered by 1% of its dataset's spread, so the
    copy is new data of the same shape, not duplicates.
    """
    import pandas as pd

    from hyperprior.training.seed import read_seed

    datasets, runs = read_seed(source)
    rng = np.random.default_rng([REPLICA_SEED, replica])
    suffix = f"~x{replica}"
    datasets = datasets.copy()
    datasets["meta_features"] = [
        json.dumps(_perturb_meta(json.loads(m), rng)) for m in datasets["meta_features"]
    ]
    datasets["name"] = datasets["name"] + suffix
    runs = runs.copy()
    spread = runs.groupby(["dataset", "metric"])["score"].transform(lambda x: x.max() - x.min())
    noise = rng.normal(0.0, 0.01, len(runs)) * spread.fillna(0.0).to_numpy()
    runs["score"] = runs["score"] + np.where(runs["score"].notna(), noise, 0.0)
    runs["dataset"] = runs["dataset"] + suffix
    runs["id"] = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"{i}{suffix}")) for i in runs["id"]]
    target.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(datasets).to_parquet(target / "datasets.parquet", index=False)
    pd.DataFrame(runs).to_parquet(target / "runs.parquet", index=False)


def _commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


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
    from hyperprior.db import migrate
    from hyperprior.db.engine import make_engine
    from hyperprior.db.store import Store
    from hyperprior.training.retrain import retrain
    from hyperprior.training.seed import load_seed, read_seed
    from hyperprior.training.synthetic_history import SyntheticHistory, new_runs

    migrate.upgrade(url)
    store = Store(make_engine(url))
    _, seed_runs = read_seed()
    fingerprint = None
    if history in ("seed", "seed3x") and not seed_runs.empty:
        load_seed(store)
        source = history
        fingerprint = seed_fingerprint()
        if history == "seed3x":
            from hyperprior.training.seed import SEED_DIR

            with tempfile.TemporaryDirectory(prefix="hp-seed3x-") as tmp:
                for replica in range(1, REPLICAS + 1):
                    copy = Path(tmp) / f"x{replica}"
                    replicate_seed(SEED_DIR, copy, replica)
                    load_seed(store, copy)
            fingerprint = f"{fingerprint}x{REPLICAS + 1}r{REPLICA_SEED}"
    else:
        frame = SyntheticHistory(FAMILY, seed=0).frame(n_datasets, 48, n_reduced=12)
        for start in range(0, len(frame), 5000):
            store.ingest_runs(new_runs(frame.iloc[start : start + 5000]))
        source = "synthetic"
    started = time.perf_counter()
    result = retrain(store, FAMILY, force=True)
    return {
        "history": source,
        "history_fingerprint": fingerprint,
        "surrogate_id": result.candidate_id,
        "n_runs": result.n_runs,
        "n_datasets": result.n_datasets,
        "retrain_seconds": round(time.perf_counter() - started, 2),
        "cv": {k: result.metrics.get(k) for k in ("regret_at_1", "ndcg_at_5", "spearman")},
    }


def request_bodies(n: int, seed: int = 1) -> list[dict[str, Any]]:
    """``n`` request bodies for binary datasets with distinct meta-features."""
    from hyperprior.training.synthetic_history import SyntheticHistory

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


def _wait_compiled(surrogate: Any) -> None:
    # Time the steady state: the compiled trees (HYPERPRIOR_COMPILED_TREES=auto, the
    # default) are built in the background, and a server uses them once they are.
    compiled = getattr(surrogate, "compiled", None)
    if compiled is not None:
        compiled.wait()
        print(f"compiled trees: {', '.join(compiled.ready) or 'none'}", file=sys.stderr)


def bench_in_process(url: str, bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """Latency of the policy itself, one request at a time."""
    from hyperprior.db.engine import make_engine
    from hyperprior.db.store import Store
    from hyperprior.service.settings import Settings
    from hyperprior.training.suggest import SuggestionEngine, SuggestionRequest

    store = Store(make_engine(url))
    engine = SuggestionEngine(store, store, compiler=Settings().tree_compiler())

    def ask(body: dict[str, Any], seed: int) -> None:
        engine.suggest(
            SuggestionRequest(FAMILY, "binary", body["dataset"]["meta_features"], n=5, seed=seed)
        )

    started = time.perf_counter()
    ask(bodies[0], 0)  # loads the surrogate and builds the Sobol pool
    first_ms = (time.perf_counter() - started) * 1000
    _wait_compiled(engine.policy(FAMILY).surrogate)
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


BASELINE_PACKAGE = "hyperprior_baseline"


def unpack(rev: str, paths: list[str], target: Path) -> Path:
    """``paths`` as they are in git revision ``rev``, unpacked in ``target`` (made here)."""
    archive = subprocess.run(
        ["git", "archive", rev, *paths], cwd=ROOT, capture_output=True, check=True
    ).stdout
    target.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def baseline_package(rev: str, target: Path) -> Path:
    """The training code of git revision ``rev`` as package ``BASELINE_PACKAGE`` in ``target``.

    ``training/``, ``db/`` (the policy's engine imports its entities) and
    ``hyperprior/vocabulary.py``, with every ``hyperprior.`` import renamed, so the old
    code and today's load side by side in one process.
    """
    root = unpack(rev, ["training", "db", "hyperprior/vocabulary.py"], target / BASELINE_PACKAGE)
    (root / "vocabulary.py").write_bytes((root / "hyperprior" / "vocabulary.py").read_bytes())
    (root / "__init__.py").write_text("")
    for path in root.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        text = re.sub(r"\bhyperprior\.", f"{BASELINE_PACKAGE}.", text)
        text = text.replace("from hyperprior import", f"from {BASELINE_PACKAGE} import")
        path.write_text(text, encoding="utf-8")
    return target


def _baseline_modules(baseline: Path | str, tmp: Path) -> tuple[Any, Any | None]:
    """The baseline's policy module, and its surrogate module for ``git:REV`` (else None)."""
    import importlib
    import importlib.util

    text = str(baseline)
    if text.startswith("git:"):
        sys.path.insert(0, str(baseline_package(text[4:], tmp)))
        policy = importlib.import_module(f"{BASELINE_PACKAGE}.training.suggest")
        return policy, importlib.import_module(f"{BASELINE_PACKAGE}.training.surrogate")
    spec = importlib.util.spec_from_file_location("hyperprior_baseline_suggest", baseline)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import {baseline}")
    old = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = old  # dataclasses look their module up there
    spec.loader.exec_module(old)
    return old, None


def bench_paired(url: str, bodies: list[dict[str, Any]], baseline: Path | str) -> dict[str, Any]:
    """In-process A/B against the policy module in ``baseline`` (e.g. an older suggest.py).

    Both policies get the same surrogate and portfolio and answer the same requests,
    interleaved request by request (which goes first alternates), so load from other work
    on a shared machine hits both alike; the ratio of each pair is robust to it. Also
    checks that both give the same answers.
    """
    import dataclasses

    from hyperprior.db.engine import make_engine
    from hyperprior.db.store import Store
    from hyperprior.service.settings import Settings
    from hyperprior.training.suggest import SuggestionEngine, SuggestionRequest

    old, old_surrogates = _baseline_modules(baseline, Path(tempfile.mkdtemp(prefix="hp-base-")))
    store = Store(make_engine(url))
    compiler = Settings().tree_compiler()
    new_policy = SuggestionEngine(store, store, compiler=compiler).policy(FAMILY)
    surrogate = new_policy.surrogate
    _wait_compiled(surrogate)
    if old_surrogates is not None and surrogate is not None:
        # The old prediction code too, on the same model text, with its own compiled trees
        # when it has them (else the A/B would time compiled against LightGBM).
        surrogate = old_surrogates.Surrogate(surrogate.text, surrogate.metadata)
        if hasattr(surrogate, "use_compiled") and compiler.mode != "off":
            import importlib

            old_compiled = importlib.import_module(f"{BASELINE_PACKAGE}.training.compiled")
            surrogate.use_compiled(
                old_compiled.TreeCompiler(compiler.mode, compiler.cache_dir),
                screen_fractions=(new_policy.settings.screen_fraction,),
            )
            _wait_compiled(surrogate)
    old_policy = old.SuggestionPolicy(
        FAMILY,
        surrogate=surrogate,
        portfolio=old.Portfolio.from_json(FAMILY, new_policy.portfolio.to_json()),
        info=new_policy.info,
    )

    def timed(policy: Any, request: Any) -> tuple[float, float, Any]:
        t0, c0 = time.perf_counter(), time.process_time()
        answer = policy.suggest(request)
        return time.perf_counter() - t0, time.process_time() - c0, answer

    out: dict[str, Any] = {"baseline": str(baseline)}
    identical = True
    for mode, seeds in (("warm", [0] * len(bodies)), ("new_pool", range(5000, 5000 + len(bodies)))):
        times: dict[str, list[float]] = {"new": [], "old": [], "new_cpu": [], "old_cpu": []}
        for i, (body, seed) in enumerate(zip(bodies, seeds, strict=False)):
            meta = body["dataset"]["meta_features"]
            new_req = SuggestionRequest(FAMILY, "binary", meta, n=5, seed=seed)
            old_req = old.SuggestionRequest(FAMILY, "binary", meta, n=5, seed=seed)
            order = [("new", new_policy, new_req), ("old", old_policy, old_req)]
            answers = {}
            for name, policy, request in order if i % 2 else order[::-1]:
                wall, cpu, answers[name] = timed(policy, request)
                times[name].append(wall)
                times[f"{name}_cpu"].append(cpu)
            identical &= dataclasses.asdict(answers["new"]) == dataclasses.asdict(answers["old"])
        ratio = np.asarray(times["new"]) / np.asarray(times["old"])
        cpu_ratio = np.asarray(times["new_cpu"]) / np.maximum(np.asarray(times["old_cpu"]), 1e-9)
        out[mode] = {
            "new": _quantiles(times["new"]),
            "old": _quantiles(times["old"]),
            "new_cpu_ms": round(float(np.mean(times["new_cpu"])) * 1000, 2),
            "old_cpu_ms": round(float(np.mean(times["old_cpu"])) * 1000, 2),
            "median_ratio": round(float(np.median(ratio)), 3),
            "median_cpu_ratio": round(float(np.median(cpu_ratio)), 3),
        }
    out["identical_answers"] = identical
    return out


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
    from hyperprior.service.devserver import serve_subprocess

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


# Run as a server's main script (uvicorn's arguments follow): imports hyperprior from the
# checkout in $HP_CHECKOUT. Spawned workers run this file's top level again, so they do too.
LAUNCHER = """\
import importlib.util
import os
import sys

ROOT = os.environ["HP_CHECKOUT"]
DIRS = {"hyperprior": "hyperprior", "hyperprior.client": "client", "hyperprior.db": "db",
        "hyperprior.service": "service", "hyperprior.training": "training"}


class CheckoutFinder:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name not in DIRS:
            return None
        where = os.path.join(ROOT, DIRS[name])
        return importlib.util.spec_from_file_location(
            name, os.path.join(where, "__init__.py"), submodule_search_locations=[where]
        )


sys.meta_path.insert(0, CheckoutFinder)
if __name__ == "__main__":
    import uvicorn.main

    sys.exit(uvicorn.main.main())
"""


def bench_http_paired(
    url: str, bodies: list[dict[str, Any]], workers: int, rev: str, rounds: int, tmp: Path
) -> dict[str, Any]:
    """Requests/s of today's server and revision ``rev``'s, 4 clients, blocks interleaved.

    Both servers (``workers`` processes each) run on the same database; they take turns,
    ``rounds`` blocks of 4 x 60 requests each, the order swapped every round, so the
    machine's drift falls on both alike.
    """
    from hyperprior.service.devserver import serve_subprocess

    launcher = tmp / "launch_server.py"
    launcher.write_text(LAUNCHER)
    code = ["hyperprior", "client", "db", "service", "training"]
    roots = {"new": ROOT, "old": unpack(rev, code, tmp / "baseline-checkout")}
    encoded = [json.dumps(b).encode() for b in bodies]
    needed = 8 * workers + rounds * 2 * 240
    if len(encoded) < needed:
        raise ValueError(f"need {needed} distinct bodies, got {len(encoded)}")
    rates: dict[str, list[float]] = {"new": [], "old": []}
    with contextlib.ExitStack() as stack:
        ports = {}
        for name, root in roots.items():
            base = stack.enter_context(
                serve_subprocess(
                    url,
                    workers=workers,
                    cwd=root,
                    launcher=launcher,
                    env={"HP_CHECKOUT": str(root)},
                )
            )
            ports[name] = int(base.rsplit(":", 1)[1])
        offset = 0
        for name in ("new", "old"):  # warm every worker of both
            for _ in range(4 * workers):
                _post_many("127.0.0.1", ports[name], [encoded[offset]])
                offset += 1
        for r in range(rounds):
            for name in ("new", "old") if r % 2 == 0 else ("old", "new"):
                shares = [encoded[offset + c * 60 : offset + (c + 1) * 60] for c in range(4)]
                offset += 240
                started = time.perf_counter()
                port = ports[name]
                with ThreadPoolExecutor(4) as pool:
                    list(pool.map(functools.partial(_post_many, "127.0.0.1", port), shares))
                rates[name].append(round(240 / (time.perf_counter() - started), 1))
    return {
        "baseline": f"git:{rev}",
        "clients": 4,
        "server_workers": workers,
        "rounds": rounds,
        "requests_per_s": rates,
        "median_requests_per_s": {k: round(float(np.median(v)), 1) for k, v in rates.items()},
        "rounds_new_faster": int(
            sum(a > b for a, b in zip(rates["new"], rates["old"], strict=True))
        ),
    }


def plot(report: dict[str, Any], path: Path) -> None:
    """Latency quantiles and HTTP throughput, with the targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    ip = report["in_process"]
    names = ["in-process", "in-process\n(new pool)"] + [
        f"HTTP\n{r['clients']} clients" for r in report["http"]
    ]
    p50 = [ip["warm"]["p50_ms"], ip["cold_pool"]["p50_ms"]] + [r["p50_ms"] for r in report["http"]]
    p99 = [ip["warm"]["p99_ms"], ip["cold_pool"]["p99_ms"]] + [r["p99_ms"] for r in report["http"]]
    x = np.arange(len(names))
    left.bar(x - 0.2, p50, 0.4, label="p50")
    left.bar(x + 0.2, p99, 0.4, label="p99")
    left.axhline(TARGETS["p50_ms"], color="C0", ls="--", lw=1, label="p50 target (in-process)")
    left.axhline(TARGETS["p99_ms"], color="C1", ls="--", lw=1, label="p99 target (in-process)")
    left.axhline(TARGETS["http_p99_ms"], color="C3", ls=":", lw=1, label="p99 target (HTTP)")
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
    if report["http"]:
        right.set_title(f"HTTP throughput, {report['http'][0]['server_workers']} uvicorn workers")
    else:
        right.set_title("HTTP not measured (--clients '')")
    right.legend(fontsize=8)
    fig.suptitle(
        f"{report['setup']['history']} history ({report['setup'].get('history_fingerprint')}): "
        f"{report['setup']['n_runs']:,} runs, "
        f"{report['setup']['n_datasets']} datasets; {os.cpu_count()} cores, "
        f"load average at start {report['load_average'][0]:.1f}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def result_name(history: str, label: str = "") -> str:
    """File stem of a result: ``suggest`` for the seed, ``suggest.HISTORY`` otherwise."""
    stem = "suggest" if history == "seed" else f"suggest.{history}"
    return f"{stem}.{label}" if label else stem


def write_results(report: dict[str, Any], directory: Path, stem: str) -> list[Path]:
    """Write the JSON, then the plot if matplotlib is there; return what was written."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stem}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    written = [path]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("matplotlib is not installed: no plot (pip install '.[bench]' for one)")
        return written
    plot(report, directory / f"{stem}.png")
    written.append(directory / f"{stem}.png")
    return written


# ---------------------------------------------------------------------------------------
# The README's table, generated from the result files

README_BEGIN = "<!-- suggest-speed:begin (python benchmarks/suggest.py --readme) -->"
README_END = "<!-- suggest-speed:end -->"
_ORDER = {"seed": 0, "seed3x": 1, "synthetic": 2}


def _rows_of(report: dict[str, Any], current: str | None) -> list[list[str]]:
    setup = report["setup"]
    fingerprint = setup.get("history_fingerprint")
    history = {"seed": "seed", "seed3x": "seed x3 (synthetic replicas)"}.get(
        setup["history"], setup["history"]
    )
    if fingerprint is None or (current is not None and not fingerprint.startswith(current)):
        history += " **(another history than today's seed)**"
    history += f", {setup['n_runs']:,} runs, {setup['n_datasets']} datasets"
    label = report.get("label") or "current"
    commit = report.get("commit") or "?"
    head = [
        report["created_at"][:10],
        history,
        f"`{fingerprint or 'n/a'}`",
        f"{label} (`{commit}`)",
        f"{report['load_average'][0]:.1f}",
    ]
    ip = report["in_process"]
    rows = [
        head + ["in-process", f"{ip['warm']['p50_ms']:.1f}", f"{ip['warm']['p99_ms']:.1f}", ""],
        head
        + [
            "in-process, new Sobol pool",
            f"{ip['cold_pool']['p50_ms']:.1f}",
            f"{ip['cold_pool']['p99_ms']:.1f}",
            "",
        ],
    ]
    for r in report["http"]:
        mode = f"HTTP, {r['clients']} client{'s' if r['clients'] > 1 else ''}, "
        mode += f"{r['server_workers']} workers"
        rows.append(
            head + [mode, f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}", f"{r['requests_per_s']:.0f}"]
        )
    return rows


def readme_table(directory: Path = RESULTS) -> str:
    """The suggestion-speed table of every ``suggest*.json`` in ``directory``, as Markdown."""
    reports = []
    for path in sorted(directory.glob("suggest*.json")):
        report = json.loads(path.read_text())
        if report.get("benchmark") == "suggest":
            reports.append(report)
    reports.sort(
        key=lambda r: (_ORDER.get(r["setup"]["history"], 9), r.get("label") != "", r["created_at"])
    )
    try:
        current: str | None = seed_fingerprint()
    except OSError:
        current = None
    header = [
        "date",
        "history",
        "fingerprint",
        "code",
        "load avg",
        "mode",
        "p50 ms",
        "p99 ms",
        "requests/s",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 5 + "---|---:|---:|---:|"]
    for report in reports:
        lines += ["| " + " | ".join(row) + " |" for row in _rows_of(report, current)]
    notes = [_paired_note(r) for r in reports if r.get("paired")]
    notes += [_http_paired_note(r) for r in reports if r.get("http_paired")]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def _paired_note(report: dict[str, Any]) -> str:
    paired = report["paired"]
    baseline = Path(paired["baseline"]).name
    parts = []
    for mode, name in (("warm", "in-process"), ("new_pool", "new Sobol pool")):
        row = paired[mode]
        parts.append(
            f"{name} p50 {row['new']['p50_ms']:.1f} vs {row['old']['p50_ms']:.1f} ms, "
            f"CPU {row['new_cpu_ms']:.1f} vs {row['old_cpu_ms']:.1f} ms "
            f"(median ratio {row['median_cpu_ratio']:.2f})"
        )
    same = "same answers" if paired["identical_answers"] else "**answers differ**"
    return (
        f"A/B on {report['setup']['history']}, {report['created_at'][:10]}, this code against "
        f"`{baseline}` interleaved request by request ({same}): " + "; ".join(parts) + "."
    )


def _http_paired_note(report: dict[str, Any]) -> str:
    paired = report["http_paired"]
    med = paired["median_requests_per_s"]
    rates = paired["requests_per_s"]
    return (
        f"HTTP A/B on {report['setup']['history']}, {report['created_at'][:10]}, this code "
        f"(`{str(report.get('commit') or '')[:7]}`) against `{paired['baseline'][4:]}`, both "
        f"served ({paired['server_workers']} workers each), 4 clients, {paired['rounds']} "
        f"blocks of 240 requests each in turn: median {med['new']:.0f} vs {med['old']:.0f} "
        f"requests/s (blocks {min(rates['new']):.0f}-{max(rates['new']):.0f} vs "
        f"{min(rates['old']):.0f}-{max(rates['old']):.0f}; this code faster in "
        f"{paired['rounds_new_faster']} of {paired['rounds']} rounds)."
    )


def update_readme(path: Path = README, directory: Path = RESULTS) -> bool:
    """Replace the table between the markers in the README; True when it changed."""
    text = path.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(README_BEGIN) + r".*?" + re.escape(README_END), re.S)
    if not pattern.search(text):
        raise ValueError(f"{path} has no {README_BEGIN!r} ... {README_END!r} block")
    block = f"{README_BEGIN}\n{readme_table(directory)}\n{README_END}"
    new = pattern.sub(lambda _: block, text)
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--history", choices=HISTORIES, default="seed")
    parser.add_argument("--datasets", type=int, default=100, help="synthetic datasets")
    parser.add_argument("--requests", type=int, default=300, help="in-process requests")
    parser.add_argument("--clients", default="1,4,8", help="concurrent HTTP clients")
    parser.add_argument("--per-client", type=int, default=150, help="HTTP requests per client")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    parser.add_argument(
        "--label", default="", help="suffix of the result file, e.g. before-issue19"
    )
    parser.add_argument(
        "--baseline",
        help="also time this policy module (an older training/suggest.py), or with "
        "git:REV the training code of revision REV, against the current one, "
        "interleaved request by request",
    )
    parser.add_argument(
        "--http-baseline",
        metavar="REV",
        help="also serve git revision REV beside today's code and time both over HTTP "
        "(4 clients), blocks of requests interleaved",
    )
    parser.add_argument(
        "--http-rounds", type=int, default=8, help="blocks per server for --http-baseline"
    )
    parser.add_argument(
        "--commit", default=None, help="the code's commit, when not run from a git checkout"
    )
    parser.add_argument(
        "--readme", action="store_true", help="only rewrite the README table from the results"
    )
    args = parser.parse_args(argv)
    if args.readme:
        changed = update_readme(directory=args.output_dir)
        print(readme_table(args.output_dir))
        print("README updated" if changed else "README already up to date")
        return 0

    load = os.getloadavg()
    clients = [int(c) for c in args.clients.split(",") if c.strip()]
    http_bodies = request_bodies(4 * args.workers + sum(clients) * args.per_client, seed=2)
    paired_bodies = (
        request_bodies(8 * args.workers + args.http_rounds * 480, seed=3)
        if args.http_baseline
        else []
    )
    bodies = request_bodies(max(args.requests, 64))
    with tempfile.TemporaryDirectory(prefix="hp-bench-suggest-") as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        setup = prepare(url, args.history, args.datasets)
        in_process = bench_in_process(url, bodies[: args.requests])
        paired = (
            bench_paired(url, bodies[: args.requests], args.baseline) if args.baseline else None
        )
        http_rows = bench_http(url, http_bodies, args.workers, clients, args.per_client)
        http_paired = (
            bench_http_paired(
                url, paired_bodies, args.workers, args.http_baseline, args.http_rounds, Path(tmp)
            )
            if args.http_baseline
            else None
        )
    report = {
        "benchmark": "suggest",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "label": args.label,
        "commit": args.commit or _commit(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average": [round(x, 2) for x in load],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "setup": setup,
        "in_process": in_process,
        "paired": paired,
        "http": http_rows,
        "http_paired": http_paired,
        "targets": TARGETS,
    }
    print(
        f"history: {setup['history']} ({setup['history_fingerprint']}), {setup['n_runs']} runs, "
        f"{setup['n_datasets']} datasets; load average {load[0]:.1f}"
    )
    print(f"{'mode':28s} {'p50 ms':>8s} {'p90 ms':>8s} {'p99 ms':>8s} {'req/s':>8s}")
    for name, q in (
        ("in-process", in_process["warm"]),
        ("in-process, new Sobol pool", in_process["cold_pool"]),
    ):
        print(f"{name:28s} {q['p50_ms']:8.2f} {q['p90_ms']:8.2f} {q['p99_ms']:8.2f} {'':>8s}")
    for r in http_rows:
        name = f"HTTP, {r['clients']} clients"
        print(
            f"{name:28s} {r['p50_ms']:8.2f} {r['p90_ms']:8.2f} {r['p99_ms']:8.2f} "
            f"{r['requests_per_s']:8.1f}"
        )
    print(f"in-process CPU per request: {in_process['cpu_ms_per_request']} ms")
    if paired is not None:
        print(f"A/B against {paired['baseline']} (same answers: {paired['identical_answers']}):")
        for mode in ("warm", "new_pool"):
            row = paired[mode]
            print(
                f"  {mode:9s} p50 {row['new']['p50_ms']:6.2f} ms vs {row['old']['p50_ms']:6.2f}; "
                f"CPU {row['new_cpu_ms']:6.2f} vs {row['old_cpu_ms']:6.2f} ms; "
                f"median ratio {row['median_ratio']:.2f} (CPU {row['median_cpu_ratio']:.2f})"
            )
    if http_paired is not None:
        med = http_paired["median_requests_per_s"]
        print(
            f"HTTP A/B against {http_paired['baseline']}, 4 clients, {args.http_rounds} blocks "
            f"each: median {med['new']:.0f} vs {med['old']:.0f} requests/s; today's faster in "
            f"{http_paired['rounds_new_faster']} of {args.http_rounds} rounds"
        )
    written = write_results(report, args.output_dir, result_name(args.history, args.label))
    print("wrote " + ", ".join(str(p) for p in written))
    ok = (
        in_process["warm"]["p50_ms"] <= TARGETS["p50_ms"]
        and in_process["warm"]["p99_ms"] <= TARGETS["p99_ms"]
        and in_process["cold_pool"]["p50_ms"] <= TARGETS["new_pool_p50_ms"]
    )
    if http_rows:  # without HTTP (--clients ''), only the in-process targets count
        busiest = max(http_rows, key=lambda r: r["requests_per_s"])
        ok = (
            ok
            and busiest["requests_per_s"] >= TARGETS["http_requests_per_s"]
            and busiest["p99_ms"] <= TARGETS["http_p99_ms"]
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
