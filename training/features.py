"""Runs -> surrogate features, and a target that is comparable across datasets.

One code path serves retraining and suggesting: :func:`build_training_set` turns the
run history of one family into ``X, y``, and :func:`design_matrix` (which it calls)
turns freshly generated candidate configs plus the meta-features of the user's dataset
into the same columns at fidelity 1. The columns, in order (:func:`feature_names`):

* ``mf_*``: the dataset's core meta-features (:data:`hyperprior.training.metafeatures.CORE`),
  NaN when unknown (LightGBM routes missing values on its own).
* ``fidelity``: the fraction of the data/budget the run used (1 when suggesting).
* ``task_*``: one-hot of the task.
* ``cfg_*``: the config in the family's unit cube (``Space.encode_many``), so log-scaled
  parameters are already on a log scale.
* ``ix_*``: hand-made interactions of hyperparameters with the data, because a tree
  splits on one feature at a time and cannot form ``min_child_samples / n_rows`` itself;
  e.g. ``log(min_child_samples / rows)``, ``log(num_leaves) / log(rows)``,
  ``log(n_estimators * learning_rate)``, ``log(batch_size / rows)``, the number of SGD
  steps ``log(epochs * rows / batch_size)``, ``log(C * rows)``. ``rows`` is
  ``n_rows * fidelity``: a run at fidelity 0.25 saw a quarter of the rows, so a
  min_child_samples that is large for it is large because of the fidelity. Six are the
  data's signal, for every family: ``lm_1nn - lm_linear`` (a curved, low-noise boundary,
  where capacity pays), the best landmarker's gain over a stump (leave-one-group-out,
  they cut random_forest's top-1 regret from 0.090 to 0.074: ``benchmarks/policy_cv.py``)
  and ``lm_gbdt - lm_linear`` (structure a booster finds and a linear model does not,
  which the 1-NN misses among irrelevant columns; features version 3). Features version
  4 adds how a fully grown tree, a small forest and a fifth of the boosting rounds fare
  against ``lm_gbdt``: label noise a deep tree fits, structure averaging recovers, and
  whether more rounds pay (``benchmarks/experiments/landmarker_ablation.py``).

The target: raw scores are not comparable across datasets (an AUC of 0.8 is superb on
one and poor on another), so quality is normalised within each (dataset, metric) group
of the family. Two normalisations are implemented and were compared by grouped CV by
dataset (5 folds, same folds for every variant; ``benchmarks/surrogate_cv.py`` on the
bootstrap history of 75 real datasets; top-1 regret of the pick among each held-out
dataset's measured configs, lower is better):

===============  ========  =============  ======
target           lightgbm  random_forest  linear
===============  ========  =============  ======
rank percentile  0.109     0.104          0.0073
min-max          0.127     0.122          0.0105
===============  ========  =============  ======

* ``rank``: the percentile rank of the run within its group, in [0, 1] (ties share the
  mean rank). Insensitive to outliers: one diverged config with AUC 0.5 does not squash
  every other run towards 1, and the target is uniform on every dataset, so each dataset
  weighs the same in the L2 loss. **The default**: lower regret, higher Spearman and
  NDCG@5 for every family.
* ``minmax``: ``(score - min) / (max - min)`` of the group's ok runs. Keeps the size of
  the gaps between configs (a flat dataset stays flat) but one outlier compresses the
  rest, and datasets where nothing matters get as much spread as those where everything
  does.

The interactions earn their place in the same comparison: without the ``ix_*`` columns
the regret rises to 0.119 (lightgbm) and 0.133 (random_forest), and LightGBM's
within-dataset Spearman falls from 0.54 to 0.46.

A ranking objective (LightGBM ``lambdarank`` grouped by dataset) uses the rank target
binned into integer relevance levels (:func:`relevance_labels`).

Failed runs (crash, timeout, out of memory) get the worst quality of their group (0),
ranked below every ok run: a config that fails on a dataset like the user's must not be
suggested, and treating failure as the worst outcome teaches the surrogate exactly that.
Groups with fewer than :data:`MIN_GROUP_RUNS` ok runs, or in which every ok run has the
same score, carry no ranking information and are dropped.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from hyperprior.vocabulary import TASKS

FEATURES_VERSION = 4
"""Bumped whenever the columns or their meaning change; stored with every surrogate."""

NORMALISATIONS: tuple[str, ...] = ("rank", "minmax", "tied_rank")
# ``tied_rank``: scores closer than this (in the metric's units) count as a tie.
TIE_TOLERANCE = 0.002
FAILED_QUALITY = 0.0
MIN_GROUP_RUNS = 3

# Meta-features the interactions need; the names are those of training.metafeatures.
N_ROWS = "n_rows"
N_FEATURES = "n_features"

_UNSAFE = re.compile(r"[^0-9A-Za-z_.\-]")


def landmarkers() -> tuple[str, ...]:
    """The landmarker meta-features, which every interaction may read."""
    from hyperprior.training.metafeatures import LANDMARKERS

    return LANDMARKERS


def core_metafeatures() -> tuple[str, ...]:
    """The core meta-feature names, in the order they appear as ``mf_*`` columns."""
    from hyperprior.training.metafeatures import CORE

    return tuple(CORE)


def _space(family: str) -> Any:
    from hyperprior.training.spaces import get_space

    return get_space(family)


@lru_cache(maxsize=32)
def fidelity_unit(family: str) -> str:
    """What a fidelity below 1 cuts for ``family``: ``"rows"`` or ``"epochs"``."""
    try:
        from hyperprior.training.families import get_family

        return str(get_family(family).fidelity_unit)
    except (ImportError, KeyError, ValueError):
        return "rows"


def _safe(name: str) -> str:
    # LightGBM refuses JSON-special characters in feature names.
    return _UNSAFE.sub("_", str(name))


# ---------------------------------------------------------------------------------------
# Interactions of hyperparameters with the data


def safe_log(x: np.ndarray) -> np.ndarray:
    """``log(x)`` where ``x > 0``, NaN elsewhere (no warnings)."""
    x = np.asarray(x, dtype=np.float64)
    pos = x > 0
    # log only sees positive numbers (NaN and <= 0 become 1): no errstate needed.
    return np.where(pos, np.log(np.where(pos, x, 1.0)), np.nan)


_log = safe_log


class Inputs(dict[str, np.ndarray]):
    """The columns an :class:`Interaction` reads, remembering transforms of them: several
    interactions take the log of one parameter, computed once per design matrix."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._memo: dict[tuple[str, Callable[..., np.ndarray]], np.ndarray] = {}

    def apply(self, fn: Callable[[np.ndarray], np.ndarray], name: str) -> np.ndarray:
        """``fn(self[name])``, computed on first use (read-only: it is shared)."""
        key = (name, fn)
        out = self._memo.get(key)
        if out is None:
            out = self._memo[key] = fn(self[name])
        return out


