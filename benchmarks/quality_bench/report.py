"""Scoring and reports of the quality benchmark: regret tables, ranks, win rates,
trials-equivalents, the markdown report and the plots."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.quality_bench.history import History
from benchmarks.quality_bench.measure import _compact_trials, _json_default, _now
from benchmarks.quality_bench.metrics import expected_min_of_k, regret, trials_equivalent
from benchmarks.quality_bench.settings import CURVE_METHODS, OPTIMIZERS, POINT_METHODS

# ---------------------------------------------------------------------------------------
# Scoring and reports


def _bounds(doc: Mapping[str, Any], history: History | None) -> dict[tuple[str, str], tuple]:
    """Best and worst full-fidelity score per (family, dataset) over all configs."""
    scores: dict[tuple[str, str], list[float]] = {}
    for m in doc["measurements"].values():
        if m["status"] == "ok" and m.get("score") is not None:
            scores.setdefault((m["family"], m["dataset"]), []).append(float(m["score"]))
    if history is not None and not doc["settings"].get("max_estimators"):
        f = history.frame
        full = f[(f["fidelity"] >= 1.0 - 1e-9) & (f["status"] == "ok")]
        for (fam, ds), group in full.groupby(["family", "dataset_name"]):
            scores.setdefault((str(fam), str(ds)), []).extend(float(x) for x in group["score"])
    return {k: (max(v), min(v), len(v)) for k, v in scores.items()}


def summarise(doc: Mapping[str, Any], history: History | None) -> dict[str, Any]:
    """Regrets, ranks, win rates, trials-equivalents and the issue's targets, per family."""
    import numpy as np
    from scipy.stats import rankdata

    bounds = _bounds(doc, history)
    records = doc["records"] if isinstance(doc["records"], list) else list(doc["records"].values())
    by: dict[tuple[str, str, str], Mapping[str, Any]] = {
        (r["family"], r["dataset"], r["method"]): r for r in records
    }
    out: dict[str, Any] = {}
    selected = doc.get("datasets", {})
    for family in doc["settings"]["families"]:
        datasets = sorted({r["dataset"] for r in records if r["family"] == family})
        if family in selected:
            datasets = [d for d in datasets if d in set(selected[family])]
        per_dataset: dict[str, dict[str, Any]] = {}
        for ds in datasets:
            if (family, ds) not in bounds:
                continue
            best, worst, n = bounds[(family, ds)]
            row: dict[str, Any] = {"best": best, "worst": worst, "n_configs": n, "regret": {}}
            default = by.get((family, ds, "default"))
            row["default_score"] = default.get("score") if default else None
            for method in _point_methods(records):
                r = by.get((family, ds, method))
                if r is None or r["status"] not in ("ok", "failed"):
                    continue
                row["regret"][method] = regret(r.get("score"), best, worst)
                row.setdefault("score", {})[method] = r.get("score")
            r = by.get((family, ds, "random_search"))
            if r is not None and r["status"] == "ok":
                regrets = [regret(p["score"], best, worst) for p in r["pool"]]
                for k in r["ks"]:
                    e = expected_min_of_k(regrets, k)
                    if e is not None:
                        row["regret"][f"random_search@{k}"] = e
            for opt in OPTIMIZERS:
                r = by.get((family, ds, opt))
                if r is None or r["status"] != "ok" or not r.get("runs"):
                    continue
                # Every power of two up to the trial count, so the trials-equivalent is
                # not limited to the reported ks.
                top = max(r["ks"])
                curve_ks = sorted({*r["ks"], *(2**i for i in range(int(math.log2(top)) + 1))})
                for k in curve_ks:
                    vals = []
                    for trials in r["runs"].values():
                        if not trials:
                            continue
                        first = [regret(t["score"], best, worst) for t in trials[:k]]
                        vals.append(min(first))
                    if vals:
                        row["regret"][f"{opt}@{k}"] = float(np.mean(vals))
                        row.setdefault("seeds", {})[f"{opt}@{k}"] = len(vals)
            per_dataset[ds] = row
        methods = sorted({m for row in per_dataset.values() for m in row["regret"]}, key=_order)
        table = []
        for method in methods:
            have = [ds for ds, row in per_dataset.items() if method in row["regret"]]
            vals = np.array([per_dataset[ds]["regret"][method] for ds in have])
            entry: dict[str, Any] = {
                "method": method,
                "cost_full_fits": _cost(method, by, family, have),
                "datasets": len(have),
                "mean_regret": float(vals.mean()) if len(vals) else None,
                "median_regret": float(np.median(vals)) if len(vals) else None,
            }
            if method in _point_methods(records) and method != "default":
                wins = ties = losses = 0
                for ds in have:
                    row = per_dataset[ds]
                    mine, base = row["score"].get(method), row["default_score"]
                    if base is None:
                        continue
                    if mine is None:
                        losses += 1
                    elif mine > base:
                        wins += 1
                    elif mine == base:
                        ties += 1
                    else:
                        losses += 1
                total = wins + ties + losses
                entry.update(
                    wins=wins,
                    ties=ties,
                    losses=losses,
                    win_rate=wins / total if total else None,
                )
            table.append(entry)
        # Average rank over the methods every dataset has (lower regret is better): the
        # point methods, and random search at the optimisers' budgets.
        search_ks = set(doc["settings"]["search_ks"])
        rank_methods = [
            m
            for m in methods
            if (
                m in _point_methods(records)
                or (m.startswith("random_search@") and _k(m) in search_ks)
            )
            and len(per_dataset)
            and all(m in row["regret"] for row in per_dataset.values())
        ]
        ranks: dict[str, float] = {}
        if rank_methods and per_dataset:
            mat = np.array(
                [[row["regret"][m] for m in rank_methods] for row in per_dataset.values()]
            )
            r = np.vstack([rankdata(line) for line in mat])
            ranks = {m: float(v) for m, v in zip(rank_methods, r.mean(axis=0), strict=True)}
        for entry in table:
            entry["avg_rank"] = ranks.get(entry["method"])
        # Trials-equivalent against hyperprior zero-shot on the same datasets.
        equivalents = {}
        for curve_method in CURVE_METHODS:
            keys = [m for m in methods if m.startswith(f"{curve_method}@")]
            have = [
                ds
                for ds, row in per_dataset.items()
                if any(k in row["regret"] for k in keys) and "hyperprior_top1" in row["regret"]
            ]
            # Only the ks every such dataset has (a random pool may be smaller on some).
            keys = [k for k in keys if all(k in per_dataset[ds]["regret"] for ds in have)]
            common = have
            if not common or not keys:
                continue
            target = float(np.mean([per_dataset[ds]["regret"]["hyperprior_top1"] for ds in common]))
            curve = {
                int(k.split("@")[1]): float(
                    np.mean([per_dataset[ds]["regret"][k] for ds in common])
                )
                for k in keys
            }
            refined = [
                per_dataset[ds]["regret"].get("hyperprior_refined")
                for ds in common
                if "hyperprior_refined" in per_dataset[ds]["regret"]
            ]
            seeds = sorted({per_dataset[ds].get("seeds", {}).get(keys[0], 1) for ds in common})
            equivalents[curve_method] = {
                "datasets": len(common),
                "seeds_per_dataset": seeds if curve_method != "random_search" else None,
                "hyperprior_top1_mean_regret": target,
                "hyperprior_refined_mean_regret": float(np.mean(refined))
                if len(refined) == len(common)
                else None,
                "curve": curve,
                "k_max": max(curve),
                "trials_equivalent": trials_equivalent(curve, target),
            }
        tasks = {r["dataset"]: r["task"] for r in records if r["family"] == family}
        by_task: dict[str, dict[str, Any]] = {}
        for task in sorted({tasks[ds] for ds in per_dataset}):
            mine = [ds for ds in per_dataset if tasks[ds] == task]
            entry = {"datasets": len(mine), "mean_regret": {}}
            for method in ("default", *_point_methods(records)[1:], "random_search@16"):
                vals = [
                    per_dataset[ds]["regret"][method]
                    for ds in mine
                    if method in per_dataset[ds]["regret"]
                ]
                if len(vals) == len(mine):
                    entry["mean_regret"][method] = float(np.mean(vals))
            entry["top1_beats_default"] = sum(
                1
                for ds in mine
                if per_dataset[ds].get("score", {}).get("hyperprior_top1") is not None
                and per_dataset[ds]["default_score"] is not None
                and per_dataset[ds]["score"]["hyperprior_top1"] > per_dataset[ds]["default_score"]
            )
            by_task[task] = entry
        out[family] = {
            "by_task": by_task,
            "datasets": list(per_dataset),
            "per_dataset": per_dataset,
            "table": table,
            "rank_methods": rank_methods,
            "trials_equivalent": equivalents,
            "targets": _targets(table, equivalents),
        }
    return out


