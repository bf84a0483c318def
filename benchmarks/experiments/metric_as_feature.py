"""Experiment: one surrogate per family with the metric as a feature, against one per metric.

Issue 15 leaves open how a request that names a metric is ranked: a surrogate per
(family, metric), as the retrain fits now, or one surrogate per family trained on every
metric's runs with the metric as an input. The second shares what the metrics have in
common (a config that overfits does so by every metric) and is one model to serve; the
first cannot confuse metrics whose best configs differ (ROC AUC against balanced
accuracy, see ``metric_surrogates.py``).

For each family, every run appears once per metric it measured (its quality normalised
within the (dataset, metric) group, as for any target), with one-hot ``metric_is_*``
columns; grouped CV holds a dataset out with all its metrics, on the same 10 folds by
source group as each metric's own surrogate, and each held-out (dataset, metric) is
judged by the top-1's regret in that metric. Both use ``spread_scale`` 0 for the
minimised metrics (log-loss, RMSE, MAE), as the retrain does; the pooled one uses 0 for
every metric, since a group's spread is in its metric's units (``own_flat``: the own
recipe with 0 too, to tell the two changes apart).

Measured on the 355-dataset seed (2026-12-08), 10 group folds, surrogate seeds 0, 1, 2
(the table is in the README, "The metric as a feature"): over the 28 (family, metric)
pairs the pooled surrogate's mean regret is 0.073 against 0.069; it loses most on
balanced accuracy and macro F1 for every tree family (random_forest 0.136 and 0.128
against 0.112 and 0.106), is ahead on accuracy (lightgbm 0.082 against 0.094) and
within 0.011 elsewhere. A surrogate per (family, metric) stays.

Usage::

    python benchmarks/experiments/metric_as_feature.py --families lightgbm,linear --seeds 0

Writes ``benchmarks/results/experiments/metric_as_feature.json`` and prints the table.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The sibling experiment sets up the paths and reads the runs the same way.
from metric_surrogates import RESULTS, ROOT, _as_dict, load_runs, write_results  # noqa: E402

from hyperprior.training.confidence import group_folds  # noqa: E402
from hyperprior.training.features import (  # noqa: E402
    MINIMISED_METRICS,
    TrainingSet,
    build_training_set,
    runs_for_target,
)
from hyperprior.training.retrain import targets_with_data  # noqa: E402
from hyperprior.training.surrogate import SurrogateParams, cross_validate  # noqa: E402

SEP = "#"  # run id suffix naming the metric a pooled row stands for


def pooled_set(runs: pd.DataFrame, family: str, targets: list[str], params) -> TrainingSet:
    """Every run once per metric, with one-hot metric columns appended to ``X``."""
    parts = []
    for target in targets:
        part = runs_for_target(runs, target).copy()
        part["id"] = part["id"].astype(str) + SEP + target
        parts.append(part)
    ts = build_training_set(
        pd.concat(parts, ignore_index=True), family, normalisation=params.normalisation
    )
    metric = np.array([str(r).rsplit(SEP, 1)[1] for r in ts.run_id])
    onehot = np.column_stack([(metric == t).astype(np.float64) for t in targets])
    return replace(
        ts,
        X=np.column_stack([ts.X, onehot]),
        feature_names=[*ts.feature_names, *(f"metric_is_{t}" for t in targets)],
    )


def _per_dataset(per_group: pd.DataFrame) -> pd.Series:
    return per_group.set_index("dataset")["regret_at_1"]


def run(runs: pd.DataFrame, family: str, seed: int, n_folds: int) -> list[dict]:
    """Both recipes for every metric of ``family``, paired per held-out dataset."""
    params = SurrogateParams.for_family(family, seed=seed)
    targets = targets_with_data(runs)
    t0 = time.perf_counter()
    pooled = pooled_set(runs, family, targets, replace(params, spread_scale=0.0))
    folds = group_folds(pooled, n_folds)
    report = cross_validate(pooled, replace(params, spread_scale=0.0), folds=folds)
    pooled_seconds = time.perf_counter() - t0
    # The metric of each per-group row, from the runs of its group.
    metric_of_group = {
        int(g): str(r).rsplit(SEP, 1)[1] for g, r in zip(pooled.group, pooled.run_id, strict=True)
    }
    per_group = report.per_group.assign(metric=report.per_group["group"].map(metric_of_group))
    rows = []
    for target in targets:
        t_params = params
        if target in MINIMISED_METRICS and params.spread_scale > 0:
            t_params = replace(params, spread_scale=0.0)  # as the retrain does
        t0 = time.perf_counter()
        ts = build_training_set(
            runs_for_target(runs, target), family, normalisation=t_params.normalisation
        )
        t_folds = group_folds(ts, n_folds)
        own = _per_dataset(cross_validate(ts, t_params, folds=t_folds).per_group)
        seconds = time.perf_counter() - t0
        # The own recipe with the pooled one's weighting too, to tell the two changes apart.
        flat = own
        if t_params.spread_scale > 0:
            flat_params = replace(t_params, spread_scale=0.0)
            flat = _per_dataset(cross_validate(ts, flat_params, folds=t_folds).per_group)
        pool = _per_dataset(per_group[per_group["metric"] == target])
        both = pd.concat(
            [own.rename("own"), flat.rename("own_flat"), pool.rename("pooled")], axis=1
        ).dropna()
        diff = both["pooled"] - both["own"]
        rows.append(
            {
                "family": family,
                "target": target,
                "seed": seed,
                "datasets": len(both),
                "own": round(float(both["own"].mean()), 5),
                "own_flat": round(float(both["own_flat"].mean()), 5),
                "pooled": round(float(both["pooled"].mean()), 5),
                "pooled_better": int((diff < -1e-12).sum()),
                "own_better": int((diff > 1e-12).sum()),
                "own_seconds": round(seconds, 1),
                "per_dataset": {
                    str(d): [round(float(a), 5), round(float(b), 5)]
                    for d, a, b in zip(both.index, both["own"], both["pooled"], strict=True)
                },
            }
        )
    for r in rows:
        r["pooled_seconds"] = round(pooled_seconds, 1)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Compare both recipes for every (family, metric) over the seeds."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed-dir", default=str(ROOT / "training" / "seed"))
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--families", default="lightgbm,linear")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--folds", type=int, default=10, help="group folds (0: one per group)")
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    frame = load_runs(args).reset_index(drop=True)
    frame["metrics"] = frame["metrics"].map(_as_dict)
    results = []
    for family in args.families.split(","):
        runs = frame[frame["family"] == family]
        for seed in (int(s) for s in args.seeds.split(",")):
            for row in run(runs, family, seed, args.folds):
                results.append(row)
                print(
                    f"{family:>13} {row['target']:>17} seed {seed}: {row['datasets']} datasets, "
                    f"regret@1 own {row['own']:.4f} (flat {row['own_flat']:.4f}), pooled "
                    f"{row['pooled']:.4f}; better on "
                    f"{row['own_better']} / {row['pooled_better']}",
                    flush=True,
                )
    table = pd.DataFrame([{k: v for k, v in r.items() if k != "per_dataset"} for r in results])
    summary = table.groupby(["family", "target"], sort=False)[
        ["datasets", "own", "own_flat", "pooled", "own_better", "pooled_better"]
    ].mean()
    print(summary.round(4).to_string())
    write_results(args, "metric_as_feature.json", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