def applied(
    values: Mapping[str, np.ndarray], fn: Callable[[np.ndarray], np.ndarray], name: str
) -> np.ndarray:
    """``fn(values[name])``, remembered when ``values`` is an :class:`Inputs`."""
    if isinstance(values, Inputs):
        return values.apply(fn, name)
    return fn(values[name])


@dataclass(frozen=True)
class Interaction:
    """A derived column computed from raw parameter values and the data's size.

    ``fn`` gets a mapping with the raw parameters named in ``params`` plus ``rows``
    (the training rows the run saw: n_rows, times the fidelity for families whose
    fidelity cuts rows), ``epoch_fraction`` (the fidelity for families whose fidelity
    cuts epochs, else 1), ``features`` (n_features) and the landmarkers
    (:func:`landmarkers`), each a float array. Each family lists its own
    (``Family.interactions``).
    """

    name: str
    params: tuple[str, ...]
    fn: Callable[[Mapping[str, np.ndarray]], np.ndarray]


DATA_INTERACTIONS: tuple[Interaction, ...] = (
    # The data's signal, for every family: how far a 1-NN gets beyond a linear model
    # (curved, low-noise boundaries: capacity pays) and beyond a stump at all.
    Interaction("signal_1nn_minus_linear", (), lambda v: v["lm_1nn"] - v["lm_linear"]),
    Interaction(
        "learnable_beyond_stump",
        (),
        lambda v: np.fmax(np.fmax(v["lm_1nn"], v["lm_linear"]), v["lm_nb"]) - v["lm_stump"],
    ),
    Interaction("signal_gbdt_minus_linear", (), lambda v: v["lm_gbdt"] - v["lm_linear"]),
    # Features version 4: how a deep tree, a forest and shorter boosting fare against
    # lm_gbdt (noise a deep tree fits, structure averaging recovers, rounds that pay).
    Interaction("tree_minus_gbdt", (), lambda v: v["lm_tree"] - v["lm_gbdt"]),
    Interaction("rf_minus_gbdt", (), lambda v: v["lm_rf"] - v["lm_gbdt"]),
    Interaction("gbdt_minus_short", (), lambda v: v["lm_gbdt"] - v["lm_gbdt_short"]),
)
"""Interactions of the data alone, appended to every family's own."""


