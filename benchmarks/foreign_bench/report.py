"""Summaries of the foreign benchmark: per-dataset rows, regimes, the markdown report,
the plot and the printed summary."""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.foreign_bench.optuna_warm import optuna_summary
from benchmarks.foreign_bench.settings import (
    CV_SEED,
    FOLDS,
    LOSS_MARGIN,
    RANDOM_KS,
    RANDOM_POOL,
    Settings,
)
from benchmarks.quality_bench.metrics import (
    expected_min_of_k,
    regret,
)

# ---------------------------------------------------------------------------------------
# Summaries


def expected_best_of_k(scores: Sequence[float], k: int) -> float | None:
    """Exact expected maximum of ``k`` scores drawn without replacement."""
    low = expected_min_of_k([-s for s in scores], k)
    return None if low is None else -low


def worth(pool_scores: Sequence[float], score: float | None) -> int | None:
    """Smallest k whose expected best-of-k random configs beats ``score`` (None: none)."""
    if score is None:
        return 1
    for k in range(1, len(pool_scores) + 1):
        best = expected_best_of_k(pool_scores, k)
        if best is not None and best > score:
            return k
    return None


def dataset_rows(doc: Mapping[str, Any], settings_ks: Sequence[int] | None = None) -> list[dict]:
    """One row per (dataset, family): scores, regrets, and its regime."""
    measurements = doc["measurements"]
    ks = list(settings_ks or doc.get("settings", {}).get("random_ks", RANDOM_KS))
    by_pair: dict[tuple[str, str], list[float]] = {}
    for m in measurements.values():
        if m["status"] == "ok" and m["score"] is not None:
            by_pair.setdefault((m["family"], m["dataset"]), []).append(float(m["score"]))
    datasets = doc.get("datasets", {})
    rows = []
    for rec in doc["records"].values():
        if rec["dataset"] not in datasets:
            continue
        fam, ds = rec["family"], rec["dataset"]
        all_scores = by_pair.get((fam, ds), [])
        if not all_scores:
            continue
        best, worst = max(all_scores), min(all_scores)

        def s(key: str | None) -> float | None:
            m = measurements.get(key) if key else None
            return None if m is None or m["status"] != "ok" else float(m["score"])

        def r(score: float | None, best: float = best, worst: float = worst) -> float:
            return regret(score, best, worst)

        if rec.get("hyperprior_error"):
            continue  # counted apart: see refused_rows
        point = [rec["default"], *rec["hyperprior"], *([rec["flaml"]] if rec.get("flaml") else [])]
        if any(k not in measurements for k in point):
            continue  # not measured yet (a run stopped early)
        default = s(rec["default"])
        hp = [s(k) for k in rec["hyperprior"]]
        top1 = hp[0] if hp else None
        measured_hp = [x for x in hp if x is not None]
        best5 = max(measured_hp) if measured_hp else None
        flaml = s(rec.get("flaml"))
        # Only the measured part of the pool (a run stopped early has measured part of
        # it); a failed config counts with regret 1.
        measured = [k for k in rec["random_pool"] if k in measurements]
        pool = [x for x in (s(k) for k in measured) if x is not None]
        pool_regrets = [r(x) for x in pool] + [1.0] * (len(measured) - len(pool))
        meta = rec.get("meta_features") or {}
        nearest = (rec.get("answer") or {}).get("nearest_dataset") or {}
        row: dict[str, Any] = {
            "dataset": ds,
            "family": fam,
            "task": rec["task"],
            "rows": int(meta.get("n_rows") or datasets[ds]["rows"]),
            "features": int(meta.get("n_features") or datasets[ds]["features"]),
            "lm_1nn": meta.get("lm_1nn"),
            "lm_linear": meta.get("lm_linear"),
            "distance": nearest.get("distance"),
            "answer_distance_fields": (rec.get("answer") or {}).get("distance_fields") or {},
            "nearest": nearest.get("name"),
            "best": best,
            "worst": worst,
            "n_configs": len(all_scores),
            "score_default": default,
            "score_top1": top1,
            "score_best_of_5": best5,
            "score_flaml": flaml,
            "regret_default": r(default),
            "regret_hyperprior_top1": r(top1),
            "regret_hyperprior_best_of_5": r(best5),
            "regret_flaml": r(flaml) if rec.get("flaml") else None,
            "top1_vs_default": None if default is None or top1 is None else top1 - default,
            "top1_loses": default is not None and (top1 is None or top1 < default - LOSS_MARGIN),
            "top1_beats": default is not None and top1 is not None and top1 > default,
            "top1_worth": worth(pool, top1) if pool else None,
            "pool_size": len(measured),
            "p_beats_default_top1": ((rec.get("answer") or {}).get("p_beats_default") or [None])[0],
            "source_top1": ((rec.get("answer") or {}).get("sources") or [None])[0],
            "warnings": (rec.get("answer") or {}).get("warnings") or [],
        }
        for k in ks:
            row[f"regret_random_best_of_{k}"] = (
                expected_min_of_k(pool_regrets, k) if len(pool_regrets) >= k else None
            )
        rows.append(row)
    rows.sort(key=lambda x: (x["family"], x["dataset"]))
    return rows


