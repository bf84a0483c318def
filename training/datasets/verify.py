"""Check every candidate dataset and (with ``--write``) rebuild ``catalog.csv``.

Run as ``python -m hyperprior.training.datasets.verify [--write] [--only TEXT]``.

For each row of ``candidates.csv`` it loads the table offline, cleans it exactly as
:func:`hyperprior.training.datasets.load_dataset` does, checks the target fits the task, and
checks there is signal: a 3-fold CV of a small LightGBM against a trivial baseline in
the task's metric (ROC AUC, accuracy, R^2). A candidate is kept only if the model
clearly beats the baseline and no single feature predicts the target almost perfectly
(that is nearly always a leak to add to ``drop_columns``). Everything runs on one
thread so it can share a small machine.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hyperprior.training.datasets import (
    CATALOG_COLUMNS,
    CATALOG_PATH,
    declared_group,
    load_entry_with_log,
    parse_drop_columns,
)
from hyperprior.training.datasets._types import CatalogEntry, LoadedDataset

CANDIDATES_PATH = Path(__file__).with_name("candidates.csv")

# CV on at most this many rows: enough to see signal, quick on 50k-row tables.
CV_MAX_ROWS = 20_000
LEAK_MAX_ROWS = 5_000
MIN_ROWS = 100
MIN_AUC = 0.6
MIN_R2 = 0.05
# Multiclass accuracy must beat the majority class by 2 points and by 5% of the
# error the majority class leaves.
MIN_ACC_GAIN = 0.02
MIN_ACC_ERROR_CUT = 0.05
# A single feature this good is almost surely the target in disguise.
LEAK_SINGLE = 0.995
# A whole model this good deserves a look even without one culprit feature.
SUSPICIOUS_MODEL = 0.999
# Below the automatic thresholds, strong scores are listed for a look by hand: real
# leaks (a severity score that encodes death, spending that exists only for card
# holders) often score 0.98, and so do honest ones (species from body measurements).
REVIEW_SINGLE = 0.95
REVIEW_MODEL = 0.98

METRICS = {"binary": "auc", "multiclass": "acc", "regression": "r2"}


@dataclass
class Verdict:
    """Outcome of checking one candidate."""

    entry: CatalogEntry
    kept: bool = False
    reason: str = ""
    rows: int = 0
    features: int = 0
    n_classes: int = 0
    model: float = float("nan")
    baseline: float = float("nan")
    single_feature: str = ""
    single_score: float = float("nan")
    seconds: float = 0.0
    load_seconds: float = 0.0
    log: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def read_candidates(path: Path = CANDIDATES_PATH) -> list[CatalogEntry]:
    """Candidates as catalog entries (sizes still unknown: 0).

    Args:
        path: CSV with ``name, source, ref, target, task, group, drop_columns,
            target_rule, notes``.

    Returns:
        One entry per row; ``name`` defaults to ``source/ref``, ``group`` to the
        package's (or the twin group declared in ``hyperprior.training.datasets._groups``).
    """
    with path.open(newline="", encoding="utf-8") as handle:
        return [
            _candidate(row, row.get("name") or f"{row['source']}/{row['ref']}")
            for row in csv.DictReader(handle)
        ]


def _candidate(row: dict[str, str], name: str) -> CatalogEntry:
    return CatalogEntry(
        name=name,
        source=row["source"],
        ref=row["ref"],
        target=row["target"],
        task=row["task"],
        drop_columns=parse_drop_columns(row.get("drop_columns", "")),
        rows=0,
        features=0,
        notes=row.get("notes", ""),
        target_rule=row.get("target_rule") or "",
        group=row.get("group") or declared_group(name),
    )


def _score(task: str, y_true: np.ndarray, predicted: np.ndarray) -> float:
    from sklearn.metrics import accuracy_score, r2_score, roc_auc_score

    if task == "binary":
        return float(roc_auc_score(y_true, predicted))
    if task == "multiclass":
        return float(accuracy_score(y_true, predicted))
    return float(r2_score(y_true, predicted))


def _folds(task: str, y: pd.Series, n_splits: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import KFold, StratifiedKFold

    splitter = (
        StratifiedKFold(n_splits, shuffle=True, random_state=0)
        if task != "regression"
        else KFold(n_splits, shuffle=True, random_state=0)
    )
    return list(splitter.split(np.zeros(len(y)), y))


def _cv(task: str, make_model: Callable[[], Any], X: pd.DataFrame, y: pd.Series) -> float:
    """Mean 3-fold score of fresh models from ``make_model``."""
    scores = []
    for train, test in _folds(task, y):
        model = make_model()
        model.fit(X.iloc[train], y.iloc[train])
        if task == "binary":
            predicted = model.predict_proba(X.iloc[test])[:, 1]
        else:
            predicted = model.predict(X.iloc[test])
        scores.append(_score(task, y.iloc[test].to_numpy(), np.asarray(predicted)))
    return float(np.mean(scores))


def signal_scores(data: LoadedDataset) -> tuple[float, float]:
    """3-fold CV score of a small LightGBM and of a trivial baseline.

    Args:
        data: A cleaned dataset (rows already shuffled).

    Returns:
        ``(model, baseline)`` in the task's metric.
    """
    import lightgbm as lgb
    from sklearn.dummy import DummyClassifier, DummyRegressor

    X, y = data.X.iloc[:CV_MAX_ROWS], data.y.iloc[:CV_MAX_ROWS]
    # Small and single-threaded: this is a smoke test of signal, not a benchmark.
    if data.task == "regression":
        model = _cv(
            data.task,
            lambda: lgb.LGBMRegressor(n_estimators=50, n_jobs=1, verbose=-1, random_state=0),
            X,
            y,
        )
        baseline = _cv(data.task, lambda: DummyRegressor(strategy="mean"), X, y)
    else:
        model = _cv(
            data.task,
            lambda: lgb.LGBMClassifier(n_estimators=50, n_jobs=1, verbose=-1, random_state=0),
            X,
            y,
        )
        baseline = _cv(data.task, lambda: DummyClassifier(strategy="prior"), X, y)
    return model, baseline


def _as_numeric(column: pd.Series) -> pd.DataFrame:
    if isinstance(column.dtype, pd.CategoricalDtype):
        values = column.cat.codes.to_numpy(dtype="float64")
    else:
        values = column.to_numpy(dtype="float64", na_value=np.nan)
    finite = values[np.isfinite(values)]
    fill = (finite.min() - 1.0) if finite.size else 0.0
    return pd.DataFrame({"v": np.where(np.isfinite(values), values, fill)})


def best_single_feature(data: LoadedDataset) -> tuple[str, float]:
    """The feature that alone predicts the target best (3-fold CV of a small tree).

    Args:
        data: A cleaned dataset.

    Returns:
        ``(feature, score)`` in the task's metric; ``("", nan)`` without features.
    """
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    X, y = data.X.iloc[:LEAK_MAX_ROWS], data.y.iloc[:LEAK_MAX_ROWS]
    tree = DecisionTreeRegressor if data.task == "regression" else DecisionTreeClassifier
    best = ("", float("nan"))
    for name in X.columns:
        score = _cv(
            data.task,
            lambda: tree(max_depth=8, min_samples_leaf=5, random_state=0),
            _as_numeric(X[name]),
            y,
        )
        if not best[0] or score > best[1]:
            best = (name, score)
    return best


def _id_warnings(X: pd.DataFrame) -> list[str]:
    out = []
    for name in X.columns:
        column = X[name]
        if isinstance(column.dtype, pd.CategoricalDtype) or len(column) < 100:
            continue
        values = column.dropna().to_numpy(dtype="float64")
        if values.size and np.all(values == np.round(values)):
            if len(np.unique(values)) >= 0.98 * len(column):
                out.append(f"{name}: integer, >=98% distinct (an id?)")
    return out


def verify_entry(entry: CatalogEntry) -> Verdict:
    """Load, clean and check one candidate.

    Args:
        entry: The candidate.

    Returns:
        The verdict, with sizes, scores and the reason it was kept or dropped.
    """
    verdict = Verdict(entry=entry)
    start = time.perf_counter()
    try:
        data, verdict.log = load_entry_with_log(entry, seed=0)
    except Exception as exc:  # noqa: BLE001 - any failure drops the candidate
        verdict.reason = f"load/clean failed: {type(exc).__name__}: {exc}"[:300]
        verdict.seconds = time.perf_counter() - start
        return verdict
    verdict.load_seconds = time.perf_counter() - start
    verdict.rows, verdict.features = data.X.shape
    verdict.n_classes = len(data.classes)
    verdict.warnings = _id_warnings(data.X)
    if verdict.rows < MIN_ROWS:
        verdict.reason = f"only {verdict.rows} rows"
    elif verdict.features == 0:
        verdict.reason = "no features left after cleaning"
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            verdict.model, verdict.baseline = signal_scores(data)
            verdict.single_feature, verdict.single_score = best_single_feature(data)
        verdict.kept, verdict.reason = _judge(entry.task, verdict)
    verdict.seconds = time.perf_counter() - start
    return verdict


def _judge(task: str, v: Verdict) -> tuple[bool, str]:
    if v.single_score >= LEAK_SINGLE:
        return False, f"leak? {v.single_feature!r} alone scores {v.single_score:.4f}"
    if v.model >= SUSPICIOUS_MODEL:
        return False, f"near-perfect model ({v.model:.4f}): inspect for a leak"
    if task == "binary":
        ok = v.model >= MIN_AUC
        return ok, "ok" if ok else f"weak signal: AUC {v.model:.3f} < {MIN_AUC}"
    if task == "regression":
        ok = v.model >= MIN_R2
        return ok, "ok" if ok else f"weak signal: R2 {v.model:.3f} < {MIN_R2}"
    gain = v.model - v.baseline
    error_cut = gain / max(1e-9, 1.0 - v.baseline)
    ok = gain >= MIN_ACC_GAIN and error_cut >= MIN_ACC_ERROR_CUT
    reason = "ok" if ok else f"weak signal: accuracy {v.model:.3f} vs majority {v.baseline:.3f}"
    return ok, reason


def catalog_row(v: Verdict) -> dict[str, str | int]:
    """The ``catalog.csv`` row of a kept candidate."""
    entry = v.entry
    extra = [line for line in v.log if _is_target_line(line)]
    notes = "; ".join(part for part in [entry.notes, *extra] if part)
    return {
        "name": entry.name,
        "source": entry.source,
        "ref": entry.ref,
        "target": entry.target,
        "task": entry.task,
        "group": entry.group or declared_group(entry.name),
        "drop_columns": ";".join(entry.drop_columns),
        "target_rule": entry.target_rule,
        "rows": v.rows,
        "features": v.features,
        "notes": notes,
    }


def _is_target_line(line: str) -> bool:
    return line.startswith(("target =", "kept the", "dropped")) and (
        "classes" in line or "target" in line or "rows of others" in line
    )


def write_catalog(verdicts: Sequence[Verdict], path: Path = CATALOG_PATH) -> int:
    """Write the kept candidates to ``path``; returns how many."""
    rows = [catalog_row(v) for v in verdicts if v.kept]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(CATALOG_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def _fmt(x: float) -> str:
    return "-" if x != x else f"{x:.3f}"  # NaN != NaN


def print_report(verdicts: Sequence[Verdict], *, verbose: bool = False) -> None:
    """Print one line per candidate, kept first, then counts by task and size."""
    header = (
        f"{'status':7} {'name':44} {'task':10} {'rows':>7} {'feat':>5} {'cls':>3} "
        f"{'metric':6} {'model':>6} {'base':>6} {'best single feature':30} {'sec':>5}  reason"
    )
    print(header)
    print("-" * len(header))
    for v in sorted(verdicts, key=lambda v: (not v.kept, v.entry.task, v.entry.name)):
        single = f"{v.single_feature[:22]}={_fmt(v.single_score)}" if v.single_feature else ""
        print(
            f"{'KEEP' if v.kept else 'DROP':7} {v.entry.name[:44]:44} {v.entry.task:10} "
            f"{v.rows:>7} {v.features:>5} {v.n_classes or '':>3} {METRICS[v.entry.task]:6} "
            f"{_fmt(v.model):>6} {_fmt(v.baseline):>6} {single:30} {v.seconds:5.1f}  {v.reason}"
        )
        if verbose:
            for line in [*v.log, *v.warnings]:
                print(f"{'':8}- {line}")
    kept = [v for v in verdicts if v.kept]
    review = [v for v in kept if v.single_score >= REVIEW_SINGLE or v.model >= REVIEW_MODEL]
    if review:
        print(
            f"\nkept but worth a look by hand (single feature >= {REVIEW_SINGLE} or model >= "
            f"{REVIEW_MODEL}): is a column the target in disguise?"
        )
        for v in review:
            print(
                f"  {v.entry.name}: model {_fmt(v.model)}, "
                f"{v.single_feature!r} alone {_fmt(v.single_score)}"
            )
    print(f"\nkept {len(kept)} of {len(verdicts)}")
    print("by task:", dict(Counter(v.entry.task for v in kept)))
    buckets = Counter(_size_bucket(v.rows) for v in kept)
    print("by size:", {b: buckets[b] for b in SIZE_BUCKETS if buckets[b]})


SIZE_BUCKETS = ("<300", "300-1k", "1k-5k", "5k-20k", "20k-50k", ">=50k")


def _size_bucket(rows: int) -> str:
    for bound, label in zip((300, 1_000, 5_000, 20_000, 50_000), SIZE_BUCKETS, strict=False):
        if rows < bound:
            return label
    return SIZE_BUCKETS[-1]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite catalog.csv")
    parser.add_argument("--only", default="", help="only candidates whose name contains this")
    parser.add_argument("--candidates", type=Path, default=CANDIDATES_PATH)
    parser.add_argument("--verbose", "-v", action="store_true", help="print cleaning logs")
    args = parser.parse_args(argv)

    candidates = [c for c in read_candidates(args.candidates) if args.only in c.name]
    names = Counter(c.name for c in candidates)
    duplicated = [name for name, count in names.items() if count > 1]
    if duplicated:
        print(f"duplicate candidate names: {duplicated}", file=sys.stderr)
        return 2
    verdicts = []
    for i, entry in enumerate(candidates, 1):
        verdict = verify_entry(entry)
        verdicts.append(verdict)
        mark = "keep" if verdict.kept else "DROP"
        progress = f"[{i}/{len(candidates)}] {mark} {entry.name} ({verdict.seconds:.1f}s)"
        print(progress, file=sys.stderr)
    print_report(verdicts, verbose=args.verbose)
    if args.write:
        if args.only:
            print("refusing to --write a partial catalog (--only given)", file=sys.stderr)
            return 2
        count = write_catalog(verdicts)
        print(f"wrote {count} entries to {CATALOG_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