def _cost(
    method: str, by: Mapping[tuple[str, str, str], Mapping[str, Any]], family: str, have: list
) -> float | None:
    """Full fits a method measures on the user's data to choose (mean over datasets)."""
    if "@" in method:
        return float(_k(method))
    if method.startswith("hyperprior_refined"):
        used = [
            by[(family, ds, method)].get("used_full_fits_rows")
            for ds in have
            if (family, ds, method) in by
        ]
        used = [u for u in used if u is not None]
        return float(sum(used) / len(used)) if used else None
    if method.endswith("best_of_5"):
        sizes = [len(by[(family, ds, method)].get("candidates", [])) for ds in have]
        return float(sum(sizes) / len(sizes)) if sizes else None
    return 0.0


def _k(method: str) -> int:
    return int(method.partition("@")[2] or 0)


def _point_methods(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The point methods, with every extra refinement budget after the main one."""
    extra = sorted(
        {r["method"] for r in records if r["method"].startswith("hyperprior_refined_b")},
        key=lambda m: float(m.rpartition("_b")[2]),
    )
    corpus = sorted(
        {r["method"] for r in records if r["method"].startswith("hyperprior_top1_corpus")},
        key=lambda m: int(m.rpartition("corpus")[2]),
    )
    out = list(POINT_METHODS)
    at = out.index("hyperprior_refined") + 1
    out = out[:at] + extra + out[at:]
    at = out.index("hyperprior_top1") + 1
    return out[:at] + corpus + out[at:]


def _order(method: str) -> tuple[int, float, str]:
    base, _, k = method.partition("@")
    if base.startswith("hyperprior_refined_b"):
        return (POINT_METHODS.index("hyperprior_refined"), float(base.rpartition("_b")[2]), base)
    if base.startswith("hyperprior_top1_corpus"):
        return (POINT_METHODS.index("hyperprior_top1"), int(base.rpartition("corpus")[2]), base)
    names = [*POINT_METHODS, *CURVE_METHODS]
    return (names.index(base) if base in names else 99, int(k) if k else 0, method)


def _targets(table: list[dict[str, Any]], eq: Mapping[str, Any]) -> list[dict[str, Any]]:
    t = {e["method"]: e for e in table}

    def mean(m: str) -> float | None:
        return t[m]["mean_regret"] if m in t else None

    top1 = mean("hyperprior_top1")
    out = []

    def add(name: str, value: Any, goal: str, met: bool | None) -> None:
        out.append({"target": name, "measured": value, "goal": goal, "met": met})

    for other in ("flaml", "knn_portfolio_top1"):
        o = mean(other)
        add(
            f"top-1 mean regret below {other}'s",
            None if top1 is None or o is None else {"hyperprior_top1": top1, other: o},
            "<",
            None if top1 is None or o is None else top1 < o,
        )
    win = t.get("hyperprior_top1", {}).get("win_rate")
    add(
        "top-1 beats the library default",
        win,
        ">= 80% of datasets",
        None if win is None else win >= 0.8,
    )
    for method, need in (("random_search", 16), ("tpe", 8), ("gp", 8)):
        e = eq.get(method)
        k = None if e is None else e["trials_equivalent"]
        value = None if e is None else (k if k is not None else f"> {e['k_max']}")
        met = None if e is None else (k is None or k >= need)
        add(f"top-1 worth >= {need} {method} trials", value, f">= {need}", met)
    r = mean("hyperprior_refined")
    add("refined (<= 3 full fits) mean regret", r, "<= 0.02", None if r is None else r <= 0.02)
    return out


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def markdown(doc: Mapping[str, Any], summary: Mapping[str, Any], command: str) -> str:
    """The markdown report: tables, trials-equivalents, targets, per-dataset regrets."""
    s = doc["settings"]
    h = doc["history"]
    lines = [
        "# Suggestion quality: leave one dataset out",
        "",
        "Made by "
        + (
            " then ".join(f"`{c}`" for c in doc.get("commands", []))
            if doc.get("commands")
            else f"`{command}`"
        )
        + f" (last update {doc.get('updated_at', _now())}).",
        "",
        f"History: `{h['source']}` (until {h['until'] or 'the snapshot'}), {h['runs']} runs "
        f"of {h['datasets']} datasets, fingerprint `{h['fingerprint']}`. Protocol: "
        f"{s['folds']}-fold CV, seed {s['cv_seed']}, the primary metric (the history's own).",
        "",
        "Normalised regret per dataset: (best - achieved) / (best - worst) over every config "
        "measured on it at full fidelity (history runs included); failed configs have regret "
        "1. Lower is better. Win rate: share of datasets where the measured score is strictly "
        "above the library default's. Random search is the exact expected best of k draws "
        "from the dataset's random pool; optimisers are the mean over seeds of the incumbent "
        "after k trials.",
        "",
    ]
    if s.get("max_estimators"):
        lines += [
            f"**Quick mode**: n_estimators clipped to {s['max_estimators']} in every measured "
            "config; the numbers only show that the pipeline runs.",
            "",
        ]
    for family, fam in summary.items():
        n = len(fam["datasets"])
        lines += [f"## {family} ({n} held-out datasets)", ""]
        lines += [
            "| method | full fits to choose | datasets | mean regret | median regret | avg rank "
            "| wins / ties / losses vs default |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for e in fam["table"]:
            base = e["method"].partition("@")[0]
            if base in OPTIMIZERS and _k(e["method"]) not in set(s["search_ks"]):
                continue
            wtl = (
                f"{e['wins']} / {e['ties']} / {e['losses']} ({_fmt(e['win_rate'], 2)})"
                if "wins" in e
                else ""
            )
            lines.append(
                f"| {e['method']} | {_fmt(e['cost_full_fits'], 1)} | {e['datasets']} | "
                f"{_fmt(e['mean_regret'])} | "
                f"{_fmt(e['median_regret'])} | {_fmt(e['avg_rank'], 2)} | {wtl} |"
            )
        lines += [
            "",
            f"Average rank among the {len(fam['rank_methods'])} methods measured on every "
            "dataset (1 is best). Full fits to choose: trials measured on the held-out data "
            "before answering (zero-shot: none; refinement: the measured trials' row "
            f"fractions summed, budget {s['refine_budget']:g} full fits, one full fit being "
            "the measured time of the CV of the default or of the zero-shot top-1, whichever is "
            "dearer, on that dataset).",
            "",
        ]
        if fam["trials_equivalent"]:
            lines += [
                "Trials-equivalent: the k at which a search method's mean regret reaches "
                "hyperprior's zero-shot top-1 mean regret on the same datasets.",
                "",
                "| search method | datasets | seeds | top-1 regret | refined regret "
                "| curve (k: mean regret) | trials-equivalent |",
                "|---|---:|---:|---:|---:|---|---:|",
            ]
            for name, e in fam["trials_equivalent"].items():
                curve = ", ".join(f"{k}: {v:.3f}" for k, v in sorted(e["curve"].items()))
                k = e["trials_equivalent"]
                seeds = e.get("seeds_per_dataset")
                seeds_text = (
                    "exact"
                    if not seeds
                    else "-".join(str(x) for x in sorted({seeds[0], seeds[-1]}))
                )
                lines.append(
                    f"| {name} | {e['datasets']} | {seeds_text} | "
                    f"{e['hyperprior_top1_mean_regret']:.3f} | "
                    f"{_fmt(e['hyperprior_refined_mean_regret'])} | {curve} | "
                    f"{_fmt(k, 1) if k is not None else '> ' + str(e['k_max'])} |"
                )
            lines.append("")
        lines += [
            "Targets of issue 6:",
            "",
            "| target | measured | goal | met |",
            "|---|---|---|---|",
        ]
        for t in fam["targets"]:
            met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
            value = t["measured"]
            if isinstance(value, dict):
                value = ", ".join(f"{k} {v:.3f}" for k, v in value.items())
            lines.append(f"| {t['target']} | {_fmt(value)} | {t['goal']} | {met} |")
        if fam.get("by_task"):
            cols_t = [
                m
                for m in (
                    "default",
                    "hyperprior_top1",
                    "hyperprior_best_of_5",
                    "hyperprior_refined",
                    "flaml",
                    "knn_portfolio_top1",
                    "random_search@16",
                )
                if all(m in e["mean_regret"] for e in fam["by_task"].values())
            ]
            lines += [
                "",
                "By task (mean regret):",
                "",
                "| task | datasets | " + " | ".join(cols_t) + " | top-1 beats default |",
                "|---|---:|" + "---:|" * len(cols_t) + "---:|",
            ]
            for task, e in fam["by_task"].items():
                cells = " | ".join(_fmt(e["mean_regret"][m]) for m in cols_t)
                lines.append(
                    f"| {task} | {e['datasets']} | {cells} | "
                    f"{e['top1_beats_default']}/{e['datasets']} |"
                )
        lines += ["", "<details><summary>Per dataset (regret)</summary>", ""]
        extra = sorted(
            {m for row in fam["per_dataset"].values() for m in row["regret"] if "_refined_b" in m}
        )
        cols = [
            m
            for m in (
                "default",
                "hyperprior_top1",
                "hyperprior_best_of_5",
                "hyperprior_refined",
                *extra,
                "flaml",
                "flaml_native",
                "knn_portfolio_top1",
                "random_search@16",
            )
            if any(m in row["regret"] for row in fam["per_dataset"].values())
        ]
        lines.append("| dataset | configs | " + " | ".join(cols) + " |")
        lines.append("|---|---:|" + "---:|" * len(cols))
        for ds, row in fam["per_dataset"].items():
            cells = " | ".join(_fmt(row["regret"].get(m)) for m in cols)
            lines.append(f"| {ds} | {row['n_configs']} | {cells} |")
        lines += ["", "</details>", ""]
    notes = _notes(doc)
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def _notes(doc: Mapping[str, Any]) -> list[str]:
    records = doc["records"] if isinstance(doc["records"], list) else list(doc["records"].values())
    notes = set()
    unmapped: dict[tuple[str, str], list[str]] = {}
    for r in records:
        if r["status"] == "unavailable":
            notes.add(f"{r['method']} unavailable: {r.get('note')}")
        if r["method"] == "flaml" and r.get("unmapped"):
            for n in r.get("mapping_notes", []):
                unmapped.setdefault((r["family"], n.split("=")[0]), []).append(n)
        if r["method"] == "default" and r.get("history_check") not in (None, 0.0):
            notes.add(
                f"the default's score on {r['dataset']} differs from the history's by "
                f"{r['history_check']:.2e}"
            )
    n_flaml = {
        f: sum(1 for r in records if r["method"] == "flaml" and r["family"] == f)
        for f, _ in unmapped
    }
    for (family, key), seen in sorted(unmapped.items()):
        notes.add(
            f"FLAML {family}: `{key}` not mapped exactly in {len(seen)} of {n_flaml[family]} "
            f"suggestions (e.g. {seen[0]}); `flaml_native` measures FLAML's exact arguments"
        )
    checks = [r for r in records if r["method"] == "default" and "history_check" in r]
    if checks:
        same = sum(1 for r in checks if r["history_check"] == 0.0)
        notes.add(
            f"reproducibility: the library default re-measured on {len(checks)} "
            f"(family, dataset) pairs matched the history's score exactly on {same}"
        )
    return sorted(notes)


def plots(summary: Mapping[str, Any], out_dir: Path, prefix: str) -> list[Path]:
    """Regret vs trials and per-dataset win/loss against the default (PNG)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    import numpy as np

    paths = []
    fams = list(summary)
    panels = {
        family: [
            ("all held-out datasets", list(summary[family]["per_dataset"])),
            (
                "datasets with optimiser runs",
                [
                    ds
                    for ds, r in summary[family]["per_dataset"].items()
                    if any(k.startswith("tpe@") for k in r["regret"])
                ],
            ),
        ]
        for family in fams
    }
    # Without optimiser runs the second column would only be blank space.
    n_cols = 2 if any(p[1][1] for p in panels.values()) else 1
    fig, axes = plt.subplots(
        len(fams), n_cols, figsize=(6 * n_cols, 4.2 * len(fams)), squeeze=False
    )
    styles = {"random_search": "k-", "grid": "C4-", "gp": "C0-", "tpe": "C1-", "nsga2": "C2-"}
    for row_i, family in enumerate(fams):
        pd_rows = summary[family]["per_dataset"]
        for col, (title, subset) in enumerate(panels[family][:n_cols]):
            ax = axes[row_i][col]
            if not subset:
                ax.set_visible(False)
                continue
            for method in CURVE_METHODS:
                ks = sorted(
                    {
                        int(k.split("@")[1])
                        for ds in subset
                        for k in pd_rows[ds]["regret"]
                        if k.startswith(f"{method}@")
                    }
                )
                xs, ys = [], []
                for k in ks:
                    vals = [pd_rows[ds]["regret"].get(f"{method}@{k}") for ds in subset]
                    if all(v is not None for v in vals):
                        xs.append(k)
                        ys.append(float(np.mean(vals)))
                if xs:
                    ax.plot(xs, ys, styles.get(method, "-"), marker="o", ms=3, label=method)
            extra = sorted({m for ds in subset for m in pd_rows[ds]["regret"] if "_refined_b" in m})
            for method, style in (
                ("hyperprior_top1", ("C3", "-")),
                ("hyperprior_refined", ("C3", "--")),
                *((m, ("C3", ":")) for m in extra),
                ("flaml", ("C5", ":")),
                ("knn_portfolio_top1", ("C7", ":")),
                ("default", ("grey", "-.")),
            ):
                vals = [pd_rows[ds]["regret"].get(method) for ds in subset]
                if vals and all(v is not None for v in vals):
                    ax.axhline(
                        float(np.mean(vals)), color=style[0], ls=style[1], lw=1.5, label=method
                    )
            # Best-of-5 spends 5 full fits: a point at x=5, not a line.
            vals = [pd_rows[ds]["regret"].get("hyperprior_best_of_5") for ds in subset]
            if vals and all(v is not None for v in vals):
                ax.plot([5], [float(np.mean(vals))], "C3*", ms=10, label="hyperprior_best_of_5")
            ax.set_xscale("log", base=2)
            ax.set_ylim(bottom=0)
            ax.set_xlabel("trials (full fits)")
            ax.set_ylabel("mean normalised regret")
            ax.set_title(f"{family}: {title} ({len(subset)})")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / f"{prefix}_regret.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)

    fig, axes = plt.subplots(
        1,
        len(fams),
        figsize=(
            6.5 * len(fams),
            0.5 + 0.32 * max((len(summary[f]["per_dataset"]) for f in fams), default=1) + 1.5,
        ),
        squeeze=False,
    )
    for i, family in enumerate(fams):
        ax = axes[0][i]
        rows = summary[family]["per_dataset"]
        names = list(rows)
        methods = [
            m
            for m in ("hyperprior_top1", "flaml", "knn_portfolio_top1")
            if all(m in rows[ds]["regret"] for ds in names)
        ]
        if not names or not methods:
            ax.set_visible(False)
            continue
        y = np.arange(len(names))
        h = 0.8 / len(methods)
        for j, m in enumerate(methods):
            gain = [rows[ds]["regret"]["default"] - rows[ds]["regret"][m] for ds in names]
            ax.barh(y + j * h, gain, height=h, label=m, color=f"C{[3, 5, 7][j]}")
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(y + 0.4 - h / 2)
        ax.set_yticklabels([n.split("/")[-1] for n in names], fontsize=7)
        ax.set_xlabel("regret of the default minus regret of the method (> 0: beats the default)")
        ax.set_title(f"{family}: per dataset against the library default")
        ax.legend(fontsize=7)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path = out_dir / f"{prefix}_winloss.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
    return paths


def write_reports(
    path: Path, history: History | None, command: str, *, prefix: str
) -> dict[str, Any]:
    """Summarise the JSON at ``path``; write the markdown and the plots next to it."""
    doc = json.loads(path.read_text())
    for rec in doc["records"]:
        _compact_trials(rec)
    summary = summarise(doc, history)
    doc["summary"] = summary
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True, default=_json_default) + "\n")
    os.replace(tmp, path)
    (path.parent / f"{prefix}.md").write_text(markdown(doc, summary, command))
    plots(summary, path.parent, prefix)
    return summary
