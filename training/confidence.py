"""How sure the surrogate is that a config beats the library default, learned on held-out groups.

The surrogate predicts a config's rank percentile on a dataset. The policy needs more: the
probability that a candidate scores *above the library default* on this dataset, and how
far the dataset is from anything the history covers. Both are learned from grouped
cross-validation by *source group* (a package's datasets and their declared near-twins
are held out together, :func:`group_folds`), so they describe data the surrogate has not
seen, not the corpus it memorised:

- ``p_beats_default`` is a logistic calibration of the ensemble's predicted advantage over
  the default (the members' mean and spread of ``pred(config) - pred(default)``), the
  default's own predicted percentile, and the dataset's distance to the nearest training
  dataset. It is fitted on out-of-fold predictions, whose label is whether the measured
  config scored above the measured default.
- Where the surrogate carries a beats-the-default classifier (``SurrogateParams.
  beats_model``), the ``p_beats_default`` a policy uses is the mean of that calibration and
  the classifier's probability (:func:`combine_p`), both out of fold here.
- ``distance_threshold`` is the distance to the nearest training dataset beyond which the
  surrogate's held-out picks cost more than they brought, against answering with the
  default (the largest held-out distance when that never happens). Beyond it the policy
  answers with the default first, except for the tasks in ``unsafe_default_tasks``: those
  where the default matched the surrogate's held-out top-1 on under
  :data:`MIN_DEFAULT_NOT_LOSE` of the datasets (linear regression's ``ElasticNet(alpha=1,
  l1_ratio=0.5)``, which shrinks nearly every coefficient to zero), so that it is no
  safe answer anywhere.
- ``min_p`` is the bar a first suggestion must clear: the lowest in :data:`MIN_P_GRID`
  whose held-out picks did not lose to the default on at least
  :data:`TARGET_NOT_LOSE` of the datasets.
- The served rule is :data:`SERVED_RULE` (``guard``): the best-scored candidate when its
  ``p_beats_default`` clears the bar, else the library default. It replaced ``filter``
  (the best score among the candidates that clear the bar), which went looking among
  lower-scored candidates for one whose ``p`` happened to be high.

Everything is stored as plain numbers in the surrogate's JSON metadata (never pickled).
:func:`evaluate_policies` is the leave-one-group-out evaluation of the policy that
``benchmarks/policy_cv.py`` reports.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hyperprior.training.features import TrainingSet, build_training_set
from hyperprior.vocabulary import TASKS

LOSS_TOLERANCE = 0.002
CALIBRATION_FEATURES = ("adv_mean", "adv_spread", "default_mean", "distance", "signal")
# A pick must be at least this likely to beat the default to replace it.
MIN_P_BEATS_DEFAULT = 0.5
# The bar is raised (in these steps) until held-out picks stop losing to the default on
# more than this share of datasets. 0.8 -> 0.95 (leave-one-group-out, 3 surrogate seeds,
# benchmarks/experiments/bar_target.py): lightgbm served regret 0.0645 -> 0.0674, not
# losing 91.7% -> 95.6%, losses over 0.05 15.7 -> 9.3; the other families within 0.0015.
MIN_P_GRID = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8)
TARGET_NOT_LOSE = 0.95
# The calibration is fitted on the candidates a policy actually chooses among: the best
# few per dataset by the pessimistic score (picks are the top of ~2,000 candidates, so
# all 48 measured configs of a dataset would teach it about configs it never picks).
CALIBRATION_TOP = 10
# How the served policy uses the bar (see :func:`pick`). Leave-one-group-out over 3
# surrogate seeds (2026-12-07, features version 4), served regret and share not losing,
# filter -> guard: lightgbm 0.0668 (86.2%) -> 0.0657 (89.5%), random_forest 0.0650
# (93.9%) -> 0.0639 (94.8%); keras_mlp (version 3) 0.0456 (86.1%) -> 0.0429 (94.7%).
SERVED_RULE = "guard"
# The distance fallback answers with the default only for tasks where the default did not
# lose to the surrogate's held-out top-1 on at least this share of datasets. Measured
# (10 group folds, 2026-12-08): linear regression 2-4% by R², RMSE or MAE; every other
# (family, task, metric) 24-90%.
MIN_DEFAULT_NOT_LOSE = 0.1
# Fewer held-out datasets of a task than this say nothing about its default.
MIN_TASK_DATASETS = 10


def group_folds(ts: TrainingSet, n_folds: int = 10) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train/test row indices with every source group in exactly one test fold.

    A group's fold is a hash of its name, so adding datasets moves no group between
    folds. ``n_folds <= 0`` gives one fold per group (leave-one-group-out).
    """
    from hyperprior.training.datasets import dataset_group

    keys = [str(d) for d in np.unique(ts.dataset)]
    groups = {d: dataset_group(ts.dataset_names.get(d, d)) for d in keys}
    names = sorted(set(groups.values()))
    if len(names) < 2:
        # One source only (a team's own history, a test): fall back to datasets.
        from hyperprior.training.surrogate import grouped_folds

        return grouped_folds(ts, 5 if n_folds <= 0 else n_folds)
    k = len(names) if n_folds <= 0 else min(n_folds, len(names))
    digest = {g: zlib.crc32(g.encode()) for g in names}
    fold_of_group = {g: (i if n_folds <= 0 else digest[g] % k) for i, g in enumerate(names)}
    if len(set(fold_of_group.values())) < k:
        ordered = sorted(names, key=lambda g: (digest[g], g))
        fold_of_group = {g: i % k for i, g in enumerate(ordered)}
    fold = pd.Series(ts.dataset).astype(str).map(lambda d: fold_of_group[groups[d]]).to_numpy()
    return [(np.flatnonzero(fold != f), np.flatnonzero(fold == f)) for f in range(k)]