def _param_names(space: Any) -> tuple[str, ...]:
    """The parameter names a space knows, whatever attribute it exposes them under."""
    for attr in ("param_names", "names"):
        names = getattr(space, attr, None)
        if names is not None and not callable(names):
            return tuple(str(n) for n in names)
    params = getattr(space, "params", None)
    if params is not None:
        if isinstance(params, Mapping):
            return tuple(str(k) for k in params)
        return tuple(str(getattr(p, "name", p)) for p in params)
    return tuple(str(n) for n in space.dim_names)


@lru_cache(maxsize=32)
def interactions_for(family: str) -> tuple[Interaction, ...]:
    """``family``'s own interactions, then :data:`DATA_INTERACTIONS` (first by name).

    Raises:
        ValueError: an interaction names a parameter the family's space does not have.
    """
    from hyperprior.training.families import get_family

    fam = get_family(family)
    known = set(_param_names(fam.space))
    chosen: dict[str, Interaction] = {}
    for ix in (*fam.interactions, *DATA_INTERACTIONS):
        missing = [p for p in ix.params if p not in known]
        if missing:
            raise ValueError(f"{family}: interaction {ix.name} needs unknown {missing}")
        chosen.setdefault(ix.name, ix)
    return tuple(chosen.values())


def clear_caches() -> None:
    """Forget the per-family columns (after the family registry changed)."""
    for cached in (fidelity_unit, interactions_for, _feature_names, _string_codes):
        cached.cache_clear()


def feature_names(family: str) -> list[str]:
    """The surrogate's input columns for ``family``, in order."""
    return list(_feature_names(family))


@lru_cache(maxsize=32)
def _feature_names(family: str) -> tuple[str, ...]:
    space = _space(family)
    return tuple(
        [f"mf_{_safe(n)}" for n in core_metafeatures()]
        + ["fidelity"]
        + [f"task_{t}" for t in TASKS]
        + [f"cfg_{_safe(n)}" for n in space.dim_names]
        + [f"ix_{ix.name}" for ix in interactions_for(family)]
    )


# ---------------------------------------------------------------------------------------
# Configs


@dataclass(frozen=True)
class ConfigBlock:
    """Configs of one family with their unit-cube encoding and raw numeric values.

    Attributes:
        configs: the configs themselves (estimator keyword arguments).
        unit: ``(n, d)`` unit-cube encoding from ``Space.encode_many``.
        raw: raw values of the parameters the interactions need, as float arrays
            (NaN where a config lacks the parameter or its value is not numeric).
    """

    configs: tuple[dict[str, Any], ...]
    unit: np.ndarray
    raw: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.configs)

    def take(self, index: Sequence[int] | np.ndarray) -> ConfigBlock:
        """The rows at ``index``, in that order."""
        idx = np.asarray(index, dtype=np.int64)
        return ConfigBlock(
            configs=tuple(self.configs[i] for i in idx),
            unit=self.unit[idx],
            raw={k: v[idx] for k, v in self.raw.items()},
        )

    @staticmethod
    def concat(blocks: Sequence[ConfigBlock]) -> ConfigBlock:
        """One block holding the rows of ``blocks`` in order (all of the same family)."""
        blocks = [b for b in blocks if len(b)]
        if not blocks:
            raise ValueError("nothing to concatenate")
        keys = set(blocks[0].raw)
        return ConfigBlock(
            configs=tuple(c for b in blocks for c in b.configs),
            unit=np.vstack([b.unit for b in blocks]),
            raw={k: np.concatenate([b.raw[k] for b in blocks]) for k in keys},
        )


