"""Zero-shot quality on real data: do the suggestions beat the library default?

Leave one dataset out: for each of ``--datasets`` catalog datasets (drawn at random from
those in the history), a surrogate is fitted on the history *without* that dataset,
suggestions are asked for its meta-features, and the top suggestion, the best of the
top 3 and the library default are trained and scored by 3-fold CV on the real data
(with another seed than the history's, so the history's noise cannot leak in). The
history's best and median full-fidelity scores on that dataset are shown for scale.

Usage::

    python benchmarks/suggest_quality.py --database-url sqlite:///bootstrap.db
    python benchmarks/suggest_quality.py --seed-dir training/seed --families lightgbm

Writes ``benchmarks/results/suggest_quality.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.surrogate_cv import load_runs  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def held_out(frame: Any, family: str, name: str) -> dict[str, Any]:
    """Suggest for ``name`` with a surrogate that never saw it; score on the real data."""
    from training.datasets import load_dataset
    from training.families import evaluate
    from training.features import build_training_set
    from training.spaces import get_space
    from training.suggest import Portfolio, SuggestionPolicy, SuggestionRequest
    from training.surrogate import SurrogateParams, fit

    rest = frame[frame["dataset_name"] != name]
    surrogate = fit(build_training_set(rest, family), SurrogateParams())
    ok = rest[rest["status"] == "ok"]
    policy = SuggestionPolicy(
        family, surrogate=surrogate, portfolio=Portfolio.from_frame(ok, family)
    )
    mine = frame[frame["dataset_name"] == name]
    first = mine.iloc[0]
    meta = {c[3:]: first[c] for c in frame.columns if c.startswith("mf_") and first[c] == first[c]}
    task = str(first["task"])
    answer = policy.suggest(SuggestionRequest(family, task, meta, n=3))
    data = load_dataset(name)

    def score(config: dict[str, Any]) -> float:
        result = evaluate(family, config, data.X, data.y, task, folds=3, seed=1)
        return float(result.score) if result.score is not None else float("nan")

    default = score(get_space(family).default(task))
    suggested = [score(s.config) for s in answer.suggestions]
    measured = mine[(mine["fidelity"] >= 1.0) & (mine["status"] == "ok")]["score"]
    return {
        "dataset": name,
        "task": task,
        "metric": str(first["metric"]),
        "default": round(default, 5),
        "top1": round(suggested[0], 5),
        "best_of_3": round(float(np.nanmax(suggested)), 5),
        "history_best": round(float(measured.max()), 5),
        "history_median": round(float(measured.median()), 5),
        "top1_source": answer.suggestions[0].source,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--database-url")
    source.add_argument("--seed-dir")
    parser.add_argument("--families", default="lightgbm,random_forest,linear")
    parser.add_argument("--datasets", type=int, default=12, help="held-out datasets per family")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    frame = load_runs(args)
    report: dict[str, Any] = {"created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    for family in args.families.split(","):
        runs = frame[frame["family"] == family]
        names = sorted(runs["dataset_name"].unique())
        if len(names) < 4:
            print(f"{family}: too few datasets")
            continue
        rng = np.random.default_rng(args.seed)
        chosen = rng.choice(names, size=min(args.datasets, len(names)), replace=False)
        rows = [held_out(runs, family, str(name)) for name in chosen]
        top1 = np.array([r["top1"] - r["default"] for r in rows])
        best3 = np.array([r["best_of_3"] - r["default"] for r in rows])
        summary = {
            "datasets": len(rows),
            "top1_beats_default": round(float((top1 > 0).mean()), 3),
            "best_of_3_beats_default": round(float((best3 > 0).mean()), 3),
            "mean_gain_top1": round(float(np.nanmean(top1)), 4),
            "median_gain_top1": round(float(np.nanmedian(top1)), 4),
            "mean_gain_best_of_3": round(float(np.nanmean(best3)), 4),
        }
        report[family] = {"summary": summary, "datasets": rows}
        print(f"\n{family} ({len(rows)} held-out datasets)")
        header = ("default", "top1", "best3", "hist best")
        print(f"{'dataset':36s} {'task':10s} " + " ".join(f"{h:>9s}" for h in header))
        for r in rows:
            print(
                f"{r['dataset'][:36]:36s} {r['task']:10s} {r['default']:9.4f} {r['top1']:9.4f} "
                f"{r['best_of_3']:9.4f} {r['history_best']:9.4f}"
            )
        print(summary)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "suggest_quality.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.output_dir / 'suggest_quality.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