def held_out_distances(
    portfolio_json: Mapping[str, Any],
    family: str,
    ts: TrainingSet,
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
) -> dict[str, float]:
    """Each dataset's distance to its nearest dataset in the *other* folds.

    The distance is the policy's own (:meth:`hyperprior.training.suggest.Portfolio.nearest`), so a
    threshold learned on it applies to what a request reports.
    """
    from hyperprior.training.suggest import Portfolio

    out: dict[str, float] = {}
    for train_idx, test_idx in folds:
        train_keys = set(np.unique(ts.dataset[train_idx]).astype(str))
        index = Portfolio(family, {k: v for k, v in portfolio_json.items() if k in train_keys})
        for key in np.unique(ts.dataset[test_idx]).astype(str):
            info = portfolio_json.get(key)
            if info is None:
                continue
            nearest = index.nearest(info.get("meta", {}), str(info.get("task", "")), 1)
            if nearest:
                out[key] = float(nearest[0].distance)
    return out


def candidate_rows(
    ts: TrainingSet,
    members: np.ndarray,
    distance: Mapping[str, float],
    beats: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per measured full-fidelity config of a dataset whose default was measured.

    Columns: ``dataset``, ``task``, ``row`` (index in ``ts``), ``is_default``, ``s`` (the
    oriented score, NaN when the run failed), ``s_default``, ``mean``, ``spread``, the
    calibration features, ``beats`` (scored above the default) and ``q`` (the
    beats-the-default classifier's probability from the logits ``beats``; NaN without).
    """
    full = np.flatnonzero(ts.fidelity >= 1.0 - 1e-9)
    frame = pd.DataFrame(
        {
            "dataset": ts.dataset[full].astype(str),
            "task": ts.task[full],
            "row": full,
            "is_default": ts.is_default[full].astype(bool),
            "s": ts.oriented[full],
            "run_id": ts.run_id[full] if ts.run_id is not None else None,
        }
    )
    out = []
    for key, rows in frame.groupby("dataset", sort=True):
        defaults = rows[rows["is_default"]]
        if defaults.empty or len(rows) < 3 or not np.isfinite(members[rows["row"]]).all():
            continue
        d_row = int(defaults["row"].iloc[0])
        s_def = float(defaults["s"].iloc[0])
        m = members[rows["row"].to_numpy()]
        m_def = members[d_row]
        adv = m - m_def
        rows = rows.assign(
            signal=_signal(ts, d_row),
            s_default=s_def,
            mean=m.mean(axis=1),
            spread=m.std(axis=1),
            adv_mean=adv.mean(axis=1),
            adv_spread=adv.std(axis=1),
            default_mean=float(m_def.mean()),
            distance=distance.get(str(key), math.nan),
        )
        s = rows["s"].to_numpy()
        rows["beats"] = np.where(np.isfinite(s), s > s_def if np.isfinite(s_def) else True, False)
        rows["q"] = math.nan if beats is None else probability(beats[rows["row"].to_numpy()])
        out.append(rows)
    if not out:
        return pd.DataFrame()
    return pd.concat(out, ignore_index=True)


def probability(logit: np.ndarray) -> np.ndarray:
    """The logistic function (of the beats-the-default classifier's raw output)."""
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(logit, dtype=np.float64), -40.0, 40.0)))


def combine_p(p: np.ndarray, q: np.ndarray | None, weight: float = 0.5) -> np.ndarray:
    """The ``p_beats_default`` a policy uses: the calibrated ``p``, averaged with the
    beats-the-default classifier's probability ``q`` (its share: ``weight``) where there
    is one.

    Leave-one-group-out (``benchmarks/policy_cv.py``), the average kept the calibrated
    p's regret and raised the share of picks that did not lose to the default.
    """
    if q is None:
        return p
    q = np.asarray(q, dtype=np.float64)
    return np.where(np.isfinite(q), (1.0 - weight) * p + weight * q, p)


