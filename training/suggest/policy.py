"""The suggestion policy of one family: candidates, scores, calibration and diverse picks.

How a request is answered is told in :mod:`hyperprior.training.suggest`.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from hyperprior.training.confidence import (
    MIN_P_BEATS_DEFAULT,
    Calibration,
    combine_p,
    probability,
    signal_of,
)
from hyperprior.training.features import (
    ConfigBlock,
    core_metafeatures,
    design_matrix,
    encode_configs,
)
from hyperprior.training.suggest.candidates import _chain, _encode_points, _take
from hyperprior.training.suggest.portfolio import Portfolio, PortfolioEntry, _as_float
from hyperprior.training.suggest.protocols import (
    Suggestion,
    SuggestionError,
    SuggestionRequest,
    SuggestionResult,
    SurrogateInfo,
)
from hyperprior.training.surrogate import Surrogate
from hyperprior.vocabulary import canonical_json

log = logging.getLogger(__name__)


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
        self._noises: OrderedDict[tuple[Any, ...], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._portfolio_blocks: dict[tuple[str, str, int], ConfigBlock] = {}
        self._answers: OrderedDict[str, SuggestionResult] = OrderedDict()
        self.calibration = _calibration_of(surrogate)
        # Which inputs an explanation may name: they depend on the surrogate alone.
        self._config_features = _config_features(
            surrogate.feature_names if surrogate is not None else ()
        )

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
        key = ("sobol", task, seed, canonical_json(dict(fixed)))
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
        # Without fixed params each dataset's first k configs are the same block every
        # time: cache it as taken, rather than taking the rows on every request.
        counts: dict[str, int] = {}
        for e in entries:
            counts[e.dataset] = counts.get(e.dataset, 0) + 1
        blocks = []
        for dataset, k in counts.items():
            key = (dataset, task, k)
            hit = self._portfolio_blocks.get(key)
            if hit is None:
                mine = self.portfolio.entries_of(dataset)
                full = encode_configs(self.family, [self._portfolio_config(e, task) for e in mine])
                hit = full.take(range(k))
                self._portfolio_blocks[key] = hit
            blocks.append(hit)
        return ConfigBlock.concat(blocks)

    def _portfolio_config(self, entry: PortfolioEntry, task: str) -> dict[str, Any]:
        try:
            return self.space.validate(entry.config, task)
        except ValueError:
            # A neighbour of another task may carry parameters this task lacks.
            known = {p.name for p in self.space.params_for(task)}
            return self.space.validate({k: v for k, v in entry.config.items() if k in known}, task)

    def _default_block(self, task: str, fixed: Mapping[str, Any]) -> ConfigBlock:
        key = ("default", task, canonical_json(dict(fixed)))
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
        unsafe = () if self.calibration is None else self.calibration.unsafe_default_tasks
        if far and self.calibration is not None:
            beyond = (
                f"no dataset in the history is close to this one (nearest: "
                f"{neighbors[0].name} at distance {distance:.2f}, beyond the "
                f"{self.distance_threshold:.2f} up to which held-out datasets were covered): "
            )
            if request.task in unsafe:
                # The default is no fallback here: the surrogate's picks stay first.
                far = False
                warnings.append(
                    beyond + f"predictions extrapolate, but {self.family}'s library default "
                    "is not put first, as it rarely matched the surrogate's picks on held-out "
                    f"{request.task} datasets; verify the suggestions (POST /v1/refinements)"
                )
            else:
                warnings.append(
                    beyond + "the first suggestion is the library default, the others are the "
                    "surrogate's extrapolations; verify them (POST /v1/refinements)"
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
        blocks = []
        extra_sources: list[str] = []
        extra_origins: list[str | None] = []
        pblock = self._portfolio_block(entries, task, fixed)
        if pblock is not None:
            blocks.append(pblock)
            extra_sources += ["portfolio"] * len(pblock)
            extra_origins += [self.portfolio.name_of(e.dataset) for e in entries]
        blocks.append(self._default_block(task, fixed))
        extra_sources += ["default"]
        extra_origins += [None]
        # One design matrix for the pool, the portfolio and the default (rows do not
        # depend on each other; a call costs more than its rows).
        X = design_matrix(self.family, _chain([sobol, *blocks]), meta, task=task, fidelity=1.0)
        n_pool = len(sobol)
        if 0 < self.settings.screen_top < n_pool:
            # Coarse pass: every Sobol candidate through one member; the best go on to the
            # whole ensemble with the portfolio and the default.
            first = surrogate.screen(X[:n_pool], fraction=self.settings.screen_fraction)
            keep = np.sort(np.argsort(-first, kind="stable")[: self.settings.screen_top])
            sobol = _take(sobol, keep)
            X = X[np.concatenate([keep, np.arange(n_pool, len(X))])]
        sources = ["surrogate"] * len(sobol) + extra_sources
        origins: list[str | None] = [None] * len(sobol)
        origins += extra_origins
        block = _chain([sobol, *blocks])
        members, beats = surrogate.predict_outputs(X)
        pred = surrogate.summarise(members, kappa=kappa)
        default_at = len(block) - 1
        signal = signal_of(meta)
        p_beats = self._p_beats_default(members, default_at, distance, signal, beats)

        # Coarse to fine: perturb the best few and score the children too.
        s = self.settings
        if s.refine_parents > 0 and s.refine_children > 0:
            key = self._rank_key(pred.score, p_beats, default_at, far)
            parents = _top_distinct(key, block.unit, s.refine_parents)
            noise = self._noise(seed, (len(parents), s.refine_children, block.unit.shape[1]))
            u = np.clip(block.unit[parents][:, None, :] + noise, 0.0, 1.0).reshape(
                -1, block.unit.shape[1]
            )
            child = self._decode(u, task, fixed)
            Xc = design_matrix(self.family, child, meta, task=task, fidelity=1.0)
            cmembers, cbeats = surrogate.predict_outputs(Xc)
            cpred = surrogate.summarise(cmembers, kappa=kappa)
            if p_beats is not None:
                both = np.vstack([members[default_at : default_at + 1], cmembers])
                both_beats = (
                    None
                    if beats is None or cbeats is None
                    else np.concatenate([beats[default_at : default_at + 1], cbeats])
                )
                p_beats = np.concatenate(
                    [p_beats, self._p_beats_default(both, 0, distance, signal, both_beats)[1:]]
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
        picks = _diverse(order, block, free, request.n, s.min_distance)
        Xp = X[picks]
        contrib = surrogate.contributions(Xp) if picks else np.empty((0, X.shape[1]))
        tops = _top_features(
            surrogate.feature_names, self._config_features, Xp, contrib, s.top_features
        )
        suggestions = []
        for rank, (i, top) in enumerate(zip(picks, tops, strict=True), start=1):
            explanation: dict[str, Any] = {
                "nearest_datasets": nb_json,
                "top_features": top,
                "spread": round(float(pred.spread[i]), 5),
            }
            if sources[i] == "portfolio":
                explanation["from_dataset"] = origins[i]
            suggestions.append(
                Suggestion(
                    rank=rank,
                    config=dict(block.configs[i]),
                    predicted_quality=_unit(pred.mean[i]),
                    interval=(
                        _unit(pred.lower[i]),
                        _unit(pred.upper[i]),
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
                f"the best-scored candidate is not at least {self.min_p_beats_default:.0%} "
                "likely to beat the library default on this dataset, so the default comes first"
            )
        return SuggestionResult(suggestions, self.info, warnings)

    def _noise(self, seed: int, shape: tuple[int, int, int]) -> np.ndarray:
        """The refinement's perturbations for ``seed`` (the same every time: cached)."""
        key = (seed, shape)
        with self._lock:
            hit = self._noises.get(key)
        if hit is None:
            rng = np.random.default_rng([seed, 7, 1])
            hit = rng.normal(0.0, self.settings.refine_sigma, shape)
            hit.flags.writeable = False
            with self._lock:
                self._noises[key] = hit
                while len(self._noises) > self.settings.cache_size:
                    self._noises.popitem(last=False)
        return hit

    def _p_beats_default(
        self,
        members: np.ndarray,
        default_at: int,
        distance: float | None,
        signal: float = math.nan,
        beats: np.ndarray | None = None,
    ) -> np.ndarray | None:
        """``p_beats_default`` of every row (NaN for the default's own row).

        The calibration, averaged with the beats-the-default classifier when the
        surrogate has one (:func:`~hyperprior.training.confidence.combine_p`).
        """
        if self.calibration is None or self.surrogate is None:
            return None
        advantage = members - members[default_at]
        p = self.calibration.p_beats_default(
            advantage.mean(axis=1),
            advantage.std(axis=1),
            float(members[default_at].mean()),
            math.nan if distance is None else distance,
            signal,
        )
        q = None if beats is None else probability(beats)
        p = combine_p(p, q, self.surrogate.params.beats_weight)
        p[default_at] = math.nan
        return p

    def _rank_key(
        self, score: np.ndarray, p_beats: np.ndarray | None, default_at: int, far: bool
    ) -> np.ndarray:
        """What the candidates are sorted by (higher first).

        The pessimistic score, except that candidates not likely enough to beat the
        default rank after it and every likely one, and the default leads far from the
        history or when the best-scored candidate is not likely enough to beat it
        (the ``guard`` rule of :mod:`hyperprior.training.confidence`: a lower-scored
        candidate is not promoted for its ``p_beats_default``).
        """
        if p_beats is None:
            return score
        key = score.astype(np.float64, copy=True)
        unlikely = ~(p_beats[: len(key)] >= self.min_p_beats_default)
        unlikely[default_at] = False
        # Scores are quality percentiles (about 0..1): an offset of 10 puts every
        # unlikely candidate below every likely one and keeps their own order.
        key[unlikely] -= 10.0
        if far or unlikely[int(np.argmax(score))]:
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
        default_text = canonical_json(block.configs[default_at])
        if default_text not in {canonical_json(block.configs[i]) for i in picks}:
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
            replace(s, config=_copy_json(s.config), explanation=_copy_json(s.explanation))
            for s in result.suggestions
        ],
        warnings=list(result.warnings),
    )