def regime_of(row: Mapping[str, Any]) -> dict[str, str]:
    """The regime bins of a (dataset, family) row."""
    features = row["features"]
    lm_1nn, lm_linear = row.get("lm_1nn"), row.get("lm_linear")
    if lm_1nn is None or lm_linear is None:
        signal = "unknown"
    else:
        signal = "1-NN ahead (signal-rich)" if lm_1nn > lm_linear else "linear ahead or tied"
    distance = row.get("distance")
    if distance is None:
        near = "unknown"
    else:
        near = "< 0.75" if distance < 0.75 else ("0.75-1.5" if distance < 1.5 else ">= 1.5")
    return {
        "task": row["task"],
        "rows": "< 1k" if row["rows"] < 1000 else "1k-5k",
        "features": "< 20" if features < 20 else ("20-100" if features <= 100 else "> 100"),
        "signal": signal,
        "distance to corpus": near,
    }


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def summary_of(rows: Sequence[Mapping[str, Any]], ks: Sequence[int]) -> dict[str, Any]:
    """The headline numbers of a set of (dataset, family) rows."""
    if not rows:
        return {"n": 0}
    methods = ["default", "flaml", "hyperprior_top1", "hyperprior_best_of_5"] + [
        f"random_best_of_{k}" for k in ks
    ]
    # A top-1 no random draw of the pool beats counts as one more than the pool.
    worths = [
        r["top1_worth"] if r["top1_worth"] is not None else r["pool_size"] + 1
        for r in rows
        if r["top1_vs_default"] is not None and r["pool_size"] > 0
    ]
    losses = [(r["regret_hyperprior_top1"] - r["regret_default"]) for r in rows if r["top1_loses"]]
    k16 = max(ks)
    out: dict[str, Any] = {
        "n": len(rows),
        "mean_regret": {m: _mean([r.get(f"regret_{m}") for r in rows]) for m in methods},
        "top1_no_loss_share": float(np.mean([not r["top1_loses"] for r in rows])),
        "top1_beats_default_share": float(np.mean([r["top1_beats"] for r in rows])),
        "top1_wins": int(sum(r["top1_beats"] for r in rows)),
        "top1_losses": int(sum(r["top1_loses"] for r in rows)),
        "worst_top1_loss_normalised": max(losses) if losses else 0.0,
        "median_top1_worth": (float(np.median(worths)) if worths else None),
        f"best_of_5_le_random_{k16}_share": float(
            np.mean(
                [
                    r["regret_hyperprior_best_of_5"] <= (r.get(f"regret_random_best_of_{k16}") or 0)
                    for r in rows
                    if r.get(f"regret_random_best_of_{k16}") is not None
                ]
                or [float("nan")]
            )
        ),
    }
    return out


