"""Experiment: how high the bar on ``p_beats_default`` should be learned.

The served policy answers with its best-scored candidate when that candidate's
``p_beats_default`` clears a bar, else with the library default (the ``guard`` rule).
The bar is learned on held-out groups as the lowest of ``MIN_P_GRID`` whose picks did
not lose to the default on ``TARGET_NOT_LOSE`` of the datasets. At 80% (the target until
2026-12-07) the lowest bar, 0.5, already reached it on the 345-dataset seed, so the bar
never rose, and the worst losses were picks just over it (``covid_testing`` at p 0.51,
``bow-multiclass-5000x200`` at 0.56, ``xor-binary-10000x8`` at 0.54).

This runs the served policy (out-of-fold members and classifier, cross-fitted ``p``,
bar and distance threshold learned on the other folds; one fold per source group) with
the not-lose target at each of ``--targets`` and each rule of ``--rules``, per surrogate
seed, and prints the mean over seeds: served regret, share not losing, worst loss, and
the bars learned.

Usage::

    python benchmarks/experiments/bar_target.py --families lightgbm,random_forest \
        --seeds 0,1,2 --targets 0.8,0.85,0.9,0.95
    python benchmarks/experiments/bar_target.py --frontier 0.5,0.6,0.7,0.75,0.8,0.85,0.9,0.95,0.99

Measured on the 345-dataset seed (2026-12-07; mean over surrogate seeds 0, 1, 2 of the
served policy's regret, share not losing, worst loss, datasets losing by more than 0.05;
``benchmarks/results/experiments/bar_target.json``), target 0.8 -> 0.95, guard rule:

- lightgbm: 0.0645 (91.7%, 0.47, 15.7) -> 0.0674 (95.6%, 0.29, 9.3); learned bars 0.5
  -> 0.6-0.7. The 0.84 loss (``covid_testing`` at p 0.51) is gone on every seed; the
  regret cost is 0.004, 0.004 and 0.001 by seed, the not-lose gain 3-5 points on each.
- random_forest: 0.0597 (95.5%) -> 0.0599 (95.7%); linear 0.0416 -> 0.0418 (95.5%
  both); keras_mlp 0.0425 -> 0.0432 (95.6% both); xgboost 0.0429 (94.8%) -> 0.0443
  (96.2%). Targets 0.85 and 0.9 moved almost nothing (the lowest bar already kept them).
- The ``filter`` rule's served regret was higher than ``guard``'s at every target, for
  both families.

With 10 group folds (``benchmarks/policy_cv.py``, the same seed), 80% -> 95%: lightgbm
served regret 0.0689 -> 0.0661, not losing 90.4% -> 95.9%, worst loss 0.84 -> 0.35;
random_forest 0.0625 -> 0.0647 (94.7% -> 96.2%); linear 0.0497 -> 0.0496; keras_mlp
0.0448 -> 0.0450.

The frontier (``--frontier 0.5,0.6,...,0.99``: the bar fixed, the distance threshold
still learned per fold; ``bar_frontier.json``), 355-dataset seed, mean of seeds 0-2,
served regret (not losing; worst loss; datasets losing by more than 0.05; share answered
with the default):

- lightgbm (default 0.112): 0.5: 0.068 (90.7%; 0.95; 16.3; 41%), 0.6: 0.065 (94.1%;
  0.37; 10.7; 52%), 0.7: 0.070 (96.7%; 0.23; 6.3; 68%), 0.8: 0.081 (98.5%; 0.19; 3.3;
  81%), 0.9: 0.101 (99.9%; 0.07; 0.3; 96%), 0.95: 0.112 (100%; 0; 0; 99.9%).
- random_forest (default 0.185): 0.5: 0.060 (95.0%; 0.74; 11.7; 58%), 0.7: 0.067
  (97.6%; 0.74; 6.7; 67%), 0.8: 0.080 (98.3%; 0.74; 4.3; 74%), 0.9: 0.113 (99.4%; 0.74;
  1.0; 85%), 0.99: 0.185 (the default everywhere).

So on this corpus issue 14's worst-loss target (<= 0.05) and its regret target (at most
half the default's) cannot both hold: lightgbm's worst loss falls to 0.05 only at bar
0.95, where it answers with the default on 99.9% of datasets, and random_forest's
``randhie`` pick (p 0.98: the fully grown default is the best of its configs) loses 0.74
at every bar short of never picking at all.

Shipped: ``TARGET_NOT_LOSE = 0.95``. The product's promise is a first suggestion that
does not lose to the library default on data it has not seen; five families gave up at
most 0.003 of mean regret for it, lightgbm a third fewer datasets losing by more than
0.05 and no catastrophic pick.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from surrogate_cv import load_runs  # noqa: E402

from hyperprior.training import confidence as C  # noqa: E402
from hyperprior.training.surrogate import SurrogateParams  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "experiments"


def _outcomes(rows: pd.DataFrame, rule: str, bars, kappa: float) -> pd.DataFrame:
    policies = {
        "surrogate": ("surrogate", 0.0),
        "default": ("default", 0.0),
        **{f"p>={t}": (rule, t) for t in bars},
    }
    return C.policy_outcomes(rows, policies, kappa=kappa)


def _served(chosen: pd.DataFrame, **keys) -> dict:
    """One result row: ``keys`` and the served policy's summary."""
    served = C.summarise(chosen)
    loss = (chosen["regret"] - chosen["default_regret"]).clip(lower=0.0)
    row = {
        **keys,
        "served_regret": served["mean_regret"],
        "not_lose": served["not_lose_share"],
        "worst_loss": served["worst_loss"],
        "losses_over_0.05": int((loss > 0.05).sum()),
        "beats_share": served["beats_share"],
        "default_share": served["default_share"],
    }
    print(row, flush=True)
    return row


