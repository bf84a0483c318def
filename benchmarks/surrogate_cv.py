"""Grouped-CV comparison of surrogate recipes on a real run history.

For each family, every recipe is cross-validated on the same folds (grouped by source
group, ``hyperprior.training.confidence.group_folds``: no package's datasets, nor their declared
near-twins, in both train and test) and scored within each test dataset on
its measured full-fidelity runs: Spearman, NDCG@5, top-1 regret of the pessimistic
pick (and of the mean's pick), best-of-5 regret, next to the library default's regret
and a random pick's. The recipes compare the target normalisation (rank percentile vs
min-max), the objective (L2 vs LightGBM lambdarank grouped by dataset), bagging, the
pessimism kappa, and the model size.

Usage::

    python benchmarks/surrogate_cv.py --database-url sqlite:///bootstrap.db
    python benchmarks/surrogate_cv.py --seed-dir training/seed --families lightgbm

Writes ``benchmarks/results/surrogate_cv.json`` (every recipe, overall and by task) and
``surrogate_cv.png`` (top-1 regret of each recipe against the default and a random pick,
and the default recipe by task).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hyperprior.training.families import BUILT_IN  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
FAMILIES = tuple(f.name for f in BUILT_IN)
COLUMNS = (
    "regret_at_1",
    "regret_at_1_mean",
    "regret_at_5",
    "ndcg_at_5",
    "spearman",
    "default_regret",
    "random_regret",
    "beats_default_share",
)


ABLATIONS = {
    "rank-l2 without interactions (ix_*)": ("ix_",),
    "rank-l2 without meta-features (mf_*)": ("mf_",),
}


def ablate(ts: Any, prefixes: tuple[str, ...]) -> Any:
    """``ts`` without the columns whose names start with ``prefixes``."""
    keep = [i for i, n in enumerate(ts.feature_names) if not n.startswith(prefixes)]
    return replace(ts, X=ts.X[:, keep], feature_names=[ts.feature_names[i] for i in keep])


def recipes() -> dict[str, Any]:
    """The recipes compared, by name."""
    from hyperprior.training.surrogate import SurrogateParams

    base = SurrogateParams()
    return {
        "rank-l2 (default)": base,
        "minmax-l2": replace(base, normalisation="minmax"),
        "rank-lambdarank": replace(base, objective="lambdarank"),
        "rank-l2 no bagging (1 model)": replace(
            base, n_members=1, n_rounds=160, learning_rate=0.05
        ),
        "rank-l2 kappa=0": replace(base, kappa=0.0),
        "rank-l2 kappa=2": replace(base, kappa=2.0),
        "rank-l2 bigger (80 rounds, 31 leaves)": replace(base, n_rounds=80, num_leaves=31),
        "rank-l2 smaller (20 rounds)": replace(base, n_rounds=20, learning_rate=0.3),
        "rank-l2 bootstrap over datasets": replace(base, dataset_fraction=0.0),
        **{name: base for name in ABLATIONS},
    }


def load_runs(args: argparse.Namespace) -> Any:
    """The runs frame from a database or a seed directory."""
    if args.database_url:
        from hyperprior.db.engine import make_engine
        from hyperprior.db.store import Store

        return Store(make_engine(args.database_url)).runs_frame(status=None)
    import pandas as pd

    from hyperprior.training.seed import read_seed

    datasets, runs = read_seed(Path(args.seed_dir))
    extra = getattr(args, "extra_runs", None)
    if extra is not None:
        # Runs in the seed's own format (an experiment's, kept beside its results).
        more = pd.read_parquet(extra)
        runs = pd.concat([runs, more[~more["id"].isin(runs["id"])]], ignore_index=True)
    meta = pd.DataFrame(
        [
            {
                "dataset_name": r.name,
                "task": r.task,
                **{f"mf_{k}": v for k, v in json.loads(r.meta_features).items()},
            }
            for r in datasets.itertuples(index=False)
        ]
    )
    runs = runs.rename(columns={"dataset": "dataset_name"})
    runs["config"] = [json.loads(c) for c in runs["config"]]
    frame = runs.merge(meta, on="dataset_name", how="left")
    frame["dataset_id"] = frame["dataset_name"]
    return frame


def main(argv: list[str] | None = None) -> int:
    """Compare the recipes and write the results."""
    from hyperprior.training.confidence import group_folds
    from hyperprior.training.features import build_training_set
    from hyperprior.training.surrogate import cross_validate, cv_subset

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--database-url")
    source.add_argument("--seed-dir")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    frame = load_runs(args)
    report: dict[str, Any] = {"created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    for family in args.families.split(","):
        sets: dict[str, Any] = {}
        rows: dict[str, dict[str, Any]] = {}
        folds = None
        for name, params in recipes().items():
            if params.normalisation not in sets:
                sets[params.normalisation] = build_training_set(
                    frame, family, normalisation=params.normalisation
                )
            ts = cv_subset(sets[params.normalisation], params)
            if name in ABLATIONS:
                ts = ablate(ts, ABLATIONS[name])
            if ts.n_datasets < 3:
                break
            if folds is None:
                folds = group_folds(ts, params.cv_folds)
            started = time.perf_counter()
            cv = cross_validate(ts, params, folds=folds)
            rows[name] = {k: cv.metrics.get(k) for k in COLUMNS}
            rows[name]["seconds"] = round(time.perf_counter() - started, 1)
            rows[name]["by_task"] = by_task(cv.per_group)
        if not rows:
            print(f"{family}: too few datasets")
            continue
        ts = sets["rank"]
        report[family] = {
            "n_runs": len(ts),
            "n_datasets": ts.n_datasets,
            "folds": len(folds or []),
            "recipes": rows,
        }
        print(f"\n{family}: {len(ts)} runs, {ts.n_datasets} datasets, {len(folds or [])} folds")
        print(f"{'recipe':40s} " + " ".join(f"{c[:12]:>12s}" for c in COLUMNS))
        for name, row in rows.items():
            cells = " ".join(
                f"{row[c]:12.4f}" if row[c] is not None else f"{'':>12s}" for c in COLUMNS
            )
            print(f"{name:40s} {cells}")
        print(f"\n{family}, rank-l2 (default) by task:")
        print(f"{'task':12s} {'datasets':>8s} {'regret@1':>9s} {'default':>9s} {'beats':>7s}")
        for task, t in rows["rank-l2 (default)"]["by_task"].items():
            print(
                f"{task:12s} {t['n_datasets']:8d} {t['regret_at_1']:9.4f} "
                f"{t['default_regret']:9.4f} {t['beats_default_share']:7.2f}"
            )
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "surrogate_cv.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.output_dir / 'surrogate_cv.json'}")
    plot = write_plot(report, args.output_dir / "surrogate_cv.png")
    if plot is not None:
        print(f"wrote {plot}")
    return 0


def by_task(per_group: Any) -> dict[str, dict[str, Any]]:
    """Mean top-1 regret, the default's, and the share of datasets where top-1 wins, by task."""
    out: dict[str, dict[str, Any]] = {}
    if per_group.empty or "default_regret" not in per_group:
        return out
    for task, g in per_group.groupby("task", sort=True):
        both = g[["regret_at_1", "default_regret"]].dropna()
        out[str(task)] = {
            "n_datasets": int(g["dataset"].nunique()),
            "regret_at_1": round(float(g["regret_at_1"].mean()), 5),
            "default_regret": round(float(both["default_regret"].mean()), 5),
            "beats_default_share": round(
                float((both["regret_at_1"] < both["default_regret"]).mean()), 5
            ),
        }
    return out