def _raw_column(configs: Sequence[Mapping[str, Any]], param: Any) -> np.ndarray:
    """Raw numeric values of one parameter; see :class:`ConfigBlock` for the conventions."""
    name = getattr(param, "name", param)
    return raw_values(param, [c.get(name) for c in configs], [name in c for c in configs])


def raw_values(
    param: Any, values: Sequence[Any], present: Sequence[bool] | np.ndarray
) -> np.ndarray:
    """:func:`_raw_column` of one parameter given as a column of values.

    Args:
        param: the parameter (or its name).
        values: its value per config (anything where absent).
        present: whether each config has the parameter.
    """
    name = getattr(param, "name", param)
    none_means = getattr(param, "none_means", None)
    mask = np.asarray(present, dtype=bool).reshape(-1)
    everywhere = bool(mask.all())
    # An inactive conditional parameter behaves as its default (no bagging: all rows).
    fill = math.nan
    if getattr(param, "condition", None) is not None:
        default = getattr(param, "default", None)
        value = _raw_value(none_means if default is None else default, name)
        fill = math.nan if value is None else value
    if isinstance(values, np.ndarray) and values.dtype.kind in "biuf":
        # Decoded numbers as an array (no None): what the paths below give, in one go.
        out = np.full(len(mask), fill)
        out[mask] = values.reshape(len(mask))[mask]
        return out
    if none_means is None and math.isnan(fill):
        try:
            # Fast path: plain numbers (None and missing become NaN).
            column = (
                values
                if everywhere
                else [v if p else None for v, p in zip(values, mask.tolist(), strict=True)]
            )
            return np.array(column, dtype=np.float64).reshape(len(mask))
        except (TypeError, ValueError):
            pass
    out = np.full(len(mask), fill)
    rows = np.flatnonzero(mask)
    given = list(values) if everywhere else [values[i] for i in rows.tolist()]
    if none_means is not None:
        given = [none_means if v is None else v for v in given]
    try:
        arr = np.array(given)
    except (TypeError, ValueError, OverflowError):  # ragged lists and the like
        arr = np.empty(0, dtype=object)
    if arr.shape == (len(rows),) and arr.dtype.kind in "biuf":
        # Numbers and booleans only: what _raw_value gives one by one, in one go.
        out[rows] = arr.astype(np.float64)
        return out
    for i, value in zip(rows.tolist(), given, strict=True):
        raw = _raw_value(value, name)
        out[i] = math.nan if raw is None else raw
    return out


@lru_cache(maxsize=64)
def _string_codes(name: str) -> Mapping[str, float]:
    """What string values of parameter ``name`` stand for (``Family.raw_codes``)."""
    from hyperprior.training.families import FAMILIES

    for fam in FAMILIES.values():
        if name in fam.raw_codes:
            return fam.raw_codes[name]
    return {}


def _raw_value(value: Any, name: str) -> float | None:
    if isinstance(value, bool | np.bool_):
        return float(value)
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value)
    if isinstance(value, str):
        return _string_codes(name).get(value)
    return None


def encode_configs(family: str, configs: Sequence[Mapping[str, Any]]) -> ConfigBlock:
    """Encode configs of ``family`` for :func:`design_matrix`.

    Args:
        family: the model family whose space encodes the configs.
        configs: estimator keyword arguments, one mapping per config.

    Returns:
        The block of configs with their unit-cube encoding and raw interaction inputs.
    """
    space = _space(family)
    copies = tuple(dict(c) for c in configs)
    if copies:
        unit = np.asarray(space.encode_many(list(copies)), dtype=np.float64)
        unit = unit.reshape(len(copies), len(space.dim_names))
    else:
        unit = np.empty((0, len(space.dim_names)))
    needed = sorted({p for ix in interactions_for(family) for p in ix.params})
    by_name = {getattr(p, "name", p): p for p in getattr(space, "params", ())}
    raw = {p: _raw_column(copies, by_name.get(p, p)) for p in needed}
    return ConfigBlock(configs=copies, unit=unit, raw=raw)


