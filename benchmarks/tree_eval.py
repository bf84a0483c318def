"""Is a pure-numpy tree evaluator cheaper than LightGBM's own predict? (issue 19)

The shipped surrogate's trees are parsed from its LightGBM text into flat node arrays
and evaluated depth-synchronously over (rows x trees) with numpy: every step gathers
each (row, tree)'s node, its feature value and threshold, and moves left or right
(missing values as LightGBM sends them: ``decision_type`` bits for the default side
and the missing type; the surrogate has no categorical splits). Member outputs are
summed tree by tree in LightGBM's order, so the predictions are checked bit for bit.

Timed on the shapes of one suggestion request: the screen (2,048 Sobol rows through
the first member's first 20 trees) and the ensemble (112 and 72 rows through all
4 x 40 trees), against ``Booster.predict(num_threads=1)``; the minimum of ``--repeats``
runs, so load from other work on the machine biases neither side.

Usage::

    python benchmarks/tree_eval.py

Writes ``benchmarks/results/tree_eval.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"


class NumpyForest:
    """Flat node arrays of a LightGBM text model (numerical splits only)."""

    def __init__(self, text: str) -> None:
        feat, thr, left, right, nan_left, value, roots = [], [], [], [], [], [], []
        for block in text.split("\nTree=")[1:]:
            kv = dict(line.split("=", 1) for line in block.split("\n")[1:] if "=" in line)
            if kv.get("num_cat", "0") != "0":
                raise ValueError("categorical splits are not handled here")
            off = len(feat)
            n_leaves = int(kv["num_leaves"])
            leaves = [float(x) for x in kv["leaf_value"].split()]
            first_leaf = off + n_leaves - 1
            roots.append(off)
            if n_leaves > 1:
                split = [int(x) for x in kv["split_feature"].split()]
                threshold = [float(x) for x in kv["threshold"].split()]
                decision = [int(x) for x in kv["decision_type"].split()]
                lc = [int(x) for x in kv["left_child"].split()]
                rc = [int(x) for x in kv["right_child"].split()]

                def node(c: int, first_leaf: int = first_leaf, off: int = off) -> int:
                    return off + c if c >= 0 else first_leaf + ~c

                for i in range(n_leaves - 1):
                    missing, default_left = (decision[i] >> 2) & 3, bool(decision[i] & 2)
                    if missing == 1:
                        raise ValueError("zero-as-missing splits are not handled here")
                    feat.append(split[i])
                    thr.append(threshold[i])
                    left.append(node(lc[i]))
                    right.append(node(rc[i]))
                    # NaN: the default side (missing type NaN), else compared as 0.0.
                    nan_left.append(default_left if missing == 2 else 0.0 <= threshold[i])
                    value.append(0.0)
            for j, v in enumerate(leaves):  # leaves loop onto themselves
                here = first_leaf + j
                feat.append(0)
                thr.append(np.inf)
                left.append(here)
                right.append(here)
                nan_left.append(True)
                value.append(v)
        self.feat = np.array(feat, dtype=np.int64)
        self.thr = np.array(thr)
        self.left = np.array(left, dtype=np.int64)
        self.right = np.array(right, dtype=np.int64)
        self.nan_left = np.array(nan_left)
        self.value = np.array(value)
        self.roots = np.array(roots, dtype=np.int64)
        self.depth = self._max_depth()

    def _max_depth(self) -> int:
        node, depth = self.roots.copy(), 0
        frontier = [node]
        while True:
            nxt = np.concatenate([self.left[frontier[-1]], self.right[frontier[-1]]])
            nxt = np.unique(nxt[~np.isin(nxt, frontier[-1])])
            if not len(nxt):
                return depth
            frontier.append(nxt)
            depth += 1

    def leaf_values(self, X: np.ndarray, trees: np.ndarray) -> np.ndarray:
        """``(n_rows, len(trees))`` leaf value of each row in each tree."""
        n, width = X.shape
        node = np.broadcast_to(self.roots[trees], (n, len(trees))).copy()
        base = (np.arange(n) * width)[:, None]
        flat = X.ravel()
        for _ in range(self.depth):
            x = flat[base + self.feat[node]]
            go_left = (x <= self.thr[node]) | (np.isnan(x) & self.nan_left[node])
            node = np.where(go_left, self.left[node], self.right[node])
        return self.value[node]

    def predict(self, X: np.ndarray, k: int, rounds: int | None = None) -> np.ndarray:
        """Raw outputs ``(n, k)`` of a model with ``k`` trees per iteration."""
        n_trees = len(self.roots) if rounds is None else rounds * k
        values = self.leaf_values(X, np.arange(n_trees))
        out = np.zeros((len(X), k))
        for t in range(n_trees):  # LightGBM's order of summation
            out[:, t % k] += values[:, t]
        return out


def _best_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return round(best * 1000, 3)


def main(argv: list[str] | None = None) -> int:
    """Check the numpy evaluator against LightGBM and time both."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="lightgbm")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    import lightgbm as lgb

    from hyperprior.training.seed import SEED_DIR
    from hyperprior.training.surrogate import load, member_text

    surrogate = load(SEED_DIR / "surrogates", args.family)
    k = surrogate.n_outputs
    forest = NumpyForest(surrogate.text)
    member0 = lgb.Booster(model_str=member_text(surrogate.text, 0, k))
    forest0 = NumpyForest(member_text(surrogate.text, 0, k))
    rng = np.random.default_rng(0)
    width = len(surrogate.feature_names)
    rows = []
    for name, n, screen in (
        ("screen", 2048, True),
        ("ensemble", 112, False),
        ("children", 72, False),
    ):
        X = rng.normal(0.0, 2.0, (n, width))
        X[rng.random(X.shape) < 0.1] = np.nan  # missing values take the default side
        if screen:
            rounds = 20
            want = member0.predict(X, num_iteration=rounds, raw_score=True, num_threads=1)
            got = forest0.predict(X, 1, rounds)[:, 0]
            lgb_ms = _best_ms(
                lambda X=X: member0.predict(X, num_iteration=20, raw_score=True, num_threads=1),
                args.repeats,
            )
            np_ms = _best_ms(lambda X=X: forest0.predict(X, 1, 20), args.repeats)
        else:
            want = surrogate.booster.predict(X, raw_score=True, num_threads=1)
            got = forest.predict(X, k)
            lgb_ms = _best_ms(
                lambda X=X: surrogate.booster.predict(X, raw_score=True, num_threads=1),
                args.repeats,
            )
            np_ms = _best_ms(lambda X=X: forest.predict(X, k), args.repeats)
        rows.append(
            {
                "shape": name,
                "rows": n,
                "max_abs_diff": float(np.max(np.abs(np.asarray(want).ravel() - got.ravel()))),
                "lightgbm_ms": lgb_ms,
                "numpy_ms": np_ms,
                "numpy_over_lightgbm": round(np_ms / lgb_ms, 2),
            }
        )
    report = {
        "benchmark": "tree_eval",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "surrogate_sha256": surrogate.sha256,
        "trees": len(forest.roots),
        "max_depth": forest.depth,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "rows": rows,
    }
    print(f"{args.family}: {len(forest.roots)} trees, max depth {forest.depth}")
    print(f"{'shape':10s} {'rows':>6s} {'max diff':>10s} {'LightGBM ms':>12s} {'numpy ms':>9s}")
    for r in rows:
        print(
            f"{r['shape']:10s} {r['rows']:6d} {r['max_abs_diff']:10.1e} "
            f"{r['lightgbm_ms']:12.3f} {r['numpy_ms']:9.3f}"
        )
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "tree_eval.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(r["max_abs_diff"] <= 1e-9 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