def _signal(ts: TrainingSet, row: int) -> float:
    """1-NN landmarker minus the linear one (a curved, low-noise problem is positive)."""
    names = list(ts.feature_names)
    if "mf_lm_1nn" not in names or "mf_lm_linear" not in names:
        return math.nan
    return float(ts.X[row, names.index("mf_lm_1nn")] - ts.X[row, names.index("mf_lm_linear")])


def signal_of(meta: Mapping[str, Any]) -> float:
    """:func:`_signal` of a request's meta-features (NaN when a landmarker is missing)."""
    try:
        out = float(meta.get("lm_1nn")) - float(meta.get("lm_linear"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return out if math.isfinite(out) else math.nan


@dataclass(frozen=True)
class Calibration:
    """A logistic map from the surrogate's view of a candidate to ``p_beats_default``.

    Attributes:
        features: names of the inputs, in order (:data:`CALIBRATION_FEATURES`).
        center: per-feature mean used to standardise.
        scale: per-feature standard deviation used to standardise.
        coef: logistic coefficients of the standardised features.
        intercept: logistic intercept.
        distance_fill: distance used when a request's distance is unknown.
        distance_threshold: beyond this nearest-dataset distance the policy answers with
            robust choices (learned on held-out groups).
        n_rows: training rows of the calibration (out-of-fold candidates).
        min_p: the bar on ``p_beats_default`` learned on held-out groups: the lowest of
            :data:`MIN_P_GRID` at which the picks did not lose to the default on at least
            :data:`TARGET_NOT_LOSE` of the held-out datasets (when none did, the one
            whose picks lost least often).
        unsafe_default_tasks: tasks for which the default is no fallback beyond
            ``distance_threshold`` (:func:`unsafe_default_tasks`).
    """

    features: tuple[str, ...]
    center: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    distance_fill: float
    distance_threshold: float
    n_rows: int = 0
    min_p: float = MIN_P_BEATS_DEFAULT
    unsafe_default_tasks: tuple[str, ...] = ()

    def p_beats_default(
        self,
        adv_mean: np.ndarray,
        adv_spread: np.ndarray,
        default_mean: float | np.ndarray,
        distance: float | np.ndarray,
        signal: float | np.ndarray = math.nan,
    ) -> np.ndarray:
        """Probability per candidate that it scores above the library default.

        Unknown inputs (NaN) count as the calibration's average, except the distance,
        which counts as the median held-out distance.
        """
        n = len(np.atleast_1d(adv_mean))
        dist = np.broadcast_to(np.asarray(distance, dtype=np.float64), (n,))
        dist = np.where(np.isfinite(dist), dist, self.distance_fill)
        cols = {
            "adv_mean": np.asarray(adv_mean, dtype=np.float64),
            "adv_spread": np.asarray(adv_spread, dtype=np.float64),
            "default_mean": np.broadcast_to(np.asarray(default_mean, dtype=np.float64), (n,)),
            "distance": dist,
            "signal": np.broadcast_to(np.asarray(signal, dtype=np.float64), (n,)),
        }
        center, scale, coef = self._arrays
        X = np.column_stack([cols[f] for f in self.features])
        X = np.where(np.isfinite(X), X, center)
        z = (X - center) / scale
        logit = z @ coef + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(logit, -40.0, 40.0)))

    @functools.cached_property
    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # Once per calibration, not per request (a frozen dataclass keeps a cached property).
        return np.asarray(self.center), np.asarray(self.scale), np.asarray(self.coef)

    def to_json(self) -> dict[str, Any]:
        """Plain numbers for the surrogate's metadata."""
        return {
            "features": list(self.features),
            "center": [round(float(v), 8) for v in self.center],
            "scale": [round(float(v), 8) for v in self.scale],
            "coef": [round(float(v), 8) for v in self.coef],
            "intercept": round(float(self.intercept), 8),
            "distance_fill": round(float(self.distance_fill), 6),
            "distance_threshold": round(float(self.distance_threshold), 6),
            "n_rows": int(self.n_rows),
            "min_p": round(float(self.min_p), 4),
            "unsafe_default_tasks": list(self.unsafe_default_tasks),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Calibration:
        """Inverse of :meth:`to_json`.

        Raises:
            ValueError: a malformed or non-finite calibration.
        """
        try:
            features = tuple(str(f) for f in data["features"])
            vectors = [tuple(float(v) for v in data[k]) for k in ("center", "scale", "coef")]
            cal = cls(
                features=features,
                center=vectors[0],
                scale=vectors[1],
                coef=vectors[2],
                intercept=float(data["intercept"]),
                distance_fill=float(data["distance_fill"]),
                distance_threshold=float(data["distance_threshold"]),
                n_rows=int(data.get("n_rows", 0)),
                min_p=float(data.get("min_p", MIN_P_BEATS_DEFAULT)),
                unsafe_default_tasks=tuple(str(t) for t in data.get("unsafe_default_tasks", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed p_beats_default calibration: {exc}") from None
        numbers = [*cal.center, *cal.scale, *cal.coef, cal.intercept, cal.distance_fill]
        if (
            set(features) - set(CALIBRATION_FEATURES)
            or not all(len(v) == len(features) for v in vectors)
            or not all(math.isfinite(v) for v in numbers)
            or math.isnan(cal.distance_threshold)
            or not 0.0 <= cal.min_p <= 1.0
            or not set(cal.unsafe_default_tasks) <= set(TASKS)
        ):
            raise ValueError("malformed p_beats_default calibration")
        return cal


def competitive(rows: pd.DataFrame, kappa: float, top: int = CALIBRATION_TOP) -> np.ndarray:
    """Mask of the ``top`` candidates per dataset by pessimistic score, and the defaults."""
    score = rows["mean"] - kappa * rows["spread"]
    rank = score.groupby(rows["dataset"]).rank(ascending=False, method="first")
    return ((rank <= top) | rows["is_default"]).to_numpy()


def fit_calibration(
    rows: pd.DataFrame,
    distance_threshold: float = math.inf,
    *,
    min_p: float = MIN_P_BEATS_DEFAULT,
    unsafe_default_tasks: Sequence[str] = (),
) -> Calibration:
    """Fit the logistic calibration on out-of-fold candidate rows (not the defaults)."""
    from sklearn.linear_model import LogisticRegression

    data = rows[~rows["is_default"]]
    features = tuple(f for f in CALIBRATION_FEATURES if f in data.columns)
    fill = float(np.nanmedian(data["distance"])) if data["distance"].notna().any() else 0.0
    X = np.array(data[list(features)].to_numpy(dtype=np.float64))
    j = features.index("distance")
    X[:, j] = np.where(np.isfinite(X[:, j]), X[:, j], fill)
    y = data["beats"].to_numpy(dtype=bool)
    known = np.isfinite(X)
    center = np.where(known, X, 0.0).sum(axis=0) / np.maximum(known.sum(axis=0), 1)
    X = np.where(np.isfinite(X), X, center)
    scale = X.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    # Rows of one dataset are many and correlated: weight each dataset equally.
    counts = data.groupby("dataset")["dataset"].transform("size").to_numpy()
    weight = 1.0 / counts
    if y.all() or not y.any():
        coef = np.zeros(len(features))
        intercept = 40.0 if y.all() else -40.0
    else:
        model = LogisticRegression(C=1.0, max_iter=1000)
        model.fit((X - center) / scale, y, sample_weight=weight * len(weight) / weight.sum())
        coef, intercept = model.coef_[0], float(model.intercept_[0])
    return Calibration(
        features=tuple(features),
        center=tuple(float(v) for v in center),
        scale=tuple(float(v) for v in scale),
        coef=tuple(float(v) for v in coef),
        intercept=intercept,
        distance_fill=fill,
        distance_threshold=float(distance_threshold),
        n_rows=len(data),
        min_p=float(min_p),
        unsafe_default_tasks=tuple(sorted(unsafe_default_tasks)),
    )


# ---------------------------------------------------------------------------------------
# Policies on measured candidates (the leave-one-group-out evaluation)


def pick(rows: pd.DataFrame, policy: str, *, kappa: float, tau: float) -> int:
    """Index (into ``rows``) of the config a policy picks on one dataset.

    Policies: ``surrogate`` (best pessimistic score, today's rule), ``guard`` (that pick,
    or the default when its ``p`` is below ``tau``), ``filter`` (best score among
    candidates with ``p >= tau``, else the default), ``max_p`` (highest ``p`` if at least
    ``tau``, else the default), ``default``.
    """
    is_def = rows["is_default"].to_numpy()
    default_at = int(np.flatnonzero(is_def)[0])
    if policy == "default":
        return default_at
    score = (rows["mean"] - kappa * rows["spread"]).to_numpy()
    p = rows["p"].to_numpy()
    if policy == "surrogate":
        return int(np.argmax(score))
    if policy == "guard":
        best = int(np.argmax(score))
        return best if is_def[best] or p[best] >= tau else default_at
    if policy == "filter":
        ok = (p >= tau) & ~is_def
        if not ok.any():
            return default_at
        return int(np.flatnonzero(ok)[np.argmax(score[ok])])
    if policy == "max_p":
        masked = np.where(is_def, -1.0, p)
        best = int(np.argmax(masked))
        return best if masked[best] >= tau else default_at
    raise ValueError(f"unknown policy {policy!r}")


def policy_outcomes(rows: pd.DataFrame, policies: Mapping[str, tuple[str, float]], kappa: float):
    """Per dataset and policy: the pick's regret, the default's, and whether it lost."""
    out = []
    for key, g in rows.groupby("dataset", sort=True):
        g = g.reset_index(drop=True)
        s = g["s"].to_numpy()
        best, worst = np.nanmax(s), np.nanmin(s)
        span = best - worst
        if not np.isfinite(span) or span <= 0:
            continue
        regret = np.where(np.isfinite(s), (best - s) / span, 1.0)
        s_def = float(g["s_default"].iloc[0])
        d_at = int(np.flatnonzero(g["is_default"].to_numpy())[0])
        for name, (policy, tau) in policies.items():
            i = pick(g, policy, kappa=kappa, tau=tau)
            lost = (not np.isfinite(s[i])) or s[i] < s_def - LOSS_TOLERANCE
            out.append(
                {
                    "dataset": key,
                    "task": g["task"].iloc[0],
                    "distance": float(g["distance"].iloc[0]),
                    "policy": name,
                    "regret": float(regret[i]),
                    "default_regret": float(regret[d_at]),
                    "lost": bool(lost),
                    "beats": bool(np.isfinite(s[i]) and s[i] > s_def),
                    "p": float(g["p"].iloc[i]) if not g["is_default"].iloc[i] else math.nan,
                    "picked_default": bool(g["is_default"].iloc[i]),
                }
            )
    return pd.DataFrame(out)


def summarise(outcomes: pd.DataFrame) -> dict[str, Any]:
    """Mean/median regret, not-lose and beat shares, worst loss, share answering default."""
    loss = (outcomes["regret"] - outcomes["default_regret"]).clip(lower=0.0)
    return {
        "n_datasets": int(len(outcomes)),
        "mean_regret": round(float(outcomes["regret"].mean()), 5),
        "median_regret": round(float(outcomes["regret"].median()), 5),
        "default_regret": round(float(outcomes["default_regret"].mean()), 5),
        "not_lose_share": round(float(1.0 - outcomes["lost"].mean()), 5),
        "beats_share": round(float(outcomes["beats"].mean()), 5),
        "worst_loss": round(float(loss.max()), 5),
        "default_share": round(float(outcomes["picked_default"].mean()), 5),
    }


def reliability(p: np.ndarray, won: np.ndarray, edges: Sequence[float]) -> list[dict[str, Any]]:
    """Predicted probability against the observed win rate, per bin of ``p``."""
    out = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (p >= lo) & ((p < hi) | (hi >= 1.0)) & np.isfinite(p)
        n = int(inside.sum())
        out.append(
            {
                "bin": f"[{lo:.1f}, {hi:.1f})",
                "n": n,
                "mean_p": round(float(p[inside].mean()), 4) if n else math.nan,
                "observed": round(float(won[inside].mean()), 4) if n else math.nan,
            }
        )
    return out


def learn_distance_threshold(outcomes: pd.DataFrame, *, min_tail: int = 5) -> float:
    """Distance beyond which the surrogate's held-out picks cost more than they brought.

    Answering with the default beyond a distance ``t`` gains nothing there and loses
    nothing; below ``t`` the surrogate's picks keep their record. ``t`` maximises the
    held-out gain so counted (the default's normalised regret minus the pick's, summed;
    at least ``min_tail`` datasets beyond a cut). When no cut raises the gain, it is the
    distance of the ``min_tail``-th farthest held-out dataset: beyond it fewer than
    ``min_tail`` datasets vouch for the picks (one far dataset that happened to win
    validated every request up to its distance, and the next far one lost 0.87).
    """
    top = outcomes[outcomes["policy"] == "surrogate"].dropna(subset=["distance"])
    if top.empty:
        return math.inf
    top = top.sort_values("distance", kind="mergesort")
    d = top["distance"].to_numpy()
    gain = (top["default_regret"] - top["regret"]).to_numpy(dtype=np.float64)
    n = len(d)
    kept = np.cumsum(gain)  # the gain when cutting after position i
    cuts = np.arange(n - min_tail)
    if cuts.size == 0:
        return float(d[-1])
    if kept[cuts].max() <= kept[-1]:
        return float(d[n - min_tail])
    i = int(cuts[np.argmax(kept[cuts])])
    return float((d[i] + d[i + 1]) / 2.0)


def unsafe_default_tasks(
    outcomes: pd.DataFrame,
    *,
    min_share: float = MIN_DEFAULT_NOT_LOSE,
    min_datasets: int = MIN_TASK_DATASETS,
) -> tuple[str, ...]:
    """Tasks whose default is no safe answer: it did not lose to the surrogate's held-out
    top-1 on under ``min_share`` of their datasets (at least ``min_datasets`` of them)."""
    top = outcomes[outcomes["policy"] == "surrogate"]
    unsafe = []
    for task, g in top.groupby("task", sort=True):
        held = (g["default_regret"] <= g["regret"] + 1e-9).mean()
        if len(g) >= min_datasets and held < min_share:
            unsafe.append(str(task))
    return tuple(unsafe)


def fallback_rule(outcomes: pd.DataFrame) -> tuple[float, tuple[str, ...]]:
    """The distance threshold and the tasks it does not apply to, learned on ``outcomes``.

    The threshold is learned on every task's datasets. Learned on the safe tasks' alone
    it fell from 1.21 to 0.08 for linear (its classification top-1 trails the default,
    which the bar, not the threshold, corrects) and its held-out regret rose 0.042 ->
    0.045 (leave-one-group-out, 3 seeds).
    """
    return learn_distance_threshold(outcomes), unsafe_default_tasks(outcomes)


def _fold_of(ts: TrainingSet, folds: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, int]:
    """The test fold of every dataset key."""
    return {
        str(key): f
        for f, (_, test_idx) in enumerate(folds)
        for key in np.unique(ts.dataset[test_idx])
    }


def cross_fit_p(rows: pd.DataFrame, fold_of: Mapping[str, int], *, kappa: float) -> np.ndarray:
    """``p_beats_default`` of every row from a calibration fitted on the other folds."""
    p = np.full(len(rows), np.nan)
    folds = rows["dataset"].map(fold_of).to_numpy()
    fit_on = competitive(rows, kappa)
    for f in np.unique(folds):
        train = rows[(folds != f) & fit_on]
        if train.empty:
            continue
        cal = fit_calibration(train)
        test = rows[folds == f]
        p[folds == f] = cal.p_beats_default(
            test["adv_mean"].to_numpy(),
            test["adv_spread"].to_numpy(),
            test["default_mean"].to_numpy(),
            test["distance"].to_numpy(),
            test["signal"].to_numpy(),
        )
    return p


def fit_from_cv(
    ts: TrainingSet,
    members: np.ndarray,
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    portfolio_json: Mapping[str, Any],
    *,
    kappa: float,
    min_p: float = MIN_P_BEATS_DEFAULT,
    beats: np.ndarray | None = None,
    beats_weight: float = 0.5,
) -> tuple[Calibration | None, dict[str, Any]]:
    """The calibration a retrain stores, from its grouped-CV out-of-fold predictions.

    Args:
        ts: the cross-validated rows.
        members: their out-of-fold member predictions (``CVReport.oof_members``).
        folds: the folds that produced them.
        portfolio_json: the history's datasets with their meta-features
            (``Portfolio.to_json``), for the held-out distances.
        kappa: the surrogate's pessimism.
        min_p: the policy's bar on ``p_beats_default``.
        beats: out-of-fold logits of the beats-the-default classifier
            (``CVReport.oof_beats``), when the recipe has one.
        beats_weight: the classifier's share of ``p_beats_default`` (:func:`combine_p`).

    Returns:
        The calibration (None when no dataset has a measured default and other configs)
        and a summary of the policy it drives on the held-out folds (cross-fitted).
    """
    distance = held_out_distances(portfolio_json, ts.family, ts, folds)
    rows = candidate_rows(ts, members, distance, beats)
    if rows.empty or rows["is_default"].sum() < 3:
        return None, {"reason": "too few datasets with a measured default"}
    fold_of = _fold_of(ts, folds)
    rows["p"] = combine_p(
        cross_fit_p(rows, fold_of, kappa=kappa), rows["q"].to_numpy(), beats_weight
    )
    grid = [t for t in MIN_P_GRID if t >= min_p] or [min_p]
    policies = {"surrogate": ("surrogate", 0.0), **{f"p>={t}": (SERVED_RULE, t) for t in grid}}
    outcomes = policy_outcomes(rows, policies, kappa=kappa)
    threshold, unsafe = fallback_rule(outcomes)
    bar, by_bar = choose_bar(outcomes, grid)
    calibration = fit_calibration(
        rows[competitive(rows, kappa)],
        distance_threshold=threshold,
        min_p=bar,
        unsafe_default_tasks=unsafe,
    )
    chosen = outcomes[outcomes["policy"] == f"p>={bar}"]
    picks = chosen[~chosen["picked_default"]]
    high = picks[picks["p"] >= 0.8]
    summary = {
        "folds": len(folds),
        "held_out_datasets": int(len(chosen)),
        "surrogate_top1": summarise(outcomes[outcomes["policy"] == "surrogate"]),
        "policy": summarise(chosen),
        "min_p": bar,
        "by_min_p": {str(t): by_bar[t] for t in grid},
        "picks_p_ge_0.8": {
            "n": int(len(high)),
            "beat_share": round(float(high["beats"].mean()), 4) if len(high) else None,
        },
    }
    return calibration, summary


def choose_bar(
    outcomes: pd.DataFrame, grid: Sequence[float], target: float = TARGET_NOT_LOSE
) -> tuple[float, dict[float, dict[str, Any]]]:
    """The lowest bar on ``p_beats_default`` whose held-out picks met the not-lose target.

    ``outcomes`` holds the policies ``p>=T`` for every ``T`` of ``grid``. When no bar meets
    ``target``, the one whose picks lost least often (the lowest on ties).
    """
    by_bar = {t: summarise(outcomes[outcomes["policy"] == f"p>={t}"]) for t in grid}
    reaching = [t for t in grid if by_bar[t]["not_lose_share"] >= target]
    bar = reaching[0] if reaching else max(grid, key=lambda t: (by_bar[t]["not_lose_share"], -t))
    return bar, by_bar


def nested_policy(
    outcomes: pd.DataFrame,
    fold_of: Mapping[str, int],
    grid: Sequence[float],
    target: float = TARGET_NOT_LOSE,
):
    """Outcomes of the served policy with its bar and distance threshold learned per fold.

    For each fold, the bar (:func:`choose_bar`) and the distance threshold
    (:func:`fallback_rule`) are learned on the *other* folds' outcomes, as a
    retrain learns them on its history; the fold's datasets then get the default beyond
    the threshold (unless their task's default is unsafe) and the picks of ``p>=bar``
    elsewhere.
    """
    fold = outcomes["dataset"].map(fold_of).to_numpy()
    parts = []
    for f in np.unique(fold):
        other = outcomes[fold != f]
        bar, _ = choose_bar(other, grid, target)
        threshold, unsafe = fallback_rule(other)
        mine = outcomes[fold == f]
        picked = mine[mine["policy"] == f"p>={bar}"].set_index("dataset")
        default = mine[mine["policy"] == "default"].set_index("dataset")
        far = (picked["distance"].to_numpy() > threshold) & ~picked["task"].isin(unsafe).to_numpy()
        chosen = pd.concat([picked[~far], default.loc[picked.index[far]]])
        parts.append(chosen.assign(policy="hyperprior", bar=bar, threshold=threshold))
    return pd.concat(parts).reset_index()


POLICIES: dict[str, tuple[str, float]] = {
    "library default": ("default", 0.0),
    "surrogate top-1 (before)": ("surrogate", 0.0),
    "guard p>=0.5": ("guard", 0.5),
    "filter p>=0.5": ("filter", 0.5),
    "filter p>=0.6": ("filter", 0.6),
    "filter p>=0.7": ("filter", 0.7),
    "max p (>=0.5)": ("max_p", 0.5),
}
CHOSEN = "hyperprior (learned bar, distance fallback)"


def held_out_rows(frame: pd.DataFrame, family: str, *, n_folds: int, params: Any):
    """Each held-out dataset's candidates with out-of-fold scores and ``p_beats_default``.

    Returns ``(ts, folds, rows, fold_of)``, or None with fewer than 3 datasets: the
    members, the beats classifier and the calibration are all fitted without the
    candidate's own source group.
    """
    from hyperprior.training.suggest import Portfolio
    from hyperprior.training.surrogate import oof_beats, oof_member_predictions

    ts = build_training_set(frame, family, normalisation=params.normalisation)
    if ts.n_datasets < 3:
        return None
    folds = group_folds(ts, n_folds)
    members = oof_member_predictions(ts, params, folds)
    beats = oof_beats(ts, params, folds) if params.beats_model else None
    ok = frame[frame["family"] == family]
    if "status" in ok.columns:
        ok = ok[ok["status"] == "ok"]
    portfolio = Portfolio.from_frame(ok, family).to_json()
    distance = held_out_distances(portfolio, family, ts, folds)
    rows = candidate_rows(ts, members, distance, beats)
    fold_of = _fold_of(ts, folds)
    rows["p"] = combine_p(
        cross_fit_p(rows, fold_of, kappa=params.kappa), rows["q"].to_numpy(), params.beats_weight
    )
    return ts, folds, rows, fold_of


def evaluate_policies(
    frame: pd.DataFrame,
    family: str,
    *,
    n_folds: int = 10,
    params: Any = None,
    not_candidates: Collection[str] = (),
) -> dict[str, Any] | None:
    """Leave-one-group-out evaluation of the policies for one family (see the module doc).

    ``not_candidates``: run ids the surrogate trains on but no policy may pick, and that
    do not set a held-out dataset's best: so a history with more runs (adaptive ones)
    is judged on the same candidates as the history without them.
    """
    from hyperprior.training.datasets import dataset_group
    from hyperprior.training.surrogate import SurrogateParams

    params = params or SurrogateParams.for_family(family)
    held = held_out_rows(frame, family, n_folds=n_folds, params=params)
    if held is None:
        return None
    ts, folds, rows, fold_of = held
    if not_candidates:
        if ts.run_id is None:
            raise ValueError("not_candidates needs runs with ids (an 'id' column)")
        rows = rows[~rows["run_id"].isin(set(not_candidates))].reset_index(drop=True)
    grid = list(MIN_P_GRID)
    policies = {
        **POLICIES,
        "surrogate": ("surrogate", 0.0),
        "default": ("default", 0.0),
        **{f"p>={t}": (SERVED_RULE, t) for t in grid},
    }
    outcomes = policy_outcomes(rows, policies, kappa=params.kappa)
    threshold, unsafe = fallback_rule(outcomes)
    chosen = nested_policy(outcomes, fold_of, grid)
    outcomes = pd.concat([outcomes, chosen.assign(policy=CHOSEN)], ignore_index=True)
    shown = [*POLICIES, CHOSEN]
    by_policy = {
        name: {
            **summarise(outcomes[outcomes["policy"] == name]),
            "by_task": by_task(outcomes[outcomes["policy"] == name]),
        }
        for name in shown
    }
    top1 = outcomes[outcomes["policy"] == "surrogate"]
    cand = rows[~rows["is_default"]]
    edges = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    picks = chosen[~chosen["picked_default"]]
    high = picks[picks["p"] >= 0.8]
    return {
        "n_datasets": int(ts.n_datasets),
        "n_groups": len({dataset_group(ts.dataset_names.get(d, d)) for d in np.unique(ts.dataset)}),
        "n_folds": len(folds),
        "chosen_policy": CHOSEN,
        "policies": by_policy,
        "reliability": {
            "candidates": reliability(cand["p"].to_numpy(), cand["beats"].to_numpy(), edges),
            "picks": reliability(picks["p"].to_numpy(), picks["beats"].to_numpy(), edges),
            "picks_p_ge_0.8": {
                "n": len(high),
                "beat_share": round(float(high["beats"].mean()), 4) if len(high) else None,
            },
        },
        "distance_threshold": round(threshold, 4),
        "unsafe_default_tasks": list(unsafe),
        "bars_learned_per_fold": sorted(float(b) for b in chosen["bar"].unique()),
        "thresholds_learned_per_fold": sorted(
            round(float(t), 4) for t in chosen["threshold"].unique()
        ),
        "by_distance": by_distance(top1, chosen),
        # Real and synthetic datasets apart, so corpora with and without the synthetic
        # regimes compare on the same real held-out datasets.
        "by_source": by_source(outcomes, ts.dataset_names),
        "per_dataset": chosen[["dataset", "task", "distance", "regret", "default_regret", "p"]]
        .round(5)
        .to_dict(orient="records"),
    }


def by_source(outcomes: pd.DataFrame, names: Mapping[str, str]) -> dict[str, Any]:
    """:func:`summarise` of the main policies on real and on synthetic datasets apart."""
    synthetic = outcomes["dataset"].map(lambda d: str(names.get(d, d)).startswith("synthetic/"))
    out: dict[str, Any] = {}
    for label, mask in (("real", ~synthetic), ("synthetic", synthetic)):
        part = outcomes[mask.to_numpy()]
        if part.empty:
            continue
        out[label] = {
            name: {
                **summarise(part[part["policy"] == name]),
                "by_task": by_task(part[part["policy"] == name]),
            }
            for name in ("library default", "surrogate top-1 (before)", CHOSEN)
            if (part["policy"] == name).any()
        }
    return out


def by_task(outcomes: pd.DataFrame) -> dict[str, Any]:
    """:func:`summarise` per task."""
    return {str(t): summarise(g) for t, g in outcomes.groupby("task", sort=True)}


def by_distance(top1: pd.DataFrame, chosen: pd.DataFrame, n_bins: int = 4) -> list[dict[str, Any]]:
    """Not-lose share of the surrogate's top-1 and of the chosen policy, by distance quartile."""
    d = top1["distance"].to_numpy()
    if not np.isfinite(d).any():
        return []
    edges = np.unique(np.nanquantile(d, np.linspace(0, 1, n_bins + 1)))
    out = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        a = top1[(top1["distance"] >= lo) & (top1["distance"] <= hi)]
        b = chosen[(chosen["distance"] >= lo) & (chosen["distance"] <= hi)]
        out.append(
            {
                "bin": f"{lo:.2f}-{hi:.2f}",
                "n": len(a),
                "top1_not_lose": round(float(1 - a["lost"].mean()), 4) if len(a) else math.nan,
                "policy_not_lose": round(float(1 - b["lost"].mean()), 4) if len(b) else math.nan,
            }
        )
    return out