# ---------------------------------------------------------------------------------------
# The design matrix


MetaInput = Mapping[str, Any]


def _meta_column(meta: MetaInput, name: str, n: int) -> np.ndarray:
    value = meta.get(name)
    if value is None:
        return np.full(n, np.nan)
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        return np.full(n, float(arr))
    if arr.shape != (n,):
        raise ValueError(f"meta-feature {name!r} has {arr.shape[0]} values for {n} rows")
    return arr


def _constant_head(
    meta: MetaInput, core: Sequence[str], task: Any, fidelity: Any
) -> np.ndarray | None:
    """The meta-feature, fidelity and task columns as one row, if every row shares them.

    None when any of them is given per row (training rows).
    """
    if not isinstance(task, str) or np.ndim(fidelity) != 0:
        return None
    head = []
    for name in core:
        value = meta.get(name)
        if value is None:
            head.append(math.nan)
            continue
        if isinstance(value, float):  # Python or numpy float64: no array needed
            head.append(float(value))
            continue
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim != 0:
            return None
        head.append(float(arr))
    head.append(float(fidelity))
    head.extend(float(task == t) for t in TASKS)
    return np.array(head, dtype=np.float64)


def design_matrix(
    family: str,
    block: ConfigBlock,
    meta: MetaInput,
    *,
    task: str | Sequence[str] | np.ndarray,
    fidelity: float | np.ndarray = 1.0,
) -> np.ndarray:
    """The surrogate's input matrix for ``block`` on data described by ``meta``.

    Used both for training rows (``meta`` values are per-row arrays, ``task`` and
    ``fidelity`` arrays) and for scoring candidates for one dataset (``meta`` values
    are scalars broadcast to every row, ``fidelity`` 1).

    Args:
        family: the model family (fixes the columns, see :func:`feature_names`).
        block: the configs, from :func:`encode_configs`.
        meta: meta-feature name -> scalar or per-row array; missing names are NaN.
        task: one task for all rows, or one per row.
        fidelity: one fidelity for all rows, or one per row.

    Returns:
        A C-contiguous ``(len(block), len(feature_names(family)))`` float64 matrix.
    """
    n = len(block)
    core = core_metafeatures()
    ixs = interactions_for(family)
    width = len(core) + 1 + len(TASKS) + block.unit.shape[1] + len(ixs)
    X = np.empty((n, width), dtype=np.float64)
    fid = np.broadcast_to(np.asarray(fidelity, dtype=np.float64), (n,))
    head = _constant_head(meta, core, task, fidelity)
    if head is not None:
        # Candidates for one dataset: the leading columns are one row, broadcast in one
        # write instead of ~40 strided column writes over the whole pool.
        col = len(head)
        X[:, :col] = head
    else:
        col = 0
        for name in core:
            X[:, col] = _meta_column(meta, name, n)
            col += 1
        X[:, col] = fid
        col += 1
        tasks = np.broadcast_to(np.asarray(task, dtype=object), (n,))
        for t in TASKS:
            X[:, col] = tasks == t
            col += 1
    d = block.unit.shape[1]
    X[:, col : col + d] = block.unit
    col += d
    if ixs:
        values = Inputs(block.raw)
        by_epochs = fidelity_unit(family) == "epochs"
        # One dataset's candidates share the data's columns: one value each, broadcast
        # by the interactions (the same arithmetic on the same numbers, once).
        m = 1 if head is not None else n
        fid_m = fid[:m]
        values["rows"] = _meta_column(meta, N_ROWS, m) * (1.0 if by_epochs else fid_m)
        values["epoch_fraction"] = fid_m if by_epochs else np.ones(m)
        values["features"] = _meta_column(meta, N_FEATURES, m)
        for name in landmarkers():
            values[name] = _meta_column(meta, name, m)
        with np.errstate(divide="ignore", invalid="ignore"):
            for ix in ixs:
                out = np.asarray(ix.fn(values), dtype=np.float64)
                X[:, col] = np.where(np.isfinite(out), out, np.nan)
                col += 1
    return X


