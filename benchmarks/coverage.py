"""Where the corpus covers the meta-feature space, and where the evaluation data lands.

The corpus is the shipped seed's datasets (or a database's). Datasets are binned by task,
rows, features and signal (the landmarkers: ``lm_1nn`` against ``lm_linear``, a 1-NN
well ahead of a linear model meaning a curved, low-noise problem), drawn on a 2-D map of
the standardised meta-features the policy measures distance in (its first two principal
components), with the foreign collection (``benchmarks/foreign.py``) overlaid, and each
foreign dataset's distance to its nearest corpus dataset listed, as the policy computes
it (``hyperprior.training.suggest.Portfolio.nearest``).

Usage::

    python benchmarks/coverage.py                       # the shipped seed
    python benchmarks/coverage.py --database-url sqlite:///boot.db

Writes ``benchmarks/results/coverage.json`` and ``coverage.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
ROW_BINS = (0, 1_000, 5_000, 50_000, math.inf)
FEATURE_BINS = (0, 20, 100, math.inf)


def corpus(args: argparse.Namespace) -> pd.DataFrame:
    """One row per corpus dataset: name, task, synthetic or not, meta-features."""
    if args.database_url:
        from hyperprior.db.engine import make_engine
        from hyperprior.db.store import Store

        frame = Store(make_engine(args.database_url)).runs_frame(status="ok")
        mf = [c for c in frame.columns if c.startswith("mf_")]
        first = frame.drop_duplicates("dataset_id")
        rows = [
            {
                "name": r["dataset_name"],
                "task": r["task"] if "task" in first.columns else r["dataset_task"],
                "meta": {c[3:]: r[c] for c in mf},
            }
            for _, r in first.iterrows()
        ]
    else:
        datasets = pd.read_parquet(Path(args.seed_dir) / "datasets.parquet")
        rows = [
            {"name": r.name, "task": r.task, "meta": json.loads(r.meta_features)}
            for r in datasets.itertuples(index=False)
        ]
    out = pd.DataFrame(rows)
    out["synthetic"] = out["name"].str.startswith("synthetic/")
    return out


def foreign_meta(names: list[str] | None) -> pd.DataFrame:
    """The foreign collection's datasets with their meta-features (computed as a user's)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import foreign

    from hyperprior.training.metafeatures import compute_metafeatures

    rows = []
    for spec in foreign.collection(names):
        data = foreign.load(spec.name)
        meta = compute_metafeatures(data.X, data.y, data.task, seed=0)
        rows.append({"name": spec.name, "task": data.task, "meta": meta, "synthetic": False})
    return pd.DataFrame(rows)


def _f(meta: dict[str, Any], key: str) -> float:
    value = meta.get(key)
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out if math.isfinite(out) else math.nan


def regime(meta: dict[str, Any], task: str) -> dict[str, str]:
    """The bins of one dataset."""
    rows, features = _f(meta, "n_rows"), _f(meta, "n_features")
    nn, linear = _f(meta, "lm_1nn"), _f(meta, "lm_linear")
    signal = "unknown"
    if math.isfinite(nn) and math.isfinite(linear):
        signal = "1-NN ahead" if nn > linear + 0.02 else "linear ahead or tied"

    def binned(value: float, edges: tuple[float, ...]) -> str:
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            if lo <= value < hi:
                return f"{lo:,.0f}+" if math.isinf(hi) else f"{lo:,.0f}-{hi:,.0f}"
        return "unknown"

    return {
        "task": task,
        "rows": binned(rows, ROW_BINS),
        "features": binned(features, FEATURE_BINS),
        "signal": signal,
    }