def summarise(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Per family: the summary, and the same by regime."""
    ks = list(doc.get("settings", {}).get("random_ks", RANDOM_KS))
    rows = dataset_rows(doc, ks)
    refused = [
        {"family": r["family"], "dataset": r["dataset"], "error": r["hyperprior_error"]}
        for r in doc["records"].values()
        if r.get("hyperprior_error") and r["dataset"] in doc.get("datasets", {})
    ]
    out: dict[str, Any] = {
        "rows": rows,
        "families": {},
        "refused": refused,
        "optuna": optuna_summary(doc),
    }
    for family in sorted({r["family"] for r in rows}):
        mine = [r for r in rows if r["family"] == family]
        regimes: dict[str, dict[str, Any]] = {}
        for r in mine:
            for axis, bin_ in regime_of(r).items():
                regimes.setdefault(axis, {}).setdefault(bin_, []).append(r)
        out["families"][family] = {
            "all": summary_of(mine, ks),
            "by_regime": {
                axis: {b: summary_of(rs, ks) for b, rs in sorted(bins.items())}
                for axis, bins in regimes.items()
            },
        }
    return out


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def markdown(doc: Mapping[str, Any], summary: Mapping[str, Any], command: str) -> str:
    """The report."""
    ks = list(doc.get("settings", {}).get("random_ks", RANDOM_KS))
    k16 = max(ks)
    lines = [
        "# Suggestion quality on the foreign collection",
        "",
        f"Command: `{command}`  ",
        f"Code: `{(doc.get('code') or {}).get('commit') or 'unknown'}`"
        + (" (with uncommitted changes)" if (doc.get("code") or {}).get("dirty") else "")
        + ".  ",
        f"Measured: {doc.get('finished_at') or doc.get('updated_at')}; protocol: "
        f"{FOLDS}-fold CV, seed {CV_SEED}, ROC AUC (binary), accuracy (multiclass), R² "
        "(regression), the project's trial code. Surrogates: "
        + ", ".join(f"{f} `{(s or 'none')[:12]}`" for f, s in doc.get("surrogates", {}).items())
        + ".",
        "",
        "Real datasets from packages the corpus does not use, never used for training, "
        "model selection or tuning. Regret is normalised per (dataset, family) over every "
        "config measured on it (0 = the best measured). A loss: the top-1 scores below the "
        f"default by more than {LOSS_MARGIN}. Worth: the smallest k whose expected best of k "
        f"random configs beats the top-1 (none in the pool of {RANDOM_POOL}: counted as "
        f"{RANDOM_POOL + 1}).",
        "",
        "## Summary",
        "",
    ]
    fams = summary["families"]
    methods = ["default", "flaml", "hyperprior_top1", "hyperprior_best_of_5"] + [
        f"random_best_of_{k}" for k in ks
    ]
    lines.append("| mean regret | " + " | ".join(fams) + " |")
    lines.append("|---|" + "---:|" * len(fams))
    for m in methods:
        lines.append(
            f"| {m} | "
            + " | ".join(_fmt(fams[f]["all"]["mean_regret"].get(m)) for f in fams)
            + " |"
        )
    rows_ = [
        ("datasets", "n", 0),
        ("top-1 does not lose to the default (share)", "top1_no_loss_share", 3),
        ("top-1 beats the default (share)", "top1_beats_default_share", 3),
        ("top-1 wins / losses vs default", None, 0),
        ("worst top-1 loss to default (normalised regret)", "worst_top1_loss_normalised", 3),
        ("median worth of top-1 (random-search trials)", "median_top1_worth", 1),
        (f"best of 5 <= random best of {k16} (share)", f"best_of_5_le_random_{k16}_share", 3),
    ]
    lines += ["", "| | " + " | ".join(fams) + " |", "|---|" + "---:|" * len(fams)]
    for label, key, digits in rows_:
        if key is None:
            vals = [
                f"{fams[f]['all']['top1_wins']} / {fams[f]['all']['top1_losses']}" for f in fams
            ]
        else:
            vals = [_fmt(fams[f]["all"].get(key), digits) for f in fams]
        lines.append(f"| {label} | " + " | ".join(vals) + " |")
    lines += ["", "## By regime", ""]
    for family, fs in fams.items():
        lines += [
            f"### {family}",
            "",
            "| axis | bin | n | default | flaml | top-1 | best of 5 | random 4 | "
            f"random {k16} | no loss | worst loss | worth |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for axis, bins in fs["by_regime"].items():
            for b, s in bins.items():
                mr = s["mean_regret"]
                lines.append(
                    f"| {axis} | {b} | {s['n']} | {_fmt(mr['default'])} | {_fmt(mr['flaml'])} | "
                    f"{_fmt(mr['hyperprior_top1'])} | {_fmt(mr['hyperprior_best_of_5'])} | "
                    f"{_fmt(mr.get('random_best_of_4'))} | "
                    f"{_fmt(mr.get(f'random_best_of_{k16}'))} | "
                    f"{_fmt(s['top1_no_loss_share'], 2)} | "
                    f"{_fmt(s['worst_top1_loss_normalised'], 2)} | "
                    f"{_fmt(s['median_top1_worth'], 1)} |"
                )
        lines.append("")
    lines += [
        "## Per dataset",
        "",
        "| family | dataset | task | rows | feats | 1nn/lin | nearest (dist) | default | "
        "top-1 | best of 5 | flaml | reg def | reg top-1 | reg rnd 16 | worth | p_beats | "
        "source |",
        "|---|---|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in summary["rows"]:
        lm = f"{_fmt(r['lm_1nn'], 2)}/{_fmt(r['lm_linear'], 2)}"
        near = f"{r['nearest'] or '–'} ({_fmt(r['distance'], 2)})"
        lines.append(
            f"| {r['family']} | {r['dataset']} | {r['task']} | {r['rows']} | {r['features']} | "
            f"{lm} | {near} | {_fmt(r['score_default'], 4)} | {_fmt(r['score_top1'], 4)} | "
            f"{_fmt(r['score_best_of_5'], 4)} | {_fmt(r['score_flaml'], 4)} | "
            f"{_fmt(r['regret_default'])} | {_fmt(r['regret_hyperprior_top1'])} | "
            f"{_fmt(r.get(f'regret_random_best_of_{k16}'))} | "
            f"{r['top1_worth'] if r['top1_worth'] is not None else '>' + str(r['pool_size'])} | "
            f"{_fmt(r['p_beats_default_top1'], 2)} | {r['source_top1'] or '–'} |"
        )
    for r in summary.get("refused", []):
        lines.append(
            f"| {r['family']} | {r['dataset']} | hyperprior refused the request: "
            f"`{r['error']}` (left out of every summary above) |"
        )
    pools = [r["pool_size"] for r in summary["rows"]]
    total = sum(
        len(r["random_pool"])
        for r in doc["records"].values()
        if r["dataset"] in doc.get("datasets", {})
    )
    lines += [
        "",
        f"Measured: {len(summary['rows'])} of {len(doc['records'])} (dataset, family) pairs; "
        f"random pools {sum(pools)} of {total} configs (per pair {min(pools, default=0)}-"
        f"{max(pools, default=0)}). A run stopped early resumes where it stopped.",
    ]
    warned = [r for r in summary["rows"] if r["warnings"]]
    lines += ["", f"Answers with warnings: {len(warned)} of {len(summary['rows'])}."]
    if summary.get("optuna"):
        lines += [
            "",
            "## Optuna TPE: warm-started with `enqueue_suggestions` vs cold (lightgbm)",
            "",
            "Median over datasets of the mean over seeds of the best-so-far's regret.",
            "",
            "| trials | datasets | warm | cold | warm at least as good (share) |",
            "|---:|---:|---:|---:|---:|",
        ]
        for k, o in summary["optuna"].items():
            lines.append(
                f"| {k} | {o['datasets']} | {_fmt(o['median_regret_warm'])} | "
                f"{_fmt(o['median_regret_cold'])} | {_fmt(o['warm_at_least_as_good_share'], 2)} |"
            )
    lines += ["", "## The collection", ""]
    lines += [
        "| dataset | package | loader | target | task | rows | features | classes | "
        "why not a corpus twin |",
        "|---|---|---|---|---|---:|---:|---:|---|",
    ]
    for info in doc.get("datasets", {}).values():
        lines.append(
            f"| {info['name']} | {info['package']} {info['version'] or ''} | "
            f"`{info['loader']}` | {info['target']} | {info['task']} | {info['rows']} | "
            f"{info['features']} | {info['classes'] or '–'} | {info['why_not_a_corpus_twin']}"
            + (f" ({info['notes']})" if info.get("notes") else "")
            + " |"
        )
    lines += [
        "",
        "These results are an evaluation only: never tune a model, a policy knob or a "
        "threshold on them.",
        "",
    ]
    return "\n".join(lines)


def plot(summary: Mapping[str, Any], path: Path) -> Path | None:
    """Regret of each method, and top-1 against the default per dataset."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fams = list(summary["families"])
    if not fams:
        return None
    fig, axes = plt.subplots(2, len(fams), figsize=(6.5 * len(fams), 9), squeeze=False)
    for j, family in enumerate(fams):
        mr = summary["families"][family]["all"]["mean_regret"]
        names = [m for m in mr if mr[m] is not None]
        ax = axes[0][j]
        colors = [
            "C7"
            if m == "default"
            else "C1"
            if m == "flaml"
            else "C0"
            if m.startswith("hyperprior")
            else "C2"
            for m in names
        ]
        ax.barh(names[::-1], [mr[m] for m in names][::-1], color=colors[::-1])
        ax.set_xlabel("mean normalised regret (lower is better)")
        ax.set_title(f"{family}: {summary['families'][family]['all']['n']} foreign datasets")
        ax = axes[1][j]
        rows = sorted(
            (
                r
                for r in summary["rows"]
                if r["family"] == family and r["top1_vs_default"] is not None
            ),
            key=lambda r: r["regret_default"] - r["regret_hyperprior_top1"],
        )
        diffs = [r["regret_default"] - r["regret_hyperprior_top1"] for r in rows]
        cols = ["C3" if r["top1_loses"] else ("C2" if r["top1_beats"] else "C7") for r in rows]
        ax.barh([r["dataset"].split("/")[-1] for r in rows], diffs, color=cols)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlabel("regret(default) - regret(top-1): > 0 the top-1 wins")
        ax.tick_params(axis="y", labelsize=7)
        wins = summary["families"][family]["all"]["top1_wins"]
        losses = summary["families"][family]["all"]["top1_losses"]
        ax.set_title(f"top-1 vs default: {wins} wins, {losses} losses (red)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_reports(
    doc: Mapping[str, Any],
    out_dir: Path,
    prefix: str,
    settings: Settings | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Summarise ``doc`` into ``PREFIX.md`` and ``PREFIX.png`` (and the JSON's summary)."""
    summary = summarise(doc)
    command = command or str(
        doc.get("command") or " ".join(["python benchmarks/foreign.py", *sys.argv[1:]])
    )
    (out_dir / f"{prefix}.md").write_text(markdown(doc, summary, command))
    plot(summary, out_dir / f"{prefix}.png")
    full = dict(doc)
    full["summary"] = {k: v for k, v in summary.items() if k != "rows"}
    full["per_dataset"] = summary["rows"]
    path = out_dir / f"{prefix}.json"
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(full, indent=1, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)
    return summary


def print_summary(summary: Mapping[str, Any]) -> None:
    """The headline table on stdout."""
    fams = summary["families"]
    if not fams:
        print("nothing measured")
        return
    names = list(next(iter(fams.values()))["all"]["mean_regret"])
    print(f"{'mean regret':28s}" + "".join(f"{f:>15s}" for f in fams))
    for m in names:
        print(f"{m:28s}" + "".join(f"{_fmt(fams[f]['all']['mean_regret'][m]):>15s}" for f in fams))
    for key in (
        "n",
        "top1_no_loss_share",
        "top1_wins",
        "top1_losses",
        "worst_top1_loss_normalised",
        "median_top1_worth",
    ):
        print(f"{key:28s}" + "".join(f"{_fmt(fams[f]['all'][key]):>15s}" for f in fams))