# ---------------------------------------------------------------------------------------
# The target


def _first_column(frame: pd.DataFrame, *names: str) -> pd.Series | None:
    for name in names:
        if name in frame.columns:
            return frame[name]
    return None


def oriented_scores(frame: pd.DataFrame) -> np.ndarray:
    """Scores turned so that higher is better; NaN for failed runs or missing scores."""
    score = pd.to_numeric(frame["score"], errors="coerce").to_numpy(dtype=np.float64)
    direction = _first_column(frame, "direction")
    if direction is not None:
        sign = np.where(direction.astype(str).str.lower().str.startswith("min"), -1.0, 1.0)
        score = score * sign
    status = _first_column(frame, "status")
    if status is not None:
        score = np.where(status.astype(str).to_numpy() == "ok", score, np.nan)
    return score


#: Metrics where lower is better (the runs' ``metrics`` maps); every other is maximised.
MINIMISED_METRICS = frozenset({"log_loss", "rmse", "mae", "fit_seconds", "predict_seconds"})


def runs_for_target(frame: pd.DataFrame, target: str) -> pd.DataFrame:
    """The runs as if ``target`` had been their primary metric.

    ``score``, ``metric`` and ``direction`` come from each run's ``metrics`` map; runs
    that did not measure ``target`` are left out (failed runs stay, as failures). With
    ``target`` ``""`` the frame is returned unchanged.
    """
    if not target:
        return frame
    metrics = frame["metrics"] if "metrics" in frame.columns else pd.Series(None, index=frame.index)
    value = np.array(
        [m.get(target, np.nan) if isinstance(m, dict) else np.nan for m in metrics],
        dtype=np.float64,
    )
    failed = (frame["status"] != "ok").to_numpy() if "status" in frame.columns else False
    keep = np.isfinite(value) | failed
    out = frame.loc[keep].copy()
    out["score"] = value[keep]
    out["metric"] = target
    out["direction"] = "minimize" if target in MINIMISED_METRICS else "maximize"
    return out


def normalise_quality(
    oriented: np.ndarray, groups: np.ndarray, *, method: str = "rank"
) -> np.ndarray:
    """Quality in [0, 1] within each group; failed runs (NaN) get :data:`FAILED_QUALITY`.

    Args:
        oriented: scores, higher is better, NaN for failed runs.
        groups: integer group code per row (one group per dataset and metric).
        method: ``"rank"`` (percentile rank, failed runs ranked last) or ``"minmax"``.

    Returns:
        Normalised quality per row; NaN for rows of groups with no ranking information.
    """
    if method not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {method!r}; expected one of {NORMALISATIONS}")
    frame = pd.DataFrame({"g": groups, "s": oriented})
    ok = frame["s"].notna()
    by = frame.groupby("g", sort=False)["s"]
    n_ok = by.transform("count").to_numpy()
    lo = by.transform("min").to_numpy()
    hi = by.transform("max").to_numpy()
    informative = (n_ok >= MIN_GROUP_RUNS) & (hi > lo)
    if method == "tied_rank":
        quality = _tied_rank(frame["s"].to_numpy(), frame["g"].to_numpy(), TIE_TOLERANCE)
        quality = np.where(ok.to_numpy(), quality, FAILED_QUALITY)
    elif method == "rank":
        # Failed runs share the bottom rank, below every ok run.
        filled = frame["s"].fillna(-np.inf)
        rank = filled.groupby(frame["g"], sort=False).rank(method="average").to_numpy()
        size = frame.groupby("g", sort=False)["g"].transform("size").to_numpy()
        quality = (rank - 1.0) / np.maximum(size - 1.0, 1.0)
        quality = np.where(ok.to_numpy(), quality, FAILED_QUALITY)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            quality = (frame["s"].to_numpy() - lo) / (hi - lo)
        quality = np.where(ok.to_numpy(), quality, FAILED_QUALITY)
    return np.where(informative, quality, np.nan)


