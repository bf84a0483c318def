"""The suggestion policy: from a dataset's meta-features to ranked, diverse configs.

How one request is answered (:meth:`SuggestionPolicy.suggest`):

1. Candidates: a scrambled Sobol sample of the family's unit cube (cached per task,
   seed and ``fixed``), the best configs of the ``k`` nearest datasets of the history
   in standardised meta-feature space (the portfolio), and the library default.
   ``fixed`` parameters are forced on every candidate.
2. Each candidate is scored by the surrogate at fidelity 1 through
   :func:`hyperprior.training.features.design_matrix` (the code path retraining uses) and ranked
   by the pessimistic ``mean - kappa * spread``: a config far from anything measured on
   similar datasets has a wide spread and does not win by extrapolation.
3. Coarse to fine: the best few are perturbed locally in the unit cube and rescored.
4. Each candidate gets ``p_beats_default``, the calibrated probability that it scores
   above the library default on this dataset (:mod:`hyperprior.training.confidence`, learned on
   held-out source groups when the surrogate was retrained). Candidates below the
   surrogate's learned bar (at least 0.5) rank after the default, so the first
   suggestion is a likely winner or the default itself; and when the dataset is farther
   from the history than the held-out validation reached (a learned distance), the
   default comes first. Both say so in ``warnings``.
5. The top ``n`` are kept diverse (a minimum distance in the unit cube between picks).

Without a surrogate (cold start) the answer is the portfolio of the nearest datasets
and the library default, unscored, and the response says so.

The policy reads history only through :class:`HistoryReader` (``Store`` satisfies it;
tests use an in-memory frame) and the registry through :class:`SurrogateRegistry`, so
this module never touches a database session. :class:`SuggestionEngine` keeps one
policy per family and reloads it when the registry's active surrogate changes.
"""

from __future__ import annotations

import bisect
import copy
import itertools
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache
from typing import Any, Protocol, cast

import numpy as np
import pandas as pd

from hyperprior.db.entities import split_surrogate_key, surrogate_key
from hyperprior.training.confidence import MIN_P_BEATS_DEFAULT, Calibration, signal_of
from hyperprior.training.features import (
    TASKS,
    ConfigBlock,
    canonical_config,
    core_metafeatures,
    design_matrix,
    encode_configs,
    normalise_quality,
    oriented_scores,
    runs_for_target,
)
from hyperprior.training.surrogate import Surrogate, SurrogateIntegrityError, from_text

log = logging.getLogger(__name__)

SOURCES = ("surrogate", "portfolio", "default")


class HistoryReader(Protocol):
    """Read access to the run history (``hyperprior.db.store.Store`` implements it)."""

    def runs_frame(
        self, *, family: str | None = None, status: str | None = "ok"
    ) -> pd.DataFrame:  # pragma: no cover - protocol
        """One row per run; see ``Store.runs_frame``."""
        ...


class SurrogateRecord(Protocol):
    """A registered surrogate as the registry hands it out (``db.entities.Surrogate``)."""

    # Read-only properties, so frozen dataclasses satisfy the protocol.
    @property
    def id(self) -> int: ...  # noqa: D102

    @property
    def family(self) -> str: ...  # noqa: D102

    @property
    def created_at(self) -> datetime: ...  # noqa: D102

    @property
    def n_runs(self) -> int: ...  # noqa: D102

    @property
    def status(self) -> str: ...  # noqa: D102

    @property
    def meta(self) -> dict[str, Any]: ...  # noqa: D102

    @property
    def sha256(self) -> str: ...  # noqa: D102

    @property
    def model_text(self) -> str | None: ...  # noqa: D102


class SurrogateRegistry(Protocol):
    """The surrogates registry (``hyperprior.db.store.Store`` implements it)."""

    def list_surrogates(
        self, family: str | None = None
    ) -> Sequence[SurrogateRecord]:  # pragma: no cover - protocol
        """Registered surrogates without model text, newest first."""
        ...

    def get_surrogate(self, surrogate_id: int) -> SurrogateRecord:  # pragma: no cover
        """One surrogate with its model text."""
        ...