def write_plot(report: dict[str, Any], path: Path) -> Path | None:
    """Bars of top-1 regret per recipe (with the default's and a random pick's), and by task."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    families = [f for f in FAMILIES if f in report]
    if not families:
        return None
    fig, axes = plt.subplots(
        len(families), 2, figsize=(13, 3.8 * len(families)), squeeze=False,
        gridspec_kw={"width_ratios": [3, 1.4]},
    )  # fmt: skip
    for row, family in enumerate(families):
        fam = report[family]
        recipes_ = fam["recipes"]
        names = list(recipes_)
        ax = axes[row][0]
        ax.barh(names, [recipes_[n]["regret_at_1"] for n in names], color="C3")
        first = recipes_[names[0]]
        ax.axvline(first["default_regret"], color="grey", ls="-.", label="library default")
        ax.axvline(first["random_regret"], color="k", ls=":", label="random config")
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=7)
        ax.set_xlabel("mean top-1 regret (grouped CV, held-out datasets)")
        ax.set_title(f"{family}: {fam['n_runs']} runs, {fam['n_datasets']} datasets")
        ax.legend(fontsize=7)
        ax = axes[row][1]
        tasks = first.get("by_task", {})
        labels = list(tasks)
        x = range(len(labels))
        ax.bar([i - 0.2 for i in x], [tasks[t]["regret_at_1"] for t in labels], 0.4,
               color="C3", label="surrogate top-1")  # fmt: skip
        ax.bar([i + 0.2 for i in x], [tasks[t]["default_regret"] for t in labels], 0.4,
               color="grey", label="library default")  # fmt: skip
        ax.set_xticks(list(x), [f"{t}\n({tasks[t]['n_datasets']})" for t in labels], fontsize=7)
        ax.set_title(f"{family}: {names[0]} by task", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    sys.exit(main())