def _tied_rank(scores: np.ndarray, groups: np.ndarray, tolerance: float) -> np.ndarray:
    """Percentile rank where runs within ``tolerance`` of each other tie.

    The share of the group's other runs a run beats by more than the tolerance, plus
    half the share it ties with: a config within noise of another gets the same
    credit, so a flat dataset's targets sit near 0.5 instead of spreading over [0, 1].
    With ``tolerance`` 0 it is the ``rank`` target. Failed runs (NaN) rank last.
    """
    filled = np.where(np.isfinite(scores), scores, -np.inf)
    out = np.empty(len(filled))
    order = np.argsort(groups, kind="stable")
    bounds = np.flatnonzero(np.diff(groups[order])) + 1
    for idx in np.split(order, bounds):
        s = filled[idx]
        ranked = np.sort(s)
        below = np.searchsorted(ranked, s - tolerance, side="left")
        within = np.searchsorted(ranked, s + tolerance, side="right") - below - 1
        # -inf - tolerance is -inf: failed runs tie with each other, below every ok run.
        out[idx] = (below + 0.5 * within) / max(len(s) - 1, 1)
    return out


def relevance_labels(quality: np.ndarray, levels: int = 16) -> np.ndarray:
    """Integer relevance for a ranking objective: quality in [0, 1] binned to 0..levels-1."""
    q = np.clip(np.nan_to_num(quality, nan=0.0), 0.0, 1.0)
    return np.minimum((q * levels).astype(np.int32), levels - 1)


@dataclass(frozen=True)
class TrainingSet:
    """The history of one family as surrogate inputs and targets.

    Rows are sorted by (group, run id) so ranking objectives get contiguous groups
    and the same history always yields the same matrix.

    Attributes:
        family: the model family.
        normalisation: how ``y`` was normalised.
        feature_names: the columns of ``X``.
        X: ``(n, p)`` inputs.
        y: normalised quality in [0, 1].
        dataset: dataset key per row (what grouped CV splits on).
        group: integer code of the (dataset, metric) group per row.
        fidelity: fidelity per row.
        oriented: raw score per row, higher is better, NaN for failed runs.
        is_default: whether the row's config is the library default for its task.
        dataset_names: dataset key -> human-readable name.
        task: task per row.
        run_id: run id per row (None when the set was not built from stored runs).
    """

    family: str
    normalisation: str
    feature_names: list[str]
    X: np.ndarray
    y: np.ndarray
    dataset: np.ndarray
    group: np.ndarray
    fidelity: np.ndarray
    oriented: np.ndarray
    is_default: np.ndarray
    task: np.ndarray
    dataset_names: Mapping[str, str] = field(default_factory=dict)
    run_id: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.y)

    @property
    def n_datasets(self) -> int:
        """Number of distinct datasets."""
        return len(np.unique(self.dataset))

    def subset(self, mask: np.ndarray) -> TrainingSet:
        """The rows where ``mask`` (boolean or indices) holds."""
        idx = np.flatnonzero(mask) if np.asarray(mask).dtype == bool else np.asarray(mask)
        return TrainingSet(
            family=self.family,
            normalisation=self.normalisation,
            feature_names=self.feature_names,
            X=self.X[idx],
            y=self.y[idx],
            dataset=self.dataset[idx],
            group=self.group[idx],
            fidelity=self.fidelity[idx],
            oriented=self.oriented[idx],
            is_default=self.is_default[idx],
            task=self.task[idx],
            dataset_names=self.dataset_names,
            run_id=None if self.run_id is None else self.run_id[idx],
        )

    def summary(self) -> dict[str, Any]:
        """What the set holds, for the surrogate's metadata."""
        full = self.fidelity >= 1.0 - 1e-9
        return {
            "n_runs": int(len(self.y)),
            "n_full_fidelity": int(full.sum()),
            "n_failed": int(np.isnan(self.oriented).sum()),
            "n_datasets": self.n_datasets,
            "n_groups": int(len(np.unique(self.group))),
            "tasks": {
                str(t): int(c)
                for t, c in zip(*np.unique(self.task, return_counts=True), strict=True)
            },
            "normalisation": self.normalisation,
        }