def main(argv: list[str] | None = None) -> int:
    """Bin the corpus, map it with the foreign collection, and write the results."""
    from hyperprior.training.features import core_metafeatures
    from hyperprior.training.suggest import Portfolio

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed-dir", default=str(ROOT / "training" / "seed"))
    parser.add_argument("--database-url")
    parser.add_argument("--foreign", nargs="*", default=None, help="foreign datasets (all)")
    parser.add_argument("--no-foreign", action="store_true")
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    base = corpus(args)
    evaluation = pd.DataFrame() if args.no_foreign else foreign_meta(args.foreign)
    index = Portfolio(
        "coverage",
        {r.name: {"name": r.name, "task": r.task, "meta": r.meta, "entries": []}
         for r in base.itertuples(index=False)},
    )  # fmt: skip
    bins = pd.DataFrame([regime(r.meta, r.task) for r in base.itertuples(index=False)])
    bins["synthetic"] = base["synthetic"].to_numpy()
    counts = {
        axis: bins.groupby([axis, "synthetic"]).size().unstack(fill_value=0).to_dict("index")
        for axis in ("task", "rows", "features", "signal")
    }
    nearest = []
    for r in evaluation.itertuples(index=False):
        nb = index.nearest(r.meta, r.task, 1)
        nearest.append(
            {
                "name": r.name,
                **regime(r.meta, r.task),
                "nearest": nb[0].name if nb else None,
                "distance": nb[0].distance if nb else None,
            }
        )

    # The 2-D map: the policy's standardised space, first two principal components.
    names = list(core_metafeatures())
    z = np.nan_to_num(np.vstack([index.standardise(m) for m in base["meta"]]), nan=0.0).clip(-6, 6)
    center = z.mean(axis=0)
    _, _, vt = np.linalg.svd(z - center, full_matrices=False)
    project = vt[:2].T
    xy = (z - center) @ project
    fxy = (
        (np.nan_to_num(np.vstack([index.standardise(m) for m in evaluation["meta"]]), nan=0.0)
         .clip(-6, 6) - center) @ project
        if len(evaluation) else np.empty((0, 2))
    )  # fmt: skip
    loadings = {
        f"pc{i + 1}": dict(
            sorted(
                ((n, round(float(v), 3)) for n, v in zip(names, vt[i], strict=True)),
                key=lambda kv: -abs(kv[1]),
            )[:5]
        )
        for i in range(2)
    }
    report = {
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "corpus": args.database_url or args.seed_dir,
        "n_datasets": int(len(base)),
        "n_synthetic": int(base["synthetic"].sum()),
        "counts": counts,
        "foreign_nearest": nearest,
        "map_loadings": loadings,
    }
    print(f"corpus: {len(base)} datasets ({int(base['synthetic'].sum())} synthetic)")
    for axis, table in counts.items():
        print(f"\nby {axis} (real / synthetic):")
        for key, row in table.items():
            print(f"  {key:24s} {row.get(False, 0):4d} / {row.get(True, 0):4d}")
    if nearest:
        print("\nforeign collection, nearest corpus dataset:")
        for n in sorted(nearest, key=lambda r: -(r["distance"] or 0)):
            print(f"  {n['name']:34s} {n['distance']:6.2f}  {n['nearest']}  ({n['signal']})")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    out = args.output_dir / "coverage.json"
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwrote {out}")
    plot = write_plot(base, xy, evaluation, fxy, args.output_dir / "coverage.png")
    if plot is not None:
        print(f"wrote {plot}")
    return 0


def write_plot(
    base: pd.DataFrame, xy: np.ndarray, evaluation: pd.DataFrame, fxy: np.ndarray, path: Path
) -> Path | None:
    """The map: corpus datasets by task (synthetic hollow), the foreign collection on top."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(9, 7))
    colors = {"binary": "C0", "multiclass": "C2", "regression": "C1"}
    for task, color in colors.items():
        for synthetic, face in ((False, color), (True, "none")):
            mask = ((base["task"] == task) & (base["synthetic"] == synthetic)).to_numpy()
            if mask.any():
                ax.scatter(
                    xy[mask, 0], xy[mask, 1], s=22, facecolors=face, edgecolors=color,
                    label=f"corpus {task}{' (synthetic)' if synthetic else ''} ({mask.sum()})",
                )  # fmt: skip
    if len(evaluation):
        ax.scatter(fxy[:, 0], fxy[:, 1], marker="x", s=45, color="C3",
                   label=f"foreign collection ({len(evaluation)})")  # fmt: skip
        for (x, y), name in zip(fxy, evaluation["name"], strict=True):
            ax.annotate(name.split("/")[-1], (x, y), fontsize=6, color="C3",
                        xytext=(3, 3), textcoords="offset points")  # fmt: skip
    ax.set_xlabel("first principal component of the standardised meta-features")
    ax.set_ylabel("second principal component")
    ax.set_title("Corpus coverage and the foreign collection")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    sys.exit(main())
