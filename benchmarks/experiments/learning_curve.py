"""Experiment: does held-out regret still fall with more training groups? (issue 14)

Leave-one-group-out regret on the whole corpus says how well the surrogate ranks configs
on an unseen dataset when it has trained on every other group. This splits the source
groups into ``k`` parts of about equal dataset counts (groups shuffled with
``--split-seed``) and runs the same leave-one-group-out evaluation
(``confidence.evaluate_policies``, ``--folds 0``) inside each part alone, so every
dataset is held out once per ``k`` while the surrogate trains on about ``1/k`` of the
corpus. Every ``k`` is judged on the same datasets with the same candidates, so the
means are paired: regret against the training share is the corpus's learning curve.
If it is still falling at ``k = 1``, more datasets is the lever; if it is flat, the
inputs cannot say more about an unseen dataset and a larger corpus alone will not help.

Reports per ``k`` and surrogate seed: mean regret of the surrogate's top-1, of the served
policy (learned bar, distance fallback) and of the library default, and the served
policy's share not losing; written to
``benchmarks/results/experiments/learning_curve_<family>.json``.

Measured on the 355-dataset seed (2026-12-07), lightgbm, groups split with seed 0, mean
of surrogate seeds 0, 1, 2 (the default's regret 0.112 on every k):

- a quarter of the groups (about 89 datasets per part): top-1 0.0808, served 0.0796;
- half (about 178): top-1 0.0706, served 0.0710;
- all (355; the same numbers as ``policy_cv.py --folds 0``): top-1 0.0689, served 0.0673.

Each doubling of the corpus bought about half as much as the one before it (served
-0.0086, then -0.0037; top-1 -0.0102, then -0.0017). A curve that keeps shrinking by
that ratio levels off near 0.065 (served) and 0.069 (top-1), above half the default's
regret (0.056): more datasets of the kinds the corpus holds will not reach the target.

keras_mlp, the same day (113 datasets with keras runs; the default's regret 0.0485):
top-1 0.0648 / 0.0508 / 0.0410 and served 0.0474 / 0.0495 / 0.0432 on a quarter / half
/ all of the groups. The top-1 gains 0.014 and then 0.010 a doubling: far from levelling
off, and on half the groups the served policy is worse than the default. keras_mlp is
short of datasets (issue 15 asks for it on all 355), not of a recipe.

Usage::

    python benchmarks/experiments/learning_curve.py --family lightgbm --parts 1,2,4 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))

RESULTS = ROOT / "benchmarks" / "results" / "experiments"
SERVED = "hyperprior (learned bar, distance fallback)"
TOP1 = "surrogate top-1 (before)"
DEFAULT = "library default"


def split_groups(names: pd.Series, k: int, seed: int) -> dict[str, int]:
    """Dataset name -> part, whole source groups per part, parts of about equal size."""
    from hyperprior.training.datasets import dataset_group

    names = names.drop_duplicates()
    groups = names.map(dataset_group)
    sizes = groups.value_counts()
    order = list(sizes.index)
    np.random.default_rng(seed).shuffle(order)
    # Largest groups first (stable after the shuffle), each to the smallest part so far.
    order.sort(key=lambda g: -sizes[g])
    load = [0] * k
    part_of: dict[str, int] = {}
    for g in order:
        p = int(np.argmin(load))
        part_of[g] = p
        load[p] += int(sizes[g])
    return {n: part_of[g] for n, g in zip(names, groups, strict=True)}


def evaluate(frame: pd.DataFrame, family: str, k: int, seed: int, split_seed: int):
    """Mean regret of the three policies over every dataset, each held out within its part
    (means weighted by the datasets each part evaluated)."""
    from hyperprior.training.confidence import evaluate_policies
    from hyperprior.training.surrogate import SurrogateParams

    params = SurrogateParams.for_family(family, seed=seed)
    parts = split_groups(frame["dataset_name"].astype(str), k, split_seed)
    part = frame["dataset_name"].astype(str).map(parts)
    out: dict[str, Any] = {"n_datasets": 0, "parts": []}
    sums = {SERVED: 0.0, TOP1: 0.0, DEFAULT: 0.0, "not_lose": 0.0}
    for p in range(k):
        result = evaluate_policies(frame[part == p], family, n_folds=0, params=params)
        if result is None:
            continue
        n = result["policies"][SERVED]["n_datasets"]
        out["parts"].append({"part": p, "n_datasets": n, "n_groups": result["n_groups"]})
        out["n_datasets"] += n
        for name in (SERVED, TOP1, DEFAULT):
            sums[name] += result["policies"][name]["mean_regret"] * n
        sums["not_lose"] += result["policies"][SERVED]["not_lose_share"] * n
    total = max(out["n_datasets"], 1)
    out.update(
        served_regret=round(sums[SERVED] / total, 5),
        top1_regret=round(sums[TOP1] / total, 5),
        default_regret=round(sums[DEFAULT] / total, 5),
        served_not_lose=round(sums["not_lose"] / total, 4),
    )
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the learning curve and write its JSON."""
    from surrogate_cv import load_runs

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed-dir", default=str(ROOT / "training" / "seed"))
    parser.add_argument("--family", default="lightgbm")
    parser.add_argument("--parts", default="1,2,4", help="k values, comma-separated")
    parser.add_argument("--seeds", default="0,1,2", help="surrogate seeds, comma-separated")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    try:
        ks = [int(x) for x in args.parts.split(",") if x.strip()]
        seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    except ValueError:
        parser.error("--parts and --seeds take integers separated by commas")
    if not ks or min(ks) < 1 or not seeds:
        parser.error("--parts needs values of at least 1, --seeds at least one seed")

    frame = load_runs(argparse.Namespace(database_url=None, seed_dir=args.seed_dir))
    frame = frame[frame["family"] == args.family]
    report: dict[str, Any] = {
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "family": args.family,
        "source": args.seed_dir,
        "split_seed": args.split_seed,
        "runs": [],
    }
    head = ("k", "seed", "datasets", "default", "top-1", "served", "not lose")
    print(f"{head[0]:>3} {head[1]:>4} " + " ".join(f"{h:>8}" for h in head[2:]))
    for k in ks:
        for seed in seeds:
            started = time.perf_counter()
            row = {"k": k, "seed": seed, **evaluate(frame, args.family, k, seed, args.split_seed)}
            row["seconds"] = round(time.perf_counter() - started, 1)
            report["runs"].append(row)
            print(
                f"{k:>3} {seed:>4} {row['n_datasets']:>8} {row['default_regret']:>8.4f} "
                f"{row['top1_regret']:>8.4f} {row['served_regret']:>8.4f} "
                f"{row['served_not_lose']:>8.3f}",
                flush=True,
            )
    runs = pd.DataFrame(report["runs"])
    means = runs.groupby("k")[["top1_regret", "served_regret", "served_not_lose"]].mean()
    report["mean_over_seeds"] = {
        int(k): {c: round(float(v), 5) for c, v in r.items()} for k, r in means.iterrows()
    }
    print("\nmean over seeds")
    for k, r in report["mean_over_seeds"].items():
        print(f"k={k}: top-1 {r['top1_regret']:.4f}, served {r['served_regret']:.4f}")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    out = args.output_dir / f"learning_curve_{args.family}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    plot = write_plot(report, out.with_suffix(".png"))
    if plot is not None:
        print(f"wrote {plot}")
    return 0


def write_plot(report: dict[str, Any], path: Path) -> Path | None:
    """Regret against the corpus share trained on, one line per policy (None without
    matplotlib: the JSON is written first)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    runs = pd.DataFrame(report["runs"])
    fig, ax = plt.subplots(figsize=(6, 4))
    for column, label in (("top1_regret", "surrogate top-1"), ("served_regret", "served policy")):
        mean = runs.groupby("k")[column].mean()
        share = 1.0 / mean.index.to_numpy()
        ax.plot(share, mean.to_numpy(), marker="o", label=label)
        ax.scatter(1.0 / runs["k"], runs[column], s=8, alpha=0.4)
    default = runs["default_regret"].mean()
    ax.axhline(default, ls="--", color="grey", label="library default")
    ax.axhline(default / 2, ls=":", color="black", label="half the default's (target)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("share of the corpus's groups trained on")
    ax.set_ylabel("mean normalised regret (held out)")
    ax.set_title(f"{report['family']}: leave-one-group-out learning curve")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


if __name__ == "__main__":
    raise SystemExit(main())