def _meta_from_frame(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    meta: dict[str, np.ndarray] = {}
    # The raw counts are not surrogate columns but the interactions need them.
    for name in (*core_metafeatures(), N_ROWS, N_FEATURES):
        col = _first_column(frame, f"mf_{name}")
        if col is not None:
            meta[name] = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
    return meta


def build_training_set(
    runs: pd.DataFrame, family: str, *, normalisation: str = "rank"
) -> TrainingSet:
    """Turn the run history of ``family`` into surrogate inputs and targets.

    Args:
        runs: one row per run as ``Store.runs_frame`` returns it (ok and failed runs):
            ``id, dataset_id, family, config, metric, direction, score, fidelity,
            status``, the task (``task`` or ``dataset_task``), optionally the dataset
            name (``dataset_name``), and meta-features as ``mf_*`` columns.
        family: which family's runs to use (others are ignored).
        normalisation: ``"rank"`` or ``"minmax"`` (see the module docstring).

    Returns:
        The training set; rows of groups without ranking information are dropped.
    """
    frame = runs
    if "family" in frame.columns:
        frame = frame[frame["family"] == family]
    frame = frame.reset_index(drop=True)
    names = feature_names(family)
    if frame.empty:
        return _empty_set(family, normalisation, names)

    dataset = frame["dataset_id"].astype(str).to_numpy()
    metric = (
        frame["metric"].astype(str)
        if "metric" in frame.columns
        else pd.Series("", index=frame.index)
    )
    group_key = pd.Series(dataset).str.cat(metric.to_numpy(), sep="|")
    group = pd.factorize(group_key, sort=True)[0]
    oriented = oriented_scores(frame)
    y = normalise_quality(oriented, group, method=normalisation)
    keep = ~np.isnan(y)
    run_id = (
        frame["id"].astype(str).to_numpy()
        if "id" in frame.columns
        else np.arange(len(frame)).astype(str)
    )
    order = np.lexsort((run_id, group))
    order = order[keep[order]]
    if order.size == 0:
        return _empty_set(family, normalisation, names)

    sub = frame.iloc[order].reset_index(drop=True)
    task_col = _first_column(sub, "task", "dataset_task")
    task = (
        task_col.astype(str) if task_col is not None else pd.Series("", index=sub.index)
    ).to_numpy()
    fidelity = (
        pd.to_numeric(sub["fidelity"], errors="coerce").fillna(1.0).to_numpy(dtype=np.float64)
    )
    configs = [c if isinstance(c, Mapping) else json.loads(c) for c in sub["config"]]
    block = encode_configs(family, configs)
    X = design_matrix(family, block, _meta_from_frame(sub), task=task, fidelity=fidelity)
    name_col = _first_column(sub, "dataset_name", "name")
    dataset_sub = dataset[order]
    dataset_names = (
        dict(zip(dataset_sub, name_col.astype(str).to_numpy(), strict=True))
        if name_col is not None
        else {d: d for d in dataset_sub}
    )
    return TrainingSet(
        family=family,
        normalisation=normalisation,
        feature_names=names,
        X=X,
        y=y[order],
        dataset=dataset_sub,
        group=pd.factorize(group[order])[0],
        fidelity=fidelity,
        oriented=oriented[order],
        is_default=_is_default(family, configs, task),
        task=task,
        dataset_names=dataset_names,
        run_id=run_id[order] if "id" in frame.columns else None,
    )


def _is_default(family: str, configs: Sequence[Mapping[str, Any]], task: np.ndarray) -> np.ndarray:
    # Dict equality, not canonical JSON: a million json.dumps would dominate the build.
    space = _space(family)
    defaults: dict[str, dict[str, Any] | None] = {}
    for t in set(task):
        try:
            defaults[t] = space.default(t)
        except ValueError:
            defaults[t] = None
    return np.fromiter(
        (c == defaults[t] for c, t in zip(configs, task, strict=True)), dtype=bool, count=len(task)
    )


def _empty_set(family: str, normalisation: str, names: list[str]) -> TrainingSet:
    empty = np.empty(0)
    return TrainingSet(
        family=family,
        normalisation=normalisation,
        feature_names=names,
        X=np.empty((0, len(names))),
        y=empty,
        dataset=np.empty(0, dtype=object),
        group=np.empty(0, dtype=np.int64),
        fidelity=empty,
        oriented=empty,
        is_default=np.empty(0, dtype=bool),
        task=np.empty(0, dtype=object),
    )
