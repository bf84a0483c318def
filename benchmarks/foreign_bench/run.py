"""Running the foreign benchmark: ask, measure the answers, the default, FLAML's
zero-shot and a random pool, then write the reports."""

from __future__ import annotations

import sys
import time
import zlib
from collections.abc import Mapping
from typing import Any

from benchmarks.foreign_bench.asking import (
    DirRegistry,
    answer_fields,
    ask,
    make_engine,
    request_body,
)
from benchmarks.foreign_bench.collection import Loaded, collection, load
from benchmarks.foreign_bench.measure import Bench, _now
from benchmarks.foreign_bench.optuna_warm import run_optuna
from benchmarks.foreign_bench.report import write_reports
from benchmarks.foreign_bench.settings import ROOT, Settings
from benchmarks.quality_bench.measure import _environment
from benchmarks.quality_bench.methods import _quiet
from benchmarks.quality_bench.metrics import (
    canonical,
    map_flaml,
)
from benchmarks.quality_bench.settings import FLAML_ESTIMATORS


def _random_pool(family: str, dataset: str, task: str, size: int) -> list[dict[str, Any]]:
    from hyperprior.training.spaces import get_space

    space = get_space(family)
    seed = zlib.crc32(f"foreign-random|{dataset}|{family}".encode()) % (2**31)
    default_text = canonical(space.default(task))
    pool, seen = [], {default_text}
    for cfg in space.sample(size + 8, seed, task):
        cfg = space.validate(dict(cfg), task)
        text = canonical(cfg)
        if text in seen:
            continue
        seen.add(text)
        pool.append(cfg)
        if len(pool) >= size:
            break
    return pool


def _flaml(family: str, data: Loaded) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    estimator = FLAML_ESTIMATORS.get(family)
    if estimator is None:
        return None, {"status": "unavailable", "note": f"FLAML has no zero-shot {family}"}
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from flaml.default import suggest_hyperparams
    except Exception as exc:  # noqa: BLE001 - any import failure means "not installed"
        return None, {"status": "unavailable", "note": f"flaml is not installed ({exc})"}
    flaml_task = "regression" if data.task == "regression" else "classification"
    try:
        with _quiet():
            params, _ = suggest_hyperparams(flaml_task, data.X, data.y, estimator)
    except Exception as exc:  # noqa: BLE001 - FLAML's failure is this method's result
        return None, {"status": "failed", "note": f"{type(exc).__name__}: {exc}"[:300]}
    config, extras, notes = map_flaml(family, dict(params or {}), data.task, int(data.X.shape[1]))
    return config, {
        "status": "ok",
        "flaml_params": dict(params or {}),
        "unmapped": extras,
        "mapping_notes": notes,
    }


def run(settings: Settings) -> dict[str, Any]:
    """Ask, measure, summarise and write the reports; returns the summary."""
    import warnings

    from hyperprior.training.spaces import get_space

    warnings.filterwarnings("ignore", category=UserWarning)
    path = settings.output_dir / f"{settings.prefix}.json"
    bench = Bench(path, workers=settings.workers, time_limit=settings.time_limit)
    bench.doc["settings"] = settings.to_dict()
    bench.doc["environment"] = _environment()
    engine = make_engine(settings.surrogates)
    registry: DirRegistry = engine.registry
    bench.doc["surrogates"] = {f: registry.sha256(f) for f in settings.families}
    # The answers depend on the policy code as much as on the surrogates: say which.
    bench.doc["code"] = _code_version()
    bench.doc["command"] = " ".join(["python benchmarks/foreign.py", *sys.argv[1:]])
    specs = collection(settings.datasets)
    bench.doc["datasets"] = {}
    records: dict[str, Any] = bench.doc["records"]
    point_jobs: list[tuple[str, str, Mapping[str, Any], str]] = []
    pools: list[list[tuple[str, str, Mapping[str, Any], str]]] = []
    for spec in specs:
        t0 = time.perf_counter()
        data = load(spec.name)
        bench.doc["datasets"][spec.name] = data.info()
        for family in settings.families:
            space = get_space(family)
            default = space.default(data.task)
            body = request_body(data, family, settings.top_n)
            started = time.perf_counter()
            error = None
            try:
                answer = ask(engine, body)
            except Exception as exc:  # noqa: BLE001 - what the user would see is the result
                # The suggest command would print this error and exit: no suggestion.
                error = f"{type(exc).__name__}: {exc}"[:500]
                answer = {"suggestions": [], "warnings": [], "error": error}
            ask_seconds = time.perf_counter() - started
            configs = [s["config"] for s in answer["suggestions"]]
            flaml_config, flaml_info = _flaml(family, data)
            pool = _random_pool(family, spec.name, data.task, settings.random_pool)
            rec = {
                "dataset": spec.name,
                "family": family,
                "task": data.task,
                "surrogate_sha256": registry.sha256(family),
                "meta_features": body["dataset"]["meta_features"],
                "default": bench.key_of(spec.name, family, default),
                "hyperprior": [bench.key_of(spec.name, family, c) for c in configs],
                "answer": answer_fields(answer),
                "hyperprior_error": error,
                "ask_seconds": round(ask_seconds, 3),
                "flaml": None
                if flaml_config is None
                else bench.key_of(spec.name, family, flaml_config),
                "flaml_info": flaml_info,
                "random_pool": [bench.key_of(spec.name, family, c) for c in pool],
            }
            records[f"{family}|{spec.name}"] = rec
            point_jobs.append((spec.name, family, default, "default"))
            point_jobs += [
                (spec.name, family, c, f"hyperprior#{i + 1}") for i, c in enumerate(configs)
            ]
            if flaml_config is not None:
                point_jobs.append((spec.name, family, flaml_config, "flaml"))
            pools.append([(spec.name, family, c, "random") for c in pool])
        if settings.progress:
            info = bench.doc["datasets"][spec.name]
            print(
                f"{spec.name:26s} {info['task']:10s} {info['rows']:5d} x {info['features']:4d} "
                f"asked in {time.perf_counter() - t0:.1f}s",
                flush=True,
            )
    bench.save()
    # Cheap, decisive configs first; the random pools after (an interrupted run still
    # has every method but random search).
    bench.measure_all(point_jobs, progress=settings.progress)
    # Random pools interleaved (the i-th config of every pool before any (i+1)-th): a run
    # stopped early has a like-sized uniform part of every pool, which gives an unbiased
    # estimate of its expected best-of-k for every k up to that size.
    interleaved = [pool[i] for i in range(settings.random_pool) for pool in pools if i < len(pool)]
    bench.measure_all(interleaved, progress=settings.progress)
    if settings.optuna:
        names = settings.optuna_datasets or tuple(spec.name for spec in specs)
        run_optuna(
            bench, engine, names, n_trials=settings.optuna_trials, progress=settings.progress
        )
    bench.doc["finished_at"] = _now()
    bench.save()
    return write_reports(bench.doc, settings.output_dir, settings.prefix, settings)


def _code_version() -> dict[str, Any]:
    import subprocess

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.strip()

    dirty = git("status", "--porcelain", "--", "training", "service", "client", "db")
    return {"commit": git("rev-parse", "HEAD") or None, "dirty": dirty.splitlines()}