def _held_out(frame: pd.DataFrame, family: str, seed: int):
    params = SurrogateParams.for_family(family, seed=seed)
    held = C.held_out_rows(frame, family, n_folds=0, params=params)
    return params, (None if held is None else held[2:])


def evaluate(frame: pd.DataFrame, family: str, seed: int, targets, rules) -> list[dict]:
    """The served policy's summary per (rule, target), for one surrogate seed."""
    params, held = _held_out(frame, family, seed)
    if held is None:
        return []
    rows, fold_of = held
    grid = list(C.MIN_P_GRID)
    out = []
    for rule in rules:
        outcomes = _outcomes(rows, rule, grid, params.kappa)
        for target in targets:
            chosen = C.nested_policy(outcomes, fold_of, grid, target)
            bars = sorted(float(b) for b in chosen["bar"].unique())
            out.append(
                _served(chosen, family=family, seed=seed, rule=rule, target=target, bars=bars)
            )
    return out


def frontier(frame: pd.DataFrame, family: str, seed: int, bars) -> list[dict]:
    """The served policy (guard rule, distance fallback) at each fixed bar, one seed."""
    params, held = _held_out(frame, family, seed)
    if held is None:
        return []
    rows, fold_of = held
    outcomes = _outcomes(rows, "guard", bars, params.kappa)
    # A one-bar grid: the bar is fixed, the distance threshold still learned per fold.
    return [
        _served(C.nested_policy(outcomes, fold_of, [bar]), family=family, seed=seed, bar=bar)
        for bar in bars
    ]


def main(argv: list[str] | None = None) -> int:
    """Run every (rule, target) over the seeds and print their means."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed-dir", default=str(ROOT / "training" / "seed"))
    parser.add_argument("--families", default="lightgbm,random_forest")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--targets", default="0.8,0.85,0.9,0.95")
    parser.add_argument("--rules", default="guard,filter")
    parser.add_argument(
        "--frontier",
        default="",
        help="instead: the served policy at each of these fixed bars (e.g. 0.5,0.7,0.9,0.99)",
    )
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.database_url = None
    frame = load_runs(args)
    families = args.families.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.frontier:
        bars = [float(b) for b in args.frontier.split(",")]
        results = [r for f in families for s in seeds for r in frontier(frame, f, s, bars)]
        return _write(results, ["family", "bar"], "bar_frontier.json", args)
    targets = [float(t) for t in args.targets.split(",")]
    rules = args.rules.split(",")
    results = [r for f in families for s in seeds for r in evaluate(frame, f, s, targets, rules)]
    return _write(results, ["family", "rule", "target"], "bar_target.json", args)


def _write(results: list[dict], keys: list[str], name: str, args: argparse.Namespace) -> int:
    """Print the mean over seeds by ``keys`` and write every run to ``name``."""
    table = (
        pd.DataFrame(results)
        .drop(columns=["seed", "bars"], errors="ignore")
        .groupby(keys, sort=False)
        .mean()
    )
    print(table.round(4).to_string())
    args.output_dir.mkdir(parents=True, exist_ok=True)
    path = args.output_dir / name
    path.write_text(json.dumps({"seed_dir": args.seed_dir, "runs": results}, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