def _copy_json(value: Any) -> Any:
    """A deep copy of JSON-like data (what ``copy.deepcopy`` gives, without its memo).

    Dicts, lists and tuples are copied; anything else is an immutable leaf (numbers,
    strings, None) and shared.
    """
    if isinstance(value, dict):
        # Leaves are most of an answer: shared here without a call each.
        return {k: v if type(v) in _JSON_LEAVES else _copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [v if type(v) in _JSON_LEAVES else _copy_json(v) for v in value]
    if type(value) is tuple:
        return tuple(v if type(v) in _JSON_LEAVES else _copy_json(v) for v in value)
    return value


# Exact types only: a subclass of one could be a dict, list or tuple in disguise.
_JSON_LEAVES = frozenset({str, int, float, bool, type(None)})


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
    # Where each pick stands in ``order``, to restore the score order after filling.
    position: dict[int, int] = {}
    # Every candidate's distance to its nearest pick so far, updated once per pick (a
    # pick is rare, a candidate's test common): the same numbers as row by row.
    nearest = np.full(len(unit), np.inf)
    for p, i in enumerate(order.tolist()):
        # Distance first: a config's text (the costly part) is only needed to pick it. A
        # duplicate of a pick is at distance 0, so it is skipped here and refused below.
        if nearest[i] < min_distance:
            skipped.append(i)
            position[i] = p
            continue
        text = canonical_json(block.configs[i])
        if text in seen:
            continue
        seen.add(text)
        picked.append(i)
        position[i] = p
        if len(picked) >= n:
            return picked
        np.minimum(nearest, np.sqrt(((unit - unit[i]) ** 2).mean(axis=1)), out=nearest)
    for i in skipped:
        text = canonical_json(block.configs[i])
        if text not in seen:
            seen.add(text)
            picked.append(i)
            if len(picked) >= n:
                break
    return sorted(picked, key=position.__getitem__)


def _config_features(names: Sequence[str]) -> np.ndarray:
    # Only features that depend on the config: the dataset's own meta-features shift
    # every candidate alike and say nothing about why this config ranks where it does.
    return np.array([n.startswith(("cfg_", "ix_")) for n in names])


def _unit(x: float) -> float:
    """``x`` clipped to [0, 1] and rounded to 5 places (``np.clip``'s result, NaN and
    -0.0 included, without its cost on a scalar)."""
    return round(min(max(float(x), 0.0), 1.0), 5)


def _top_features(
    names: Sequence[str], config_features: np.ndarray, X: np.ndarray, contrib: np.ndarray, k: int
) -> list[list[dict[str, Any]]]:
    """The ``k`` largest config contributions of each row of ``X`` (one sort for all)."""
    contrib = np.where(config_features, contrib, 0.0)
    # A stable sort of each row, as of each row alone.
    orders = np.argsort(-np.abs(contrib), axis=1, kind="stable")[:, :k].tolist()
    out = []
    for x, c, order in zip(X.tolist(), contrib.tolist(), orders, strict=True):
        out.append(
            [
                {
                    "feature": names[j],
                    "value": None if not math.isfinite(x[j]) else round(x[j], 5),
                    "contribution": round(c[j], 5),
                }
                for j in order
                if c[j] != 0.0
            ]
        )
    return out