class SuggestionError(ValueError):
    """A request that cannot be answered as asked (HTTP 422).

    Attributes:
        field: where in the request the problem is (``"fixed"``, ``"task"``...).
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class SuggestionRequest:
    """What the client asks for.

    Attributes:
        family: model family.
        task: ``binary``, ``multiclass`` or ``regression``.
        meta_features: the dataset's meta-features; missing optional ones are allowed.
        n: how many suggestions (1..50).
        seed: makes the answer reproducible; ``None`` means 0.
        fixed: parameters forced on every suggestion.
        metric: the metric the client will judge by (informational).
        dataset_name: the dataset's name (informational).
    """

    family: str
    task: str
    meta_features: Mapping[str, Any]
    n: int = 5
    seed: int | None = None
    fixed: Mapping[str, Any] | None = None
    metric: str | None = None
    dataset_name: str | None = None


@dataclass(frozen=True)
class Suggestion:
    """One suggested config.

    Attributes:
        rank: 1 is the best.
        config: estimator keyword arguments.
        predicted_quality: expected normalised quality (the percentile the config would
            reach among the configs tried on a dataset like this), None at cold start.
        interval: calibrated interval of the quality, None at cold start.
        source: where the candidate came from: ``surrogate`` (Sobol or local search),
            ``portfolio`` (best on a nearby dataset) or ``default``.
        explanation: nearest datasets and the features that drove the prediction.
        p_beats_default: calibrated probability that the config scores above the
            library default on this dataset (None for the default itself, at cold start,
            and for surrogates trained before the calibration existed).
    """

    rank: int
    config: dict[str, Any]
    predicted_quality: float | None
    interval: tuple[float, float] | None
    source: str
    explanation: dict[str, Any]
    p_beats_default: float | None = None


@dataclass(frozen=True)
class SurrogateInfo:
    """Which surrogate answered."""

    id: int | None
    family: str
    trained_at: str | None
    n_runs: int
    sha256: str


@dataclass(frozen=True)
class SuggestionResult:
    """The answer to a :class:`SuggestionRequest`.

    Attributes:
        suggestions: best first.
        surrogate: which surrogate scored them (None at cold start).
        warnings: what the caller should know.
        distance: RMS distance of standardised meta-features to the nearest dataset of
            the history (None when the history is empty).
        distance_threshold: beyond this distance the surrogate was not validated
            (learned on held-out groups; None without a calibrated surrogate).
        ranked_by: the metric the suggestions are ranked by: the one the request
            named when a surrogate of it is active, else the task's primary metric.
    """

    suggestions: list[Suggestion]
    surrogate: SurrogateInfo | None
    warnings: list[str]
    distance: float | None = None
    distance_threshold: float | None = None
    ranked_by: str | None = None


@dataclass(frozen=True)
class PolicySettings:
    """Knobs of the policy; the defaults fit the latency budget (n=5: p50 <= 15 ms).

    Attributes:
        n_sobol: Sobol candidates per request (rounded up to a power of two).
        screen_top: Sobol candidates that pass the one-member screen to be scored by
            the whole ensemble (0: score every candidate with the whole ensemble).
        screen_fraction: share of the first member's boosting rounds the screen uses.
        n_neighbors: nearest datasets whose best configs join the candidates.
        per_dataset: best configs kept per dataset in the portfolio.
        refine_parents: best candidates perturbed in the fine stage.
        refine_children: perturbations per parent.
        refine_sigma: standard deviation of a perturbation in the unit cube.
        min_distance: smallest RMS distance in the unit cube between two picks.
        top_features: contributions listed per suggestion.
        far_distance: nearest-dataset distance (RMS of standardised meta-features)
            beyond which the answer carries an extrapolation warning, for surrogates
            without a learned threshold (see :mod:`hyperprior.training.confidence`).
        min_p_beats_default: the first suggestion is a config at least this likely to
            beat the library default, or the default itself.
        kappa: pessimism override (None: the surrogate's own).
        cache_size: Sobol pools kept (per task, seed and fixed params).
        answer_cache_size: answers kept for repeated identical requests.
    """

    n_sobol: int = 2048
    screen_top: int = 96
    screen_fraction: float = 0.5
    n_neighbors: int = 5
    per_dataset: int = 3
    refine_parents: int = 6
    refine_children: int = 12
    refine_sigma: float = 0.06
    min_distance: float = 0.08
    top_features: int = 5
    far_distance: float = 1.5
    min_p_beats_default: float = MIN_P_BEATS_DEFAULT
    kappa: float | None = None
    cache_size: int = 32
    answer_cache_size: int = 1024


# ---------------------------------------------------------------------------------------
# The portfolio: best configs per dataset and a nearest-neighbour index


def _squash(x: np.ndarray) -> np.ndarray:
    # Counts span orders of magnitude; a signed log keeps one huge dataset from
    # dominating the standardisation.
    return np.sign(x) * np.log1p(np.abs(x))


@dataclass(frozen=True)
class Neighbor:
    """A dataset of the history near the query."""

    dataset: str
    name: str
    task: str
    distance: float


@dataclass(frozen=True)
class PortfolioEntry:
    """One good config measured on one dataset of the history."""

    dataset: str
    config: dict[str, Any]
    quality: float


class Portfolio:
    """Best measured configs per dataset, indexed by standardised meta-features.

    Args:
        family: the model family.
        datasets: per dataset key: ``name``, ``task``, ``meta`` (core meta-features),
            ``entries`` (list of ``{"config", "quality"}``, best first).
    """

    def __init__(self, family: str, datasets: Mapping[str, Mapping[str, Any]]) -> None:
        self.family = family
        self.names = list(core_metafeatures())
        self.keys = sorted(datasets)
        self._datasets = {k: datasets[k] for k in self.keys}
        raw = np.array(
            [
                [_as_float(datasets[k].get("meta", {}).get(m)) for m in self.names]
                for k in self.keys
            ],
            dtype=np.float64,
        ).reshape(len(self.keys), len(self.names))
        z = _squash(raw)
        known = np.isfinite(z)
        counts = known.sum(axis=0)
        safe = np.where(known, z, 0.0)
        # Mean and std over the datasets that know each meta-feature (all-unknown: 0, 1).
        self.center = safe.sum(axis=0) / np.maximum(counts, 1)
        var = (np.where(known, z - self.center, 0.0) ** 2).sum(axis=0) / np.maximum(counts, 1)
        scale = np.sqrt(var)
        self.scale = np.where(scale > 1e-9, scale, 1.0)
        self.matrix = (z - self.center) / self.scale
        # What nearest() compares: an unknown meta-feature of a dataset counts as the median.
        self._known = np.nan_to_num(self.matrix, nan=0.0)
        self.tasks = np.array([str(datasets[k].get("task", "")) for k in self.keys], dtype=object)

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def from_frame(cls, runs: pd.DataFrame, family: str, *, per_dataset: int = 3) -> Portfolio:
        """Build from a runs frame: each dataset's best full-fidelity ok configs.

        Args:
            runs: ``Store.runs_frame`` rows (any family; other families are ignored).
            family: the family.
            per_dataset: how many configs to keep per dataset.
        """
        frame = runs[runs["family"] == family] if "family" in runs.columns else runs
        if "fidelity" in frame.columns:
            frame = frame[pd.to_numeric(frame["fidelity"], errors="coerce") >= 1.0 - 1e-9]
        frame = frame.reset_index(drop=True)
        if frame.empty:
            return cls(family, {})
        key = frame["dataset_id"].astype(str)
        metric = frame["metric"].astype(str) if "metric" in frame.columns else ""
        group = pd.factorize(key + "|" + metric, sort=True)[0]
        quality = normalise_quality(oriented_scores(frame), group, method="rank")
        frame = frame.assign(_key=key, _q=quality, _s=oriented_scores(frame))
        frame = frame[frame["_s"].notna() & np.isfinite(frame["_q"])]
        mf_cols = {m: f"mf_{m}" for m in core_metafeatures() if f"mf_{m}" in frame.columns}
        datasets: dict[str, dict[str, Any]] = {}
        order = frame.sort_values(
            ["_key", "_q", "id" if "id" in frame else "_key"],
            ascending=[True, False, True],
            kind="mergesort",
        )
        for k, rows in order.groupby("_key", sort=True):
            first = rows.iloc[0]
            entries, seen = [], set()
            for config, q in zip(rows["config"], rows["_q"], strict=True):
                text = canonical_config(config)
                if text in seen:
                    continue
                seen.add(text)
                entries.append({"config": dict(config), "quality": round(float(q), 6)})
                if len(entries) >= per_dataset:
                    break
            datasets[str(k)] = {
                "name": str(first.get("dataset_name", k)),
                "task": str(first.get("task", "")),
                "meta": {m: _as_float(first[c]) for m, c in mf_cols.items()},
                "entries": entries,
            }
        return cls(family, datasets)

    def to_json(self) -> dict[str, Any]:
        """JSON-able form (stored in a surrogate's metadata)."""
        return {
            k: {
                "name": d["name"],
                "task": d["task"],
                "meta": {
                    m: (None if v is None or not math.isfinite(v) else v)
                    for m, v in d.get("meta", {}).items()
                },
                "entries": d["entries"],
            }
            for k, d in self._datasets.items()
        }

    @classmethod
    def from_json(cls, family: str, data: Mapping[str, Any]) -> Portfolio:
        """Inverse of :meth:`to_json`."""
        return cls(family, data)

    def standardise(self, meta: Mapping[str, Any]) -> np.ndarray:
        """Query meta-features in the index's standardised space (NaN where unknown)."""
        raw = np.array([_as_float(meta.get(m)) for m in self.names], dtype=np.float64)
        return (_squash(raw) - self.center) / self.scale

    def nearest(self, meta: Mapping[str, Any], task: str, k: int) -> list[Neighbor]:
        """The ``k`` nearest datasets, preferring those of the same task.

        Distance is the RMS difference of standardised meta-features over the ones the
        query gives (a dataset's unknown ones count as the median).
        """
        if not len(self) or k <= 0:
            return []
        q = self.standardise(meta)
        used = np.isfinite(q)
        if not used.any():
            return []
        diff = self._known[:, used] - q[used]
        dist = np.sqrt((diff**2).mean(axis=1))
        same = self.tasks == task
        pool = np.flatnonzero(same) if same.any() else np.arange(len(self))
        # Ties (identical meta-features) break by dataset key for determinism.
        order = pool[np.lexsort((pool, dist[pool]))]  # keys are sorted: index breaks ties
        return [
            Neighbor(
                dataset=self.keys[i],
                name=str(self._datasets[self.keys[i]]["name"]),
                task=str(self.tasks[i]),
                distance=round(float(dist[i]), 4),
            )
            for i in order[:k]
        ]

    def entries_of(self, dataset: str) -> list[PortfolioEntry]:
        """All kept configs of one dataset, best first."""
        return [
            PortfolioEntry(dataset, dict(e["config"]), float(e["quality"]))
            for e in self._datasets[dataset]["entries"]
        ]

    def name_of(self, dataset: str) -> str:
        """The human-readable name of a dataset key."""
        return str(self._datasets[dataset]["name"])

    def entries(self, neighbors: Sequence[Neighbor], per_dataset: int) -> list[PortfolioEntry]:
        """The best configs of ``neighbors``, nearest dataset first."""
        out = []
        for nb in neighbors:
            for e in self._datasets[nb.dataset]["entries"][:per_dataset]:
                out.append(PortfolioEntry(nb.dataset, dict(e["config"]), float(e["quality"])))
        return out


def _as_float(value: Any) -> float:
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out if math.isfinite(out) else math.nan


# ---------------------------------------------------------------------------------------
# Candidates as arrays: the unit-cube encoding without building every config


class _LazyConfigs(Sequence[dict[str, Any]]):
    """The configs of unit-cube points, decoded on first access.

    A Sobol pool holds 2,048 points but a request reads about a hundred configs (those
    that pass the screen); decoding them all costs more than scoring them. Rows decode
    independently, so a row decoded late equals the one an eager decode gives.
    """

    def __init__(self, space: Any, u: np.ndarray, task: str) -> None:
        self._space = space
        self._u = u
        self._task = task
        self._done: list[dict[str, Any] | None] = [None] * len(u)

    def __len__(self) -> int:
        return len(self._done)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        config = self._done[i]
        if config is None:
            self.prefetch([i])
            config = self._done[i]
        return config

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.prefetch(range(len(self)))
        return iter(cast(list[dict[str, Any]], self._done))

    def prefetch(self, index: Iterable[int]) -> None:
        """Decode the rows at ``index`` in one batch.

        Pools are shared between threads without a lock: two threads decoding the same
        row write equal dicts.
        """
        missing = [int(i) for i in index if self._done[int(i)] is None]
        if missing:
            configs = self._space.decode_many(self._u[missing], self._task)
            for i, config in zip(missing, configs, strict=True):
                self._done[i] = config


class _Chain(Sequence[dict[str, Any]]):
    """Configs of several blocks end to end, without decoding the lazy ones."""

    def __init__(self, parts: Sequence[Sequence[dict[str, Any]]]) -> None:
        self._parts = list(parts)
        self._ends = list(itertools.accumulate(len(p) for p in self._parts))

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def _locate(self, i: int) -> tuple[int, int]:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = bisect.bisect_right(self._ends, i)
        return k, i - (self._ends[k - 1] if k else 0)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        k, j = self._locate(int(i))
        return self._parts[k][j]

    def prefetch(self, index: Iterable[int]) -> None:
        """Decode the rows at ``index`` of the lazy parts in one batch each."""
        wanted: dict[int, list[int]] = {}
        for i in index:
            k, j = self._locate(int(i))
            wanted.setdefault(k, []).append(j)
        for k, rows in wanted.items():
            _prefetch(self._parts[k], rows)


def _prefetch(configs: Sequence[dict[str, Any]], index: Iterable[int]) -> None:
    if isinstance(configs, _LazyConfigs | _Chain):
        configs.prefetch(index)


def _chain(blocks: Sequence[ConfigBlock]) -> ConfigBlock:
    """``ConfigBlock.concat`` that leaves lazily decoded configs undecoded."""
    keys = set(blocks[0].raw)
    return ConfigBlock(
        configs=cast(Any, _Chain([b.configs for b in blocks])),
        unit=np.vstack([b.unit for b in blocks]),
        raw={k: np.concatenate([b.raw[k] for b in blocks]) for k in keys},
    )


def _encode_points(family: str, space: Any, u: np.ndarray, task: str) -> ConfigBlock:
    """``encode_configs(family, space.decode_many(u, task))`` with configs decoded lazily.

    The unit encoding and raw interaction inputs are computed per parameter from the
    decoded values, through the same ``from_unit`` / ``to_unit`` / ``indices`` /
    ``_raw_column`` calls that decoding and encoding make (tested equal, bit for bit).
    """
    from hyperprior.training.features import _raw_column, interactions_for
    from hyperprior.training.spaces import INACTIVE, encode_column

    n = len(u)
    unit = np.full((n, len(space.params)), INACTIVE, dtype=np.float64)
    values: dict[str, list[Any]] = {}
    present: dict[str, np.ndarray] = {}
    cat_index: dict[str, np.ndarray] = {}
    for j, p in enumerate(space.params):
        if not p.applies_to(task):
            mask = np.zeros(n, dtype=bool)
            decoded: list[Any] = [None] * n
        else:
            decoded = p.from_unit(u[:, j])
            mask = np.ones(n, dtype=bool)
            if p.condition is not None:
                parent, allowed = p.condition
                parent_param = space.param(parent)
                parent_idx = cat_index[parent]
                mask = present[parent].copy()
                hit = np.zeros(n, dtype=bool)
                for v in allowed:
                    hit |= parent_idx == parent_param.index_of(v)
                mask &= hit
        rows = np.flatnonzero(mask)
        chosen = [decoded[i] for i in rows] if len(rows) < n else decoded
        encode_column(p, chosen, rows, unit, j, cat_index)
        values[p.name] = decoded
        present[p.name] = mask
    needed = sorted({q for ix in interactions_for(family) for q in ix.params})
    by_name = {p.name: p for p in space.params}
    raw = {}
    for name in needed:
        param = by_name.get(name, name)
        if name not in values:
            raw[name] = _raw_column([{}] * n, param)
            continue
        vals, mask = values[name], present[name]
        # One-key configs: _raw_column reads nothing else.
        raw[name] = _raw_column(
            [{name: v} if m else {} for v, m in zip(vals, mask.tolist(), strict=True)], param
        )
    configs = _LazyConfigs(space, u, task)
    # ConfigBlock holds a tuple; the lazy sequence stands in for it (len, index, iterate).
    return ConfigBlock(configs=cast(Any, configs), unit=unit, raw=raw)


# ---------------------------------------------------------------------------------------
# The policy


@dataclass
class _Pool:
    block: ConfigBlock
    sources: list[str]
    origin: list[str | None] = field(default_factory=list)


class SuggestionPolicy:
    """Answers suggestion requests for one family with one (or no) surrogate.

    Thread-safe: requests only read the surrogate, and the candidate cache is guarded.

    Args:
        family: the model family.
        surrogate: the loaded surrogate, or None (cold start).
        portfolio: best configs of the history's datasets (may be empty).
        info: what to report about the surrogate.
        settings: the policy's knobs.
        notes: warnings added to every answer (e.g. why there is no surrogate).
        target: ``""`` when the surrogate models each task's primary metric, else the
            metric it models (see :func:`hyperprior.training.retrain.retrain`).
    """

    def __init__(
        self,
        family: str,
        *,
        surrogate: Surrogate | None,
        portfolio: Portfolio | None = None,
        info: SurrogateInfo | None = None,
        settings: PolicySettings | None = None,
        notes: Sequence[str] = (),
        target: str = "",
    ) -> None:
        from hyperprior.training.spaces import get_space

        self.family = family
        self.space = get_space(family)
        self.surrogate = surrogate
        self.portfolio = portfolio or Portfolio(family, {})
        self.info = info
        self.settings = settings or PolicySettings()
        self.notes = list(notes)
        self.target = target
        self._cache: OrderedDict[tuple[Any, ...], ConfigBlock] = OrderedDict()
        self._lock = threading.Lock()
        self._portfolio_blocks: dict[tuple[str, str], ConfigBlock] = {}
        self._answers: OrderedDict[str, SuggestionResult] = OrderedDict()
        self.calibration = _calibration_of(surrogate)

    @property
    def min_p_beats_default(self) -> float:
        """The bar a first suggestion other than the default must clear."""
        learned = self.calibration.min_p if self.calibration is not None else 0.0
        return max(float(self.settings.min_p_beats_default), learned)

    @property
    def distance_threshold(self) -> float:
        """Nearest-dataset distance beyond which answers fall back to robust choices."""
        if self.calibration is not None and math.isfinite(self.calibration.distance_threshold):
            return float(self.calibration.distance_threshold)
        return float(self.settings.far_distance)

    # -- validation ---------------------------------------------------------------------

    def _check(self, request: SuggestionRequest) -> tuple[dict[str, float], dict[str, Any]]:
        from hyperprior.training.spaces import check_task

        if request.family != self.family:
            raise SuggestionError(
                f"this policy answers for {self.family!r}, not {request.family!r}", field="family"
            )
        try:
            check_task(request.task)
        except ValueError as exc:
            raise SuggestionError(str(exc), field="task") from None
        if not 1 <= int(request.n) <= 50:
            raise SuggestionError(f"n must be between 1 and 50, got {request.n}", field="n")
        meta = _check_meta(request.task, request.meta_features)
        fixed = self._check_fixed(request.task, dict(request.fixed or {}))
        return meta, fixed

    def _check_fixed(self, task: str, fixed: dict[str, Any]) -> dict[str, Any]:
        if not fixed:
            return {}
        known = {p.name for p in self.space.params_for(task)}
        unknown = sorted(k for k in fixed if k not in known)
        if unknown:
            raise SuggestionError(
                f"unknown parameter(s) {unknown} in fixed; {self.family} for {task} "
                f"accepts {sorted(known)}",
                field="fixed",
            )
        forced = _force_parents(self.space, fixed, fixed)
        try:
            checked = self.space.validate(forced, task)
        except ValueError as exc:
            raise SuggestionError(str(exc), field="fixed") from None
        inactive = sorted(k for k in fixed if k not in checked)
        if inactive:
            conditions = {k: self.space.param(k).condition for k in inactive}
            conds = ", ".join(
                f"{k} needs {cond[0]} in {list(cond[1])}"
                for k, cond in conditions.items()
                if cond is not None
            )
            raise SuggestionError(f"fixed parameter(s) {inactive} inactive: {conds}", field="fixed")
        return {k: checked[k] for k in fixed}

    # -- candidates ---------------------------------------------------------------------

    def _apply_fixed(
        self, configs: Sequence[Mapping[str, Any]], task: str, fixed: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        if not fixed:
            return [dict(c) for c in configs]
        return [
            self.space.validate(_force_parents(self.space, {**c, **fixed}, fixed), task)
            for c in configs
        ]

    def _sobol_block(self, task: str, seed: int, fixed: Mapping[str, Any]) -> ConfigBlock:
        key = ("sobol", task, seed, canonical_config(fixed))
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        from scipy.stats import qmc

        d = len(self.space.dim_names)
        m = max(0, math.ceil(math.log2(max(self.settings.n_sobol, 1))))
        u = qmc.Sobol(d, scramble=True, rng=seed).random_base2(m)
        block = self._decode(u, task, fixed)
        with self._lock:
            self._cache[key] = block
            while len(self._cache) > self.settings.cache_size:
                self._cache.popitem(last=False)
        return block

    def _decode(self, u: np.ndarray, task: str, fixed: Mapping[str, Any]) -> ConfigBlock:
        if not fixed:
            # Configs decode on demand: most candidates are only ever scored.
            return _encode_points(self.family, self.space, u, task)
        if fixed:
            u = u.copy()
            forced = _force_parents(self.space, dict(fixed), fixed)
            enc = self.space.encode(forced)
            for name in forced:
                j = self.space.dim_names.index(name)
                u[:, j] = enc[j]
        configs = self.space.decode_many(u, task)
        if fixed:
            configs = self._apply_fixed(configs, task, fixed)
        return encode_configs(self.family, configs)

    def _portfolio_block(
        self, entries: Sequence[PortfolioEntry], task: str, fixed: Mapping[str, Any]
    ) -> ConfigBlock | None:
        if not entries:
            return None
        if fixed:
            configs = [self._portfolio_config(e, task) for e in entries]
            return encode_configs(self.family, self._apply_fixed(configs, task, fixed))
        # Without fixed params each dataset's block is the same every time: cache it.
        blocks = []
        for dataset in dict.fromkeys(e.dataset for e in entries):
            key = (dataset, task)
            hit = self._portfolio_blocks.get(key)
            if hit is None:
                mine = self.portfolio.entries_of(dataset)
                hit = encode_configs(self.family, [self._portfolio_config(e, task) for e in mine])
                self._portfolio_blocks[key] = hit
            blocks.append(hit.take(range(sum(e.dataset == dataset for e in entries))))
        return ConfigBlock.concat(blocks)

    def _portfolio_config(self, entry: PortfolioEntry, task: str) -> dict[str, Any]:
        try:
            return self.space.validate(entry.config, task)
        except ValueError:
            # A neighbour of another task may carry parameters this task lacks.
            known = {p.name for p in self.space.params_for(task)}
            return self.space.validate({k: v for k, v in entry.config.items() if k in known}, task)

    def _default_block(self, task: str, fixed: Mapping[str, Any]) -> ConfigBlock:
        key = ("default", task, canonical_config(fixed))
        with self._lock:
            hit = self._cache.get(key)
        if hit is None:
            hit = encode_configs(
                self.family, self._apply_fixed([self.space.default(task)], task, fixed)
            )
            with self._lock:
                self._cache[key] = hit
        return hit

    # -- answering ----------------------------------------------------------------------

    def suggest(self, request: SuggestionRequest) -> SuggestionResult:
        """Answer one request.

        The answer is a pure function of the request and the loaded surrogate, so
        repeated requests (client retries, the same dataset asked again) are served
        from a small cache that dies with the policy when a new model is loaded.

        Raises:
            SuggestionError: the request is impossible (unknown task, impossible
                meta-features, unknown or invalid fixed parameters).
        """
        key = _request_key(request)
        hit = None
        if key is not None:
            with self._lock:
                hit = self._answers.get(key)
                if hit is not None:
                    self._answers.move_to_end(key)
        if hit is not None:
            return _copy_result(hit)
        result = self._suggest(request)
        if key is not None:
            with self._lock:
                self._answers[key] = result
                while len(self._answers) > self.settings.answer_cache_size:
                    self._answers.popitem(last=False)
        return _copy_result(result)

    def _suggest(self, request: SuggestionRequest) -> SuggestionResult:
        meta, fixed = self._check(request)
        warnings = list(self.notes)
        missing = [
            m
            for m in core_metafeatures()
            if not math.isfinite(meta.get(m, math.nan)) and _applies(m, request.task, meta)
        ]
        if missing:
            warnings.append(
                "meta-features not given, treated as unknown: " + ", ".join(sorted(missing))
            )
        seed = 0 if request.seed is None else int(request.seed)
        neighbors = self.portfolio.nearest(meta, request.task, self.settings.n_neighbors)
        distance = neighbors[0].distance if neighbors else None
        far = distance is not None and distance > self.distance_threshold
        if far and self.calibration is not None:
            warnings.append(
                f"no dataset in the history is close to this one (nearest: "
                f"{neighbors[0].name} at distance {distance:.2f}, beyond the "
                f"{self.distance_threshold:.2f} up to which held-out datasets were covered): "
                "the first suggestion is the library default, the others are the surrogate's "
                "extrapolations; verify them (POST /v1/refinements)"
            )
        elif far:
            warnings.append(
                f"no dataset in the history is close to this one (nearest: "
                f"{neighbors[0].name} at distance {distance:.2f}); "
                "predictions extrapolate, so verify the suggestions (POST /v1/refinements)"
            )
        if request.metric is not None:
            warnings.extend(self._metric_warning(request.metric, request.task))
        entries = self.portfolio.entries(neighbors, self.settings.per_dataset)
        nb_json = [{"name": nb.name, "distance": nb.distance} for nb in neighbors]
        if self.surrogate is None:
            result = self._cold_start(request, meta, fixed, entries, nb_json, warnings)
        else:
            result = self._scored(
                request, meta, fixed, seed, entries, nb_json, warnings, distance, far
            )
        return replace(
            result,
            distance=distance,
            distance_threshold=(
                None if self.calibration is None else round(self.distance_threshold, 4)
            ),
        )

    def _metric_warning(self, metric: str, task: str) -> list[str]:
        if self.surrogate is None:
            return []
        from hyperprior.training.families import primary_metric

        expected = self.target or primary_metric(task)
        if metric != expected:
            return [
                f"the history measures {task} runs by {expected}; suggestions are ranked "
                f"by that, not by {metric}"
            ]
        return []

    def _scored(
        self,
        request: SuggestionRequest,
        meta: Mapping[str, float],
        fixed: Mapping[str, Any],
        seed: int,
        entries: Sequence[PortfolioEntry],
        nb_json: list[dict[str, Any]],
        warnings: list[str],
        distance: float | None,
        far: bool,
    ) -> SuggestionResult:
        assert self.surrogate is not None
        surrogate = self.surrogate
        task = request.task
        kappa = self.settings.kappa
        sobol = self._sobol_block(task, seed, fixed)
        sources = ["surrogate"] * len(sobol)
        origins: list[str | None] = [None] * len(sobol)
        blocks = []
        pblock = self._portfolio_block(entries, task, fixed)
        if pblock is not None:
            blocks.append(pblock)
            sources += ["portfolio"] * len(pblock)
            origins += [self.portfolio.name_of(e.dataset) for e in entries]
        blocks.append(self._default_block(task, fixed))
        sources += ["default"]
        origins += [None]
        # One design matrix for the pool, the portfolio and the default (rows do not
        # depend on each other; a call costs more than its rows).
        X = design_matrix(self.family, _chain([sobol, *blocks]), meta, task=task, fidelity=1.0)
        n_pool = len(sobol)
        if 0 < self.settings.screen_top < n_pool:
            # Coarse pass: every Sobol candidate through one member; the best go on to the
            # whole ensemble with the portfolio and the default.
            first = surrogate.screen(X[:n_pool], fraction=self.settings.screen_fraction)
            keep = np.sort(np.argsort(-first, kind="stable")[: self.settings.screen_top])
            _prefetch(sobol.configs, keep)
            sobol = sobol.take(keep)
            X = X[np.concatenate([keep, np.arange(n_pool, len(X))])]
            del sources[len(keep) : n_pool], origins[len(keep) : n_pool]
        block = _chain([sobol, *blocks])
        members = surrogate.predict_members(X)
        pred = surrogate.summarise(members, kappa=kappa)
        default_at = len(block) - 1
        signal = signal_of(meta)
        p_beats = self._p_beats_default(members, default_at, distance, signal)

        # Coarse to fine: perturb the best few and score the children too.
        s = self.settings
        if s.refine_parents > 0 and s.refine_children > 0:
            key = self._rank_key(pred.score, p_beats, default_at, far)
            parents = _top_distinct(key, block.unit, s.refine_parents)
            rng = np.random.default_rng([seed, 7, 1])
            noise = rng.normal(
                0.0, s.refine_sigma, (len(parents), s.refine_children, block.unit.shape[1])
            )
            u = np.clip(block.unit[parents][:, None, :] + noise, 0.0, 1.0).reshape(
                -1, block.unit.shape[1]
            )
            child = self._decode(u, task, fixed)
            Xc = design_matrix(self.family, child, meta, task=task, fidelity=1.0)
            cmembers = surrogate.predict_members(Xc)
            cpred = surrogate.summarise(cmembers, kappa=kappa)
            if p_beats is not None:
                both = np.vstack([members[default_at : default_at + 1], cmembers])
                p_beats = np.concatenate(
                    [p_beats, self._p_beats_default(both, 0, distance, signal)[1:]]
                )
            block = _chain([block, child])
            X = np.vstack([X, Xc])
            pred = type(pred)(
                *(
                    np.concatenate([a, b])
                    for a, b in zip(
                        (pred.mean, pred.spread, pred.lower, pred.upper, pred.score),
                        (cpred.mean, cpred.spread, cpred.lower, cpred.upper, cpred.score),
                        strict=True,
                    )
                )
            )
            sources += ["surrogate"] * len(child)
            origins += [None] * len(child)

        # Best first; ties keep candidate order (Sobol, portfolio, default, local).
        order = np.argsort(-self._rank_key(pred.score, p_beats, default_at, far), kind="stable")
        free = np.array([name not in fixed for name in self.space.dim_names])
        # The picks come from the head of the order: decode those children in one batch.
        _prefetch(block.configs, order[: 4 * request.n])
        picks = _diverse(order, block, free, request.n, s.min_distance)
        contrib = surrogate.contributions(X[picks]) if picks else np.empty((0, X.shape[1]))
        suggestions = []
        for rank, (i, c) in enumerate(zip(picks, contrib, strict=True), start=1):
            explanation: dict[str, Any] = {
                "nearest_datasets": nb_json,
                "top_features": _top_features(surrogate.feature_names, X[i], c, s.top_features),
                "spread": round(float(pred.spread[i]), 5),
            }
            if sources[i] == "portfolio":
                explanation["from_dataset"] = origins[i]
            suggestions.append(
                Suggestion(
                    rank=rank,
                    config=dict(block.configs[i]),
                    predicted_quality=round(float(np.clip(pred.mean[i], 0.0, 1.0)), 5),
                    interval=(
                        round(float(np.clip(pred.lower[i], 0.0, 1.0)), 5),
                        round(float(np.clip(pred.upper[i], 0.0, 1.0)), 5),
                    ),
                    source=sources[i],
                    explanation=explanation,
                    p_beats_default=(
                        None
                        if p_beats is None or not math.isfinite(p_beats[i])
                        else round(float(p_beats[i]), 4)
                    ),
                )
            )
        if p_beats is not None and suggestions and suggestions[0].source == "default" and not far:
            warnings.append(
                f"no candidate is at least {self.min_p_beats_default:.0%} likely to "
                "beat the library default on this dataset, so the default comes first"
            )
        return SuggestionResult(suggestions, self.info, warnings)

    def _p_beats_default(
        self,
        members: np.ndarray,
        default_at: int,
        distance: float | None,
        signal: float = math.nan,
    ) -> np.ndarray | None:
        """Calibrated ``p_beats_default`` of every row (NaN for the default's own row)."""
        if self.calibration is None:
            return None
        advantage = members - members[default_at]
        p = self.calibration.p_beats_default(
            advantage.mean(axis=1),
            advantage.std(axis=1),
            float(members[default_at].mean()),
            math.nan if distance is None else distance,
            signal,
        )
        p[default_at] = math.nan
        return p

    def _rank_key(
        self, score: np.ndarray, p_beats: np.ndarray | None, default_at: int, far: bool
    ) -> np.ndarray:
        """What the candidates are sorted by (higher first).

        The pessimistic score, except that candidates not likely enough to beat the
        default rank after it and every likely one, and far from the history the
        default leads.
        """
        if p_beats is None:
            return score
        key = score.astype(np.float64, copy=True)
        unlikely = ~(p_beats[: len(key)] >= self.min_p_beats_default)
        unlikely[default_at] = False
        # Scores are quality percentiles (about 0..1): an offset of 10 puts every
        # unlikely candidate below every likely one and keeps their own order.
        key[unlikely] -= 10.0
        if far:
            key[default_at] = np.inf
        return key

    def _cold_start(
        self,
        request: SuggestionRequest,
        meta: Mapping[str, float],
        fixed: Mapping[str, Any],
        entries: Sequence[PortfolioEntry],
        nb_json: list[dict[str, Any]],
        warnings: list[str],
    ) -> SuggestionResult:
        task = request.task
        warnings.insert(
            0,
            f"no surrogate is active for {self.family} yet: suggestions are the library "
            "default and the best configs of the nearest datasets in the history, unscored",
        )
        dblock = self._default_block(task, fixed)
        pblock = self._portfolio_block(entries, task, fixed)
        # The nearest dataset's best config first, then the library default (the bar
        # every suggestion must clear), then the rest of the portfolio nearest first.
        blocks: list[ConfigBlock] = []
        sources: list[str] = []
        origins: list[str | None] = []
        if pblock is not None:
            blocks.append(pblock.take([0]))
            sources.append("portfolio")
            origins.append(self.portfolio.name_of(entries[0].dataset))
        blocks.append(dblock)
        sources.append("default")
        origins.append(None)
        if pblock is not None and len(pblock) > 1:
            blocks.append(pblock.take(range(1, len(pblock))))
            sources += ["portfolio"] * (len(pblock) - 1)
            origins += [self.portfolio.name_of(e.dataset) for e in entries[1:]]
        block = ConfigBlock.concat(blocks)
        free = np.array([name not in fixed for name in self.space.dim_names])
        picks = _diverse(np.arange(len(block)), block, free, request.n, self.settings.min_distance)
        default_at = sources.index("default")
        default_text = canonical_config(block.configs[default_at])
        if default_text not in {canonical_config(block.configs[i]) for i in picks}:
            # The bar every suggestion must clear stays in the answer, at its place.
            picks = sorted([*picks[: request.n - 1], default_at])
        if not len(self.portfolio):
            warnings.append(
                f"no {self.family} runs in the history yet: only the library default is known"
            )
        elif len(picks) < request.n:
            warnings.append(f"only {len(picks)} distinct configs are known without a surrogate")
        suggestions = []
        for rank, i in enumerate(picks, start=1):
            explanation: dict[str, Any] = {"nearest_datasets": nb_json, "top_features": []}
            if sources[i] == "portfolio":
                explanation["from_dataset"] = origins[i]
            suggestions.append(
                Suggestion(rank, dict(block.configs[i]), None, None, sources[i], explanation)
            )
        return SuggestionResult(suggestions, None, warnings)


def _calibration_of(surrogate: Surrogate | None) -> Calibration | None:
    """The ``p_beats_default`` calibration stored with a surrogate, if it has a usable one."""
    if surrogate is None:
        return None
    data = (surrogate.metadata.get("confidence") or {}).get("calibration")
    if data is None:
        return None
    try:
        return Calibration.from_json(data)
    except ValueError as exc:
        log.error("ignoring the %s surrogate's calibration: %s", surrogate.family, exc)
        return None


def _applies(name: str, task: str, meta: Mapping[str, float]) -> bool:
    """Whether a meta-feature exists for this kind of data (else it is rightly absent)."""
    if name.startswith("target_"):
        return task == "regression"
    if name.startswith(("class_", "imbalance")) or name in ("n_classes", "lm_nb"):
        return task != "regression"
    if name.startswith("cat_card") or name == "onehot_width":
        return meta.get("n_categorical", math.nan) != 0
    return True


def _request_key(request: SuggestionRequest) -> str | None:
    try:
        return json.dumps(
            [
                request.family,
                request.task,
                sorted(dict(request.meta_features).items()),
                request.n,
                0 if request.seed is None else request.seed,
                sorted(dict(request.fixed or {}).items()),
                request.metric,
            ],
            default=str,
        )
    except (TypeError, ValueError):
        return None  # unhashable oddities are simply not cached


def _copy_result(result: SuggestionResult) -> SuggestionResult:
    # Callers may mutate configs and explanations; the cached answer must not change.
    return replace(
        result,
        suggestions=[
            replace(s, config=copy.deepcopy(s.config), explanation=copy.deepcopy(s.explanation))
            for s in result.suggestions
        ],
        warnings=list(result.warnings),
    )


def _check_meta(task: str, given: Mapping[str, Any]) -> dict[str, float]:
    """Validated meta-features as floats (NaN when unknown).

    Raises:
        SuggestionError: impossible values (negative counts, n_classes < 2 for
            classification...), naming what is wrong.
    """
    clean: dict[str, Any] = {}
    for k, v in dict(given).items():
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue  # unknown: allowed, the surrogate treats it as missing
        if isinstance(v, bool) or math.isnan(_as_float(v)):
            raise SuggestionError(
                f"meta-feature {k}={v!r} is not a finite number", field="meta_features"
            )
        clean[k] = v
    from hyperprior.training.metafeatures import validate_metafeatures

    try:
        # It names every problem at once and fills in what follows (logs, ratios).
        clean = dict(validate_metafeatures(task, clean))
    except ValueError as exc:
        raise SuggestionError(f"impossible meta-features: {exc}", field="meta_features") from None
    out: dict[str, float] = {k: _as_float(v) for k, v in clean.items()}
    for name in core_metafeatures():
        out.setdefault(name, math.nan)
    return out


def _force_parents(space: Any, config: dict[str, Any], fixed: Mapping[str, Any]) -> dict[str, Any]:
    """Make the parents of fixed conditional parameters allow them (unless fixed too)."""
    out = dict(config)
    for name in fixed:
        p = space.param(name)
        while p.condition is not None:
            parent, allowed = p.condition
            if parent in fixed:
                break
            parent_param = space.param(parent)
            if parent_param.index_of(out.get(parent)) not in {
                parent_param.index_of(v) for v in allowed
            }:
                out[parent] = allowed[0]
            p = parent_param
    return out


def _top_distinct(score: np.ndarray, unit: np.ndarray, k: int) -> list[int]:
    order = np.argsort(-score, kind="stable")
    picked: list[int] = []
    seen: set[bytes] = set()
    for i in order:
        key = np.round(unit[i], 6).tobytes()
        if key in seen:
            continue
        seen.add(key)
        picked.append(int(i))
        if len(picked) >= k:
            break
    return picked


def _diverse(
    order: np.ndarray, block: ConfigBlock, free: np.ndarray, n: int, min_distance: float
) -> list[int]:
    """Greedy picks in ``order`` at least ``min_distance`` apart (RMS over free dims).

    Exact duplicates are always skipped; if too few candidates are far enough apart the
    rest are filled with the best remaining distinct configs.
    """
    dims = free if free.any() else np.ones_like(free)
    unit = block.unit[:, dims]
    picked: list[int] = []
    seen: set[str] = set()
    skipped: list[int] = []
    for i in order:
        i = int(i)
        text = canonical_config(block.configs[i])
        if text in seen:
            continue
        if picked:
            d = np.sqrt(((unit[picked] - unit[i]) ** 2).mean(axis=1)).min()
            if d < min_distance:
                skipped.append(i)
                continue
        seen.add(text)
        picked.append(i)
        if len(picked) >= n:
            return picked
    for i in skipped:
        text = canonical_config(block.configs[i])
        if text not in seen:
            seen.add(text)
            picked.append(i)
            if len(picked) >= n:
                break
    # Keep the score order after filling.
    position = {int(i): p for p, i in enumerate(order)}
    return sorted(picked, key=position.__getitem__)


@lru_cache(maxsize=16)
def _config_features(names: tuple[str, ...]) -> np.ndarray:
    # Only features that depend on the config: the dataset's own meta-features shift
    # every candidate alike and say nothing about why this config ranks where it does.
    return np.array([n.startswith(("cfg_", "ix_")) for n in names])


def _top_features(
    names: Sequence[str], x: np.ndarray, contrib: np.ndarray, k: int
) -> list[dict[str, Any]]:
    contrib = np.where(_config_features(tuple(names)), contrib, 0.0)
    order = np.argsort(-np.abs(contrib), kind="stable")[:k]
    return [
        {
            "feature": names[j],
            "value": None if not math.isfinite(x[j]) else round(float(x[j]), 5),
            "contribution": round(float(contrib[j]), 5),
        }
        for j in order
        if contrib[j] != 0.0
    ]


# ---------------------------------------------------------------------------------------
# The engine: one policy per family, reloaded when the active surrogate changes


def surrogate_from_record(record: SurrogateRecord) -> Surrogate:
    """Verify and load a registered surrogate (sha256 checked before parsing)."""
    if record.model_text is None:
        raise SurrogateIntegrityError(f"surrogate {record.id} came without its model text")
    return from_text(record.model_text, record.meta, sha256=record.sha256)


class SuggestionEngine:
    """Per-family suggestion policies over the registry's active surrogates.

    Policies are built lazily on first use and rebuilt by :meth:`refresh` when the
    active surrogate of a family changes (a cheap listing of the registry, no model
    text); the portfolio of a cold-start policy is rebuilt from the history at most
    every ``portfolio_ttl`` seconds.

    A newly active surrogate that cannot be loaded (its text does not match its
    sha256, or it needs features this version no longer builds) is refused and logged
    as an error, and the surrogate loaded before keeps serving; the refused one is
    tried again only after ``portfolio_ttl`` seconds or when another becomes active.
    Without a loaded surrogate to keep, the family answers cold start, with a warning.

    Args:
        reader: the run history.
        registry: the surrogates registry (None: always cold start).
        settings: the policies' knobs.
        portfolio_ttl: seconds a cold-start portfolio is reused.
    """

    def __init__(
        self,
        reader: HistoryReader,
        registry: SurrogateRegistry | None,
        *,
        settings: PolicySettings | None = None,
        portfolio_ttl: float = 600.0,
    ) -> None:
        self.reader = reader
        self.registry = registry
        self.settings = settings or PolicySettings()
        self.portfolio_ttl = portfolio_ttl
        self._policies: dict[str, tuple[int | None, float, SuggestionPolicy]] = {}
        # family -> (surrogate id, when) of a newly active model that was refused.
        self._refused: dict[str, tuple[int, float]] = {}
        self._build_lock = threading.Lock()
        # Registry keys with an active surrogate (family, or family@metric); None: unread.
        self._active_keys: set[str] | None = None

    def suggest(self, request: SuggestionRequest) -> SuggestionResult:
        """Answer with the family's current policy (built on first use).

        A request that names a metric other than its task's primary one is ranked by
        that metric's surrogate when one is active and loads; otherwise by the primary
        metric, with a warning that says so.
        """
        from hyperprior.training.families import PRIMARY_METRICS, TASK_METRICS

        primary = PRIMARY_METRICS.get(request.task)
        metric = request.metric
        # A metric of another task (rmse for a binary request) has no surrogate that
        # knows this task: the primary ranking answers, with its warning.
        if metric and primary and metric != primary and metric in TASK_METRICS[request.task]:
            key = surrogate_key(request.family, metric)
            if key in self._known_keys():
                policy = self.policy(key)
                if policy.surrogate is not None:
                    return replace(policy.suggest(request), ranked_by=metric)
        return replace(self.policy(request.family).suggest(request), ranked_by=primary)

    def _known_keys(self) -> set[str]:
        # Refreshed with the policies (refresh()); one registry query on first use.
        if self._active_keys is None:
            self._active_keys = set(self._active_ids())
        return self._active_keys

    def policy(self, family: str) -> SuggestionPolicy:
        """The current policy of ``family`` (or of a registry key ``family@metric``).

        Raises:
            SuggestionError: an unknown family.
        """
        entry = self._policies.get(family)
        if entry is not None:
            return entry[2]
        from hyperprior.training.spaces import get_space

        try:
            get_space(split_surrogate_key(family)[0])
        except (KeyError, ValueError) as exc:
            raise SuggestionError(str(exc), field="family") from None
        with self._build_lock:
            entry = self._policies.get(family)
            if entry is None:
                active = self._active_ids().get(family)
                entry = self._build(family, active)
                self._policies[family] = entry
        return entry[2]

    def _active_ids(self) -> dict[str, int]:
        if self.registry is None:
            return {}
        # A registry may offer the ids alone (one tiny query); the listing carries every
        # version's metadata, which grows with each nightly retrain.
        fast = getattr(self.registry, "active_surrogate_ids", None)
        if callable(fast):
            return {str(k): int(v) for k, v in fast().items()}
        return {
            surrogate_key(s.family, getattr(s, "target", "")): int(s.id)
            for s in self.registry.list_surrogates()
            if s.status == "active"
        }

    def refresh(self) -> list[str]:
        """Reload the policies whose active surrogate changed; return those families."""
        changed = []
        active = self._active_ids()
        self._active_keys = set(active)
        now = time.monotonic()
        for family, entry in list(self._policies.items()):
            current, built, _ = entry
            wanted = active.get(family)
            stale = current is None and now - built > self.portfolio_ttl
            if wanted == current and not stale:
                continue
            refused = self._refused.get(family)
            if refused is not None and refused[0] == wanted:
                if now - refused[1] < self.portfolio_ttl:
                    continue  # refused and logged already; the loaded model keeps serving
            with self._build_lock:
                rebuilt = self._build(family, wanted, previous=entry)
                self._policies[family] = rebuilt
            if rebuilt is not entry:
                changed.append(family)
        return changed

    def active_surrogate_id(self, family: str) -> int | None:
        """Id of the surrogate the family's loaded policy uses (None: cold start)."""
        entry = self._policies.get(family)
        return None if entry is None else entry[0]

    def _build(
        self,
        key: str,
        active: int | None,
        *,
        previous: tuple[int | None, float, SuggestionPolicy] | None = None,
    ) -> tuple[int | None, float, SuggestionPolicy]:
        """Build the policy of registry ``key`` (a family, or ``family@metric``) on surrogate
        ``active`` (None: cold start).

        When ``active`` cannot be loaded and ``previous`` holds a loaded surrogate,
        ``previous`` itself is returned: a tampered or broken model never replaces a
        working one.
        """
        family, target = split_surrogate_key(key)
        notes: list[str] = []
        if active is not None and self.registry is not None:
            try:
                record = self.registry.get_surrogate(active)
                surrogate = surrogate_from_record(record)
                if not surrogate.compatible():
                    raise SurrogateIntegrityError(
                        "it was trained on features this version no longer builds; retrain it"
                    )
                portfolio_json = surrogate.metadata.get("portfolio")
                portfolio = (
                    Portfolio.from_json(family, portfolio_json)
                    if portfolio_json is not None
                    else self._history_portfolio(family, target)
                )
                info = SurrogateInfo(
                    id=int(record.id),
                    family=family,
                    # When the model was fitted, not when it was registered (shipped
                    # models are registered at install time).
                    trained_at=surrogate.metadata.get("trained_at")
                    or (record.created_at.isoformat() if record.created_at else None),
                    n_runs=int(record.n_runs),
                    sha256=record.sha256,
                )
                log.info("loaded %s surrogate %s (sha256 %s)", key, active, record.sha256[:12])
                policy = SuggestionPolicy(
                    family,
                    surrogate=surrogate,
                    portfolio=portfolio,
                    info=info,
                    settings=self.settings,
                    target=target,
                )
                self._refused.pop(key, None)
                return active, time.monotonic(), policy
            except (SurrogateIntegrityError, KeyError, ValueError) as exc:
                log.error("cannot load %s surrogate %s: %s", key, active, exc)
                self._refused[key] = (active, time.monotonic())
                if previous is not None and previous[2].surrogate is not None:
                    log.error(
                        "refused %s surrogate %s; surrogate %s keeps serving",
                        key,
                        active,
                        previous[0],
                    )
                    return previous
                notes.append(
                    f"the active {key} surrogate ({active}) could not be loaded ({exc}); "
                    "answering without it"
                )
        policy = SuggestionPolicy(
            family,
            surrogate=None,
            portfolio=self._history_portfolio(family, target),
            settings=self.settings,
            notes=notes,
            target=target,
        )
        return active, time.monotonic(), policy

    def _history_portfolio(self, family: str, target: str = "") -> Portfolio:
        try:
            frame = runs_for_target(self.reader.runs_frame(family=family, status="ok"), target)
        except Exception as exc:  # noqa: BLE001 - a history outage must not stop answers
            log.error("cannot read the %s history: %s", family, exc)
            return Portfolio(family, {})
        return Portfolio.from_frame(frame, family, per_dataset=self.settings.per_dataset)


def with_portfolio(surrogate: Surrogate, portfolio: Portfolio) -> Surrogate:
    """A copy of ``surrogate`` whose metadata carries ``portfolio`` (same model text)."""
    meta = dict(surrogate.metadata)
    meta["portfolio"] = portfolio.to_json()
    return Surrogate(surrogate.text, meta)


__all__ = [
    "SOURCES",
    "TASKS",
    "HistoryReader",
    "Neighbor",
    "PolicySettings",
    "Portfolio",
    "PortfolioEntry",
    "Suggestion",
    "SuggestionEngine",
    "SuggestionError",
    "SuggestionPolicy",
    "SuggestionRequest",
    "SuggestionResult",
    "SurrogateInfo",
    "SurrogateRegistry",
    "surrogate_from_record",
    "with_portfolio",
]
