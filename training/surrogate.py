"""The surrogate: a bagged LightGBM ensemble per family, its grouped CV, save and load.

One module of about 800 lines, not split: training, cross-validation and storage all
depend on the ensemble's single-text layout described below.

What it predicts: the normalised quality (see :mod:`hyperprior.training.features`) of a config on a
dataset described by its meta-features. Uncertainty comes from bagging *over datasets*:
each of the ``n_members`` boosters is trained on a random 75% of the datasets (without
replacement; plus row and feature subsampling), so the members disagree where the
history has few datasets like the one asked about. Suggestions rank by the pessimistic
``mean - kappa * spread`` so that a config far from anything seen does not win by
extrapolation. (A Poisson bootstrap over datasets, each member seeing ~63% of them,
gave about the same regret in grouped CV and a slightly lower Spearman: 0.534 vs 0.539
on LightGBM, 0.598 vs 0.607 on random forests, 75 datasets.)

The members are stored as ONE LightGBM text model with ``num_tree_per_iteration`` equal
to the number of members (the multi-output layout LightGBM uses for multiclass; member
``k`` owns trees ``k, k + K, k + 2K, ...``). One ``predict(raw_score=True)`` call then
returns every member's prediction and one sha256 covers the whole ensemble; the first
member alone (:func:`member_text`) screens the Sobol pool and gives the ``pred_contrib``
explanations cheaply. Never pickled: :func:`load` checks the sha256 of the exact text
before LightGBM parses it.

Evaluation is grouped CV by dataset (:func:`grouped_folds`: no dataset in both train
and test, each dataset's fold fixed by its name), scored within each test dataset on
its measured full-fidelity runs: Spearman of predicted vs measured score, NDCG@5
(relevance: min-max scaled score), and top-1 regret of the surrogate's pick,
``(best - picked) / (best - worst)`` (a failed pick has regret 1); each averaged over
datasets. The library default's regret on the same datasets is reported next to it as
the bar to clear.

Choice of target and objective, by grouped CV on the bootstrap history (75 real
datasets, 5 folds; ``benchmarks/surrogate_cv.py``; top-1 regret, lower is better):
rank percentile with an L2 objective (lightgbm 0.109, random_forest 0.104, linear
0.0073) beat min-max with L2 (0.127, 0.122, 0.0105) and LightGBM ``lambdarank`` grouped
by dataset (0.109, 0.132, 0.0083), whose scores moreover have no scale, so it gives no
interpretable predicted quality or interval. The library default's regret on the same
datasets: 0.184, 0.345, 0.286.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from hyperprior.training.features import (
    FEATURES_VERSION,
    TrainingSet,
    build_training_set,
    feature_names,
    relevance_labels,
)

if TYPE_CHECKING:
    from hyperprior.training.compiled import CompiledTrees, TreeCompiler, TreeSlice

FORMAT = "hyperprior-surrogate/1"
OBJECTIVES: tuple[str, ...] = ("regression", "lambdarank")


class SurrogateIntegrityError(ValueError):
    """The stored model text does not match its sha256, or its metadata is unusable."""


@dataclass(frozen=True)
class SurrogateParams:
    """How a surrogate is trained; stored with it so a retrain can repeat the recipe.

    The defaults keep one suggestion within the latency budget on 2 cores (the Sobol
    pool is screened by one member; about 200 candidates go through all
    ``n_members * n_rounds`` trees).

    Attributes:
        objective: ``regression`` (L2 on the normalised quality) or ``lambdarank``.
        normalisation: the target, see :mod:`hyperprior.training.features`.
        n_members: boosters in the ensemble (mean and spread).
        n_rounds: boosting rounds per member.
        num_leaves: leaves per tree.
        learning_rate: shrinkage.
        min_data_in_leaf: smallest leaf.
        feature_fraction: share of the columns per tree.
        bagging_fraction: share of the rows per tree.
        lambda_l2: L2 penalty of the leaf values.
        max_bin: histogram bins per feature.
        dataset_fraction: share of the datasets each member trains on (1: all;
            <= 0: a Poisson bootstrap over datasets).
        kappa: pessimism of the ranking score ``mean - kappa * spread``.
        spread_scale: a (dataset, metric) group whose middle 80% of scores span less
            than this (in the metric's units; the primary metrics are on a 0-1 scale)
            weighs proportionally less, down to ``spread_floor``: where no config
            matters, the rank target is noise (0: every group weighs the same).
        spread_floor: the smallest weight of a group.
        beats_model: besides the members, a classifier of "scores above the library
            default" on the same inputs (:func:`beats_rows`), stored as one more output
            of the model text; the policy averages its probability with the calibrated
            one (leave-one-group-out: ``benchmarks/policy_cv.py``).
        beats_weight: the classifier's share of ``p_beats_default`` (0.5: the mean of
            the two; 1: the classifier alone).
        balance: a dataset's runs weigh ``n ** -balance`` (``n``: its runs), scaled to
            a mean of 1, so datasets measured on more configs do not outweigh the rest
            (0: every run the same; 1: every dataset the same).
        top_weight: a run weighs ``1 + top_weight * y``, so the fit is closest where
            the picks are made, at the top of each dataset (0: every run the same).
        interval_level: coverage the interval is calibrated to (out of fold).
        cv_folds: grouped-CV folds.
        cv_max_datasets: grouped CV runs on at most this many datasets.
        seed: seeds everything random in training.
        num_threads: LightGBM threads for training and prediction.
    """

    objective: str = "regression"
    normalisation: str = "rank"
    n_members: int = 4
    n_rounds: int = 40
    # 31 leaves beat 15 once the data's signal was an input (benchmarks/policy_cv.py).
    num_leaves: int = 31
    learning_rate: float = 0.15
    min_data_in_leaf: int = 20
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    lambda_l2: float = 1.0
    max_bin: int = 63
    dataset_fraction: float = 0.75
    kappa: float = 1.0
    # Down-weighting flat datasets cut top-1 regret by leave-one-group-out on 3 seeds
    # (benchmarks/policy_cv.py).
    spread_scale: float = 0.05
    spread_floor: float = 0.2
    top_weight: float = 0.0
    balance: float = 0.0
    beats_model: bool = True
    beats_weight: float = 0.5
    interval_level: float = 0.8
    cv_folds: int = 10
    cv_max_datasets: int = 2000
    seed: int = 0
    num_threads: int = 1

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return asdict(self)

    @classmethod
    def for_family(cls, family: str, **overrides: Any) -> SurrogateParams:
        """The recipe of ``family``: the defaults, its ``surrogate_recipe``, then ``overrides``.

        A family nobody registered in code (a declared one) gets the defaults.
        """
        from hyperprior.training.families import FAMILIES

        known = FAMILIES.get(family)
        recipe = dict(known.surrogate_recipe) if known is not None else {}
        return cls(**{**recipe, **overrides})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SurrogateParams:
        """Inverse of :meth:`to_dict`; unknown keys (from newer versions) are ignored.

        A recipe stored before groups were weighted by their spread had none, and one
        stored before the beats-the-default classifier had none either.
        """
        known = {f.name for f in fields(cls)}
        kept = {k: v for k, v in data.items() if k in known}
        if data and "spread_scale" not in data:
            kept["spread_scale"] = 0.0
        if data and "beats_model" not in data:
            kept["beats_model"] = False
        return cls(**kept)


@dataclass(frozen=True)
class Prediction:
    """Predicted normalised quality per row.

    Attributes:
        mean: mean over the ensemble's members.
        spread: standard deviation over the members.
        lower: lower end of the calibrated interval.
        upper: upper end of the calibrated interval.
        score: the pessimistic ranking score, ``mean - kappa * spread``.
    """

    mean: np.ndarray
    spread: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    score: np.ndarray


# ---------------------------------------------------------------------------------------
# Training


def _lgb_params(params: SurrogateParams, member: int, max_group: int) -> dict[str, Any]:
    seed = params.seed * 7919 + member
    out: dict[str, Any] = {
        "objective": params.objective,
        "num_leaves": params.num_leaves,
        "learning_rate": params.learning_rate,
        "min_data_in_leaf": params.min_data_in_leaf,
        "feature_fraction": params.feature_fraction,
        "bagging_fraction": params.bagging_fraction,
        "bagging_freq": 1 if params.bagging_fraction < 1.0 else 0,
        "lambda_l2": params.lambda_l2,
        "max_bin": params.max_bin,
        "num_threads": params.num_threads,
        "seed": seed,
        "bagging_seed": seed + 1,
        "feature_fraction_seed": seed + 2,
        "data_random_seed": params.seed,
        "deterministic": True,
        "force_row_wise": True,
        "verbosity": -1,
    }
    if params.objective == "lambdarank":
        levels = 16
        out["label_gain"] = [float(i) for i in range(levels)]
        out["lambdarank_truncation_level"] = max(10, max_group)
    return out


def spread_weights(ts: TrainingSet, params: SurrogateParams) -> np.ndarray:
    """Per-row weight of its (dataset, metric) group by how much the configs differ there.

    The weight is the spread of the group's scores (90th minus 10th percentile of its ok
    runs) over ``params.spread_scale``, clipped to ``[spread_floor, 1]``. A group whose
    scores are all failed weighs 1.
    """
    if params.spread_scale <= 0 or len(ts) == 0:
        return np.ones(len(ts))
    frame = pd.DataFrame({"g": ts.group, "o": ts.oriented})
    ok = frame.dropna()
    q = ok.groupby("g")["o"].quantile([0.1, 0.9]).unstack()
    spread = (q[0.9] - q[0.1]).reindex(frame["g"]).to_numpy(dtype=np.float64)
    w = np.clip(spread / params.spread_scale, params.spread_floor, 1.0)
    return np.where(np.isnan(w), 1.0, w)


def _member_weights(ts: TrainingSet, params: SurrogateParams, member: int) -> np.ndarray:
    # Each member sees a random share of the *datasets* (rows of one dataset stay
    # together), so members disagree where few datasets resemble the query.
    if params.dataset_fraction >= 1.0 or params.n_members == 1:
        return np.ones(len(ts))
    datasets, inverse = np.unique(ts.dataset, return_inverse=True)
    rng = np.random.default_rng([params.seed, member, 4242])
    if params.dataset_fraction <= 0.0:
        # A Poisson(1) bootstrap over datasets (kept for comparison; see the docstring).
        counts = rng.poisson(1.0, size=len(datasets)).astype(np.float64)
        return (counts if counts.any() else np.ones(len(datasets)))[inverse]
    n_keep = max(1, int(round(params.dataset_fraction * len(datasets))))
    keep = np.zeros(len(datasets))
    keep[rng.choice(len(datasets), size=n_keep, replace=False)] = 1.0
    return keep[inverse]


def _dataset_params(params: SurrogateParams) -> dict[str, Any]:
    return {
        "max_bin": params.max_bin,
        "min_data_in_leaf": params.min_data_in_leaf,
        "feature_pre_filter": False,
        "verbosity": -1,
        "data_random_seed": params.seed,
    }


def _train_members(ts: TrainingSet, params: SurrogateParams) -> list[lgb.Booster]:
    if params.objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {params.objective!r}; expected one of {OBJECTIVES}")
    if len(ts) == 0:
        raise ValueError(f"no usable runs to train a {ts.family} surrogate on")
    label = relevance_labels(ts.y) if params.objective == "lambdarank" else ts.y
    # Rows are sorted by group, so the counts of the sorted codes are the query sizes.
    group_sizes = (
        np.unique(ts.group, return_counts=True)[1] if params.objective == "lambdarank" else None
    )
    max_group = int(group_sizes.max()) if group_sizes is not None else 0
    data = lgb.Dataset(
        ts.X,
        label=label,
        group=group_sizes,
        feature_name=list(ts.feature_names),
        params=_dataset_params(params),
        free_raw_data=False,
    )
    data.construct()
    members = []
    spread = spread_weights(ts, params) * (1.0 + params.top_weight * np.nan_to_num(ts.y))
    if params.balance > 0:
        counts = pd.Series(ts.dataset).map(pd.Series(ts.dataset).value_counts()).to_numpy()
        share = counts.astype(np.float64) ** -params.balance
        spread = spread * share / share.mean()
    for k in range(params.n_members):
        data.set_weight(_member_weights(ts, params, k) * spread)
        members.append(
            lgb.train(_lgb_params(params, k, max_group), data, num_boost_round=params.n_rounds)
        )
    return members


def beats_rows(ts: TrainingSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, labels and weights of the beats-the-default classifier.

    The full-fidelity runs of every dataset whose library default was measured at full
    fidelity; the label says whether the run scored above the default (a failed run
    did not). Each dataset weighs the same: its runs are many and correlated.
    """
    full = ts.fidelity >= 1.0 - 1e-9
    frame = pd.DataFrame({"d": ts.dataset, "s": ts.oriented, "default": ts.is_default & full})
    frame = frame[full]
    s_def = frame[frame["default"]].groupby("d")["s"].first()
    frame = frame[frame["d"].isin(s_def.index) & ~frame["default"]]
    if frame.empty:
        return np.empty(0, dtype=np.int64), np.empty(0), np.empty(0)
    ref = frame["d"].map(s_def).to_numpy(dtype=np.float64)
    s = frame["s"].to_numpy(dtype=np.float64)
    label = np.where(np.isfinite(s), s > np.where(np.isfinite(ref), ref, -np.inf), False)
    weight = 1.0 / frame.groupby("d")["d"].transform("size").to_numpy(dtype=np.float64)
    return frame.index.to_numpy(), label.astype(np.float64), weight * len(weight) / weight.sum()


def _train_beats(ts: TrainingSet, params: SurrogateParams) -> lgb.Booster | None:
    """The beats-the-default classifier (None when the history cannot teach one)."""
    rows, label, weight = beats_rows(ts)
    if len(rows) < 2 * params.min_data_in_leaf or label.min() == label.max():
        return None
    data = lgb.Dataset(
        ts.X[rows],
        label=label,
        weight=weight,
        feature_name=list(ts.feature_names),
        params=_dataset_params(params),
    )
    lgb_params = {**_lgb_params(params, params.n_members, 0), "objective": "binary"}
    return lgb.train(lgb_params, data, num_boost_round=params.n_rounds)


def oof_beats(
    ts: TrainingSet, params: SurrogateParams, folds: Sequence[tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    """Out-of-fold logit of the beats-the-default classifier per row (NaN where none)."""
    out = np.full(len(ts), np.nan)
    for train_idx, test_idx in folds:
        model = _train_beats(ts.subset(np.sort(train_idx)), params)
        if model is not None:
            out[test_idx] = model.predict(
                ts.X[test_idx], raw_score=True, num_threads=params.num_threads
            )
    return out


_TREE_SPLIT = re.compile(r"^Tree=\d+\n", re.M)
# A tree with one leaf of value 0, as LightGBM writes it (without the "Tree=" line).
_ZERO_TREE = "\n".join(
    [
        "num_leaves=1",
        "num_cat=0",
        "split_feature=",
        "split_gain=",
        "threshold=",
        "decision_type=",
        "left_child=",
        "right_child=",
        "leaf_value=0",
        "leaf_weight=",
        "leaf_count=0",
        "internal_value=",
        "internal_weight=",
        "internal_count=",
        "is_linear=0",
        "shrinkage=1",
    ]
)


def combine_members(texts: Sequence[str]) -> str:
    """One LightGBM text model whose outputs are the members' raw predictions.

    Args:
        texts: LightGBM text models with one output each and the same features (members
            with fewer trees are padded with zero trees).

    Returns:
        A model text with ``num_tree_per_iteration = len(texts)``.
    """
    if len(texts) == 1:
        return texts[0]
    heads, trees = [], []
    for text in texts:
        head, rest = text.split("\nTree=0\n", 1)
        body = rest.split("\nend of trees\n", 1)[0]
        blocks = [b.strip("\n") for b in _TREE_SPLIT.split("Tree=0\n" + body) if b.strip()]
        heads.append(head)
        trees.append(blocks)
    # A member on a small history can stop early (no split left that meets the leaf
    # minimums); zero-valued single-leaf trees pad it without changing its outputs.
    longest = max(len(t) for t in trees)
    trees = [t + [_ZERO_TREE] * (longest - len(t)) for t in trees]
    n_trees = {longest}
    k = len(texts)
    head = heads[0]
    head = re.sub(r"^num_class=\d+$", f"num_class={k}", head, flags=re.M)
    head = re.sub(r"^num_tree_per_iteration=\d+$", f"num_tree_per_iteration={k}", head, flags=re.M)
    # Any multi-output objective works for raw scores; multiclassova loads without a softmax.
    head = re.sub(
        r"^objective=.*$", f"objective=multiclassova num_class:{k} sigmoid:1", head, flags=re.M
    )
    head = re.sub(r"^tree_sizes=.*\n?", "", head, flags=re.M)
    parts = [head.rstrip("\n"), ""]
    index = 0
    for i in range(n_trees.pop()):
        for member in range(k):
            parts.append(f"Tree={index}\n{trees[member][i]}\n")
            index += 1
    return "\n".join(parts) + "\nend of trees\n"


def member_text(text: str, member: int, n_members: int, *, rounds: int | None = None) -> str:
    """The single-output model text of one member of a :func:`combine_members` model.

    Args:
        text: the combined model text.
        member: which output.
        n_members: outputs of ``text``.
        rounds: keep only the member's first trees (None: all).
    """
    if n_members == 1 and rounds is None:
        return text
    head, rest = text.split("\nTree=0\n", 1)
    body = rest.split("\nend of trees\n", 1)[0]
    blocks = [b.strip("\n") for b in _TREE_SPLIT.split("Tree=0\n" + body) if b.strip()]
    head = re.sub(r"^num_class=\d+$", "num_class=1", head, flags=re.M)
    head = re.sub(r"^num_tree_per_iteration=\d+$", "num_tree_per_iteration=1", head, flags=re.M)
    head = re.sub(r"^objective=.*$", "objective=regression", head, flags=re.M)
    # Byte offsets of the trees no longer hold; LightGBM finds the trees without them.
    head = re.sub(r"^tree_sizes=.*\n?", "", head, flags=re.M)
    parts = [head.rstrip("\n"), ""]
    for index, block in enumerate(blocks[member::n_members][:rounds]):
        parts.append(f"Tree={index}\n{block}\n")
    return "\n".join(parts) + "\nend of trees\n"


# ---------------------------------------------------------------------------------------
# The fitted surrogate


def sha256_text(text: str) -> str:
    """Hex sha256 of the UTF-8 bytes of ``text``."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Surrogate:
    """A fitted surrogate: the booster, its recipe and what it was trained and scored on.

    Thread-safe for prediction (LightGBM's predict does not mutate the booster).

    With :meth:`use_compiled`, :meth:`screen`, :meth:`predict_outputs` and
    :meth:`contributions` predict with compiled trees (:mod:`hyperprior.training.compiled`)
    once their library is ready, LightGBM's predictions within 1e-9 (checked when the
    library is loaded); until then, and for anything else, with LightGBM.
    """

    def __init__(self, text: str, metadata: Mapping[str, Any]) -> None:
        """Parse ``text`` (already verified by the caller) and keep ``metadata``."""
        self.text = text
        self.metadata: dict[str, Any] = dict(metadata)
        self.booster = lgb.Booster(model_str=text)
        self.family: str = self.metadata["family"]
        self.feature_names: list[str] = list(self.metadata["feature_names"])
        self.params = SurrogateParams.from_dict(self.metadata.get("params", {}))
        self.n_members = int(self.metadata.get("n_members", self.params.n_members))
        self.has_beats = bool(self.metadata.get("beats_output", False))
        self.n_outputs = self.n_members + int(self.has_beats)
        interval = self.metadata.get("interval", {})
        self.interval_scale = float(interval.get("scale", 1.28))
        self._explainer: lgb.Booster | None = None
        self.compiled: CompiledTrees | None = None
        if self.booster.num_feature() != len(self.feature_names):
            raise SurrogateIntegrityError(
                f"model has {self.booster.num_feature()} features, metadata names "
                f"{len(self.feature_names)}"
            )

    @property
    def sha256(self) -> str:
        """sha256 of the model text."""
        return sha256_text(self.text)

    @property
    def kappa(self) -> float:
        """Pessimism of the ranking score."""
        return float(self.params.kappa)

    def compatible(self) -> bool:
        """Whether the current code builds the features this model was trained on."""
        return (
            self.metadata.get("features_version") == FEATURES_VERSION
            and feature_names(self.family) == self.feature_names
        )

    def predict_members(self, X: np.ndarray) -> np.ndarray:
        """Raw prediction of every member, ``(n, n_members)``."""
        return self.predict_outputs(X)[0]

    def predict_outputs(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Every member's raw prediction, and the beats-the-default logit (or None).

        One call computes both: to the compiled ``outputs`` slice when it is ready, else
        to LightGBM.
        """
        fast = self.compiled.predict("outputs", X) if self.compiled is not None else None
        raw = (
            fast
            if fast is not None
            else self.booster.predict(X, raw_score=True, num_threads=self.params.num_threads)
        )
        out = np.asarray(raw, dtype=np.float64).reshape(len(X), self.n_outputs)
        beats = out[:, self.n_members] if self.has_beats else None
        return out[:, : self.n_members], beats

    def predict(self, X: np.ndarray, *, kappa: float | None = None) -> Prediction:
        """Mean, spread, calibrated interval and pessimistic score per row."""
        return self.summarise(self.predict_members(X), kappa=kappa)

    def summarise(self, members: np.ndarray, *, kappa: float | None = None) -> Prediction:
        """Turn member predictions into a :class:`Prediction`."""
        mean = members.mean(axis=1)
        spread = members.std(axis=1) if members.shape[1] > 1 else np.zeros(len(members))
        half = self.interval_scale * spread
        k = self.kappa if kappa is None else kappa
        return Prediction(
            mean=mean,
            spread=spread,
            lower=mean - half,
            upper=mean + half,
            score=mean - k * spread,
        )

    def screen(self, X: np.ndarray, *, fraction: float = 1.0) -> np.ndarray:
        """A cheap first-pass score: the first member's prediction.

        Args:
            X: inputs.
            fraction: share of the member's boosting rounds to use (cheaper still; the
                first rounds carry most of the signal).
        """
        rounds = self._screen_rounds(fraction)
        if self.compiled is not None:
            fast = self.compiled.predict(f"screen-r{rounds}", X)
            if fast is not None:
                return fast[:, 0]
            # A fraction nobody asked for at load is compiled from its first use on.
            self.compiled.request(self._screen_slice(rounds))
        out = self._member0().predict(X, num_iteration=rounds, num_threads=self.params.num_threads)
        return np.asarray(out, dtype=np.float64)

    def _screen_rounds(self, fraction: float) -> int:
        return max(1, int(round(self.params.n_rounds * fraction)))

    def use_compiled(
        self, compiler: TreeCompiler, *, screen_fractions: Sequence[float] = (1.0,)
    ) -> CompiledTrees | None:
        """Predict with compiled trees once they are ready (compiled in the background).

        Queues the ``outputs`` slice, the screen of each of ``screen_fractions`` and the
        ``shap`` slice (for :meth:`contributions`) on the compiler's background thread
        (from its cache: milliseconds; compiled: seconds); predictions use LightGBM until
        each is ready. Call once, before serving.

        Args:
            compiler: the compiler and its cache.
            screen_fractions: the :meth:`screen` fractions to prepare.

        Returns:
            The compiled slices (``wait()`` blocks until they are ready or failed), or
            None when compiled trees are off or unavailable (tl2cgen or a C compiler
            missing): then nothing changes.
        """
        from hyperprior.training.compiled import TreeSlice

        trees = compiler.attach(self.sha256, len(self.feature_names))
        if trees is None:
            return None
        trees.request(
            TreeSlice(
                "outputs",
                text=lambda: self.text,
                reference=lambda X: np.asarray(
                    self.booster.predict(X, raw_score=True, num_threads=1), dtype=np.float64
                ),
                n_trees=self.booster.num_trees(),
            )
        )
        for fraction in screen_fractions:
            trees.request(self._screen_slice(self._screen_rounds(fraction)))
        trees.request(self._shap_slice())
        self.compiled = trees
        return trees

    def _screen_slice(self, rounds: int) -> TreeSlice:
        from hyperprior.training.compiled import TreeSlice

        def reference(X: np.ndarray) -> np.ndarray:
            out = self._member0().predict(X, num_iteration=rounds, num_threads=1)
            return np.asarray(out, dtype=np.float64)

        return TreeSlice(
            f"screen-r{rounds}",
            text=lambda: member_text(self.text, 0, self.n_outputs, rounds=rounds),
            reference=reference,
            n_trees=rounds,
        )

    def _shap_slice(self) -> TreeSlice:
        from hyperprior.training.compiled import TreeSlice

        def reference(X: np.ndarray) -> np.ndarray:
            out = self._member0().predict(X, pred_contrib=True, num_threads=1)
            return np.asarray(out, dtype=np.float64).reshape(len(X), -1)

        return TreeSlice(
            "shap",
            text=lambda: member_text(self.text, 0, self.n_outputs),
            reference=reference,
            n_trees=self.booster.num_trees() // self.n_outputs,
            kind="shap",
        )

    def _member0(self) -> lgb.Booster:
        if self._explainer is None:
            self._explainer = lgb.Booster(model_str=member_text(self.text, 0, self.n_outputs))
        return self._explainer

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Per-feature SHAP contributions (``pred_contrib``), ``(n, n_features)``.

        Computed on the first member only: TreeSHAP costs far more than prediction, and
        the members differ by resampling, not in what drives them. Once the compiled
        ``shap`` slice is ready, by its TreeSHAP in C (LightGBM's within 1e-9).
        """
        fast = self.compiled.predict("shap", X) if self.compiled is not None else None
        raw = (
            fast
            if fast is not None
            else self._member0().predict(X, pred_contrib=True, num_threads=self.params.num_threads)
        )
        return np.asarray(raw, dtype=np.float64).reshape(len(X), -1)[:, :-1]  # drop the bias


def _versions() -> dict[str, str]:
    import sklearn

    return {
        "lightgbm": lgb.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scikit-learn": sklearn.__version__,
        "python": platform.python_version(),
    }


def fit(
    ts: TrainingSet,
    params: SurrogateParams | None = None,
    *,
    cv: CVReport | None = None,
) -> Surrogate:
    """Train the ensemble on all of ``ts``.

    Args:
        ts: the training set of one family.
        params: the recipe (defaults: :class:`SurrogateParams`).
        cv: grouped-CV report of the same recipe on the same data, stored in the
            metadata and used to calibrate the interval.

    Returns:
        The fitted surrogate.
    """
    params = params or SurrogateParams.for_family(ts.family)
    members = _train_members(ts, params)
    beats = _train_beats(ts, params) if params.beats_model else None
    outputs = [*members, beats] if beats is not None else members
    text = combine_members([m.model_to_string() for m in outputs])
    metadata: dict[str, Any] = {
        "format": FORMAT,
        "family": ts.family,
        "features_version": FEATURES_VERSION,
        "feature_names": list(ts.feature_names),
        "params": params.to_dict(),
        "n_members": params.n_members,
        # The beats-the-default classifier is the output after the members.
        "beats_output": beats is not None,
        "normalisation": ts.normalisation,
        "objective": params.objective,
        "training": ts.summary(),
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
        "interval": {
            "level": params.interval_level,
            "scale": cv.interval_scale if cv is not None else 1.28,
        },
        "cv": cv.metrics if cv is not None else {},
        "sha256": sha256_text(text),
    }
    return Surrogate(text, metadata)


# ---------------------------------------------------------------------------------------
# Grouped cross-validation


@dataclass(frozen=True)
class CVReport:
    """Grouped-CV result of one recipe on one training set.

    Attributes:
        metrics: mean metrics over test datasets (see :func:`ranking_metrics`).
        per_group: one row per evaluated (dataset, metric) group.
        oof_mean: out-of-fold mean prediction per training row.
        oof_spread: out-of-fold spread per training row.
        interval_scale: ``c`` such that ``mean +- c * spread`` covers the requested
            share of out-of-fold targets.
        oof_members: out-of-fold prediction of every member, ``(n, n_members)`` (what
            :mod:`hyperprior.training.confidence` calibrates ``p_beats_default`` on).
        oof_beats: out-of-fold logit of the beats-the-default classifier per row
            (None when the recipe has none).
    """

    metrics: dict[str, Any]
    per_group: pd.DataFrame = field(repr=False)
    oof_mean: np.ndarray = field(repr=False)
    oof_spread: np.ndarray = field(repr=False)
    interval_scale: float = 1.28
    oof_members: np.ndarray | None = field(default=None, repr=False)
    oof_beats: np.ndarray | None = field(default=None, repr=False)


def ranking_metrics(
    ts: TrainingSet,
    mean: np.ndarray,
    score: np.ndarray,
    *,
    k: int = 5,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Within-dataset ranking quality of predictions on the full-fidelity runs of ``ts``.

    Args:
        ts: the evaluated rows (typically all rows, with out-of-fold predictions).
        mean: predicted quality per row (for Spearman).
        score: the ranking score per row (what picks: pessimistic for suggestions).
        k: cut-off of NDCG and of the best-of-k regret.

    Returns:
        Means over groups (``spearman``, ``ndcg_at_5``, ``regret_at_1``,
        ``regret_at_5``, ``regret_at_1_mean``, ``default_regret``, ``random_regret``,
        ``n_groups``) and the per-group table.
    """
    full = ts.fidelity >= 1.0 - 1e-9
    frame = pd.DataFrame(
        {
            "group": ts.group[full],
            "dataset": ts.dataset[full],
            "s": ts.oriented[full],
            "mean": mean[full],
            "score": score[full],
            "is_default": ts.is_default[full],
            "task": ts.task[full],
        }
    )
    g = frame.groupby("group", sort=True)
    best = g["s"].transform("max")
    worst = g["s"].transform("min")
    span = (best - worst).to_numpy()
    frame["n_ok"] = g["s"].transform("count")
    with np.errstate(divide="ignore", invalid="ignore"):
        regret = np.where(frame["s"].isna(), 1.0, (best - frame["s"]).to_numpy() / span)
        rel = np.where(frame["s"].isna(), 0.0, (frame["s"] - worst).to_numpy() / span)
    frame["regret"] = regret
    frame["rel"] = rel
    frame = frame[(frame["n_ok"] >= 2) & np.isfinite(span) & (span > 0)]
    if frame.empty:
        return {"n_groups": 0}, pd.DataFrame()

    def top(col: str, n: int) -> pd.DataFrame:
        # Stable order: ties resolved by the original row order.
        ordered = frame.sort_values(["group", col], ascending=[True, False], kind="mergesort")
        ordered = ordered.assign(pos=ordered.groupby("group").cumcount())
        return ordered[ordered["pos"] < n]

    out = pd.DataFrame(index=pd.Index(sorted(frame["group"].unique()), name="group"))
    out["dataset"] = frame.groupby("group")["dataset"].first()
    out["task"] = frame.groupby("group")["task"].first()
    out["n_runs"] = frame.groupby("group").size()
    top1 = top("score", 1).set_index("group")
    out["regret_at_1"] = top1["regret"]
    out["regret_at_5"] = top("score", k).groupby("group")["regret"].min()
    out["regret_at_1_mean"] = top("mean", 1).set_index("group")["regret"]
    out["random_regret"] = frame.groupby("group")["regret"].mean()

    discounts = 1.0 / np.log2(np.arange(k) + 2.0)
    picked = top("score", k)
    dcg = picked["rel"].to_numpy() * discounts[picked["pos"].to_numpy()]
    ideal = top("rel", k)
    idcg = ideal["rel"].to_numpy() * discounts[ideal["pos"].to_numpy()]
    out["ndcg_at_5"] = (
        pd.Series(dcg, index=picked["group"]).groupby(level=0).sum()
        / pd.Series(idcg, index=ideal["group"]).groupby(level=0).sum()
    )

    ok = frame[frame["s"].notna()].copy()
    ok["r_true"] = ok.groupby("group")["s"].rank()
    ok["r_pred"] = ok.groupby("group")["mean"].rank()
    corr = ok.groupby("group")[["r_true", "r_pred"]].corr().unstack()
    if ("r_true", "r_pred") in corr.columns:
        out["spearman"] = corr[("r_true", "r_pred")]

    is_default = frame["is_default"].to_numpy(dtype=bool)
    if is_default.any():
        out["default_regret"] = frame[is_default].groupby("group")["regret"].min()

    metrics: dict[str, Any] = {"n_groups": len(out), "n_datasets": int(out["dataset"].nunique())}
    for col in (
        "spearman",
        "ndcg_at_5",
        "regret_at_1",
        "regret_at_5",
        "regret_at_1_mean",
        "default_regret",
        "random_regret",
    ):
        if col in out.columns and out[col].notna().any():
            metrics[col] = round(float(out[col].mean()), 5)
    if "default_regret" in out.columns:
        both = out[["regret_at_1", "default_regret"]].dropna()
        if len(both):
            metrics["beats_default_share"] = round(
                float((both["regret_at_1"] < both["default_regret"]).mean()), 5
            )
            metrics["n_groups_with_default"] = len(both)
    return metrics, out.reset_index()


def cv_subset(ts: TrainingSet, params: SurrogateParams) -> TrainingSet:
    """The rows grouped CV runs on: all, or those of a fixed sample of the datasets.

    Beyond ``params.cv_max_datasets`` datasets the CV estimate is already precise, while
    its cost grows with the rows: a deterministic sample of that many datasets keeps a
    retrain on millions of runs within minutes. The model itself is fitted on all rows.
    """
    datasets = np.unique(ts.dataset)
    if len(datasets) <= params.cv_max_datasets:
        return ts
    rng = np.random.default_rng([params.seed, 2718])
    chosen = rng.choice(datasets, size=params.cv_max_datasets, replace=False)
    # pandas hashes; np.isin on object arrays compares every pair.
    return ts.subset(pd.Series(ts.dataset).isin(set(chosen)).to_numpy())


def grouped_folds(ts: TrainingSet, n_splits: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train/test row indices of a grouped K-fold split by dataset (deterministic).

    A dataset's fold is a hash of its name, so adding a dataset to the history moves no
    other dataset between folds and CV numbers stay comparable from one retrain to the
    next (``GroupKFold`` rebalances by size and reshuffled most folds when one dataset
    was added). When the hash leaves a fold empty (few datasets), the datasets are dealt
    round robin in hash order instead.
    """
    keys = [str(d) for d in np.unique(ts.dataset)]
    if len(keys) < 2:
        raise ValueError("grouped CV needs at least two datasets")
    k = min(n_splits, len(keys))
    digest = {d: zlib.crc32(str(ts.dataset_names.get(d, d)).encode()) for d in keys}
    fold_of = {d: digest[d] % k for d in keys}
    if len(set(fold_of.values())) < k:
        ordered = sorted(keys, key=lambda d: (digest[d], d))
        fold_of = {d: i % k for i, d in enumerate(ordered)}
    fold = pd.Series(ts.dataset).astype(str).map(fold_of).to_numpy()
    return [(np.flatnonzero(fold != f), np.flatnonzero(fold == f)) for f in range(k)]


def cross_validate(
    ts: TrainingSet,
    params: SurrogateParams | None = None,
    *,
    folds: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
) -> CVReport:
    """Grouped K-fold CV by dataset of the recipe ``params`` on ``ts``.

    Args:
        ts: the training set (without ``folds``: reduced by :func:`cv_subset`).
        params: the recipe.
        folds: explicit splits of ``ts`` (to compare recipes on identical folds).

    Returns:
        Mean metrics over test datasets, per-group metrics, out-of-fold predictions
        (of the rows evaluated) and the interval calibration.
    """
    params = params or SurrogateParams.for_family(ts.family)
    if folds is None:
        ts = cv_subset(ts, params)
        folds = grouped_folds(ts, params.cv_folds)
    oof = oof_member_predictions(ts, params, folds)
    mean = oof.mean(axis=1)
    spread = oof.std(axis=1) if params.n_members > 1 else np.zeros(len(ts))
    score = mean - params.kappa * spread
    metrics, per_group = ranking_metrics(ts, mean, score)
    scale = _interval_scale(ts.y, mean, spread, params.interval_level)
    metrics["interval_scale"] = round(scale, 4)
    metrics["folds"] = len(folds)
    if params.objective == "regression":
        metrics["rmse"] = round(float(np.sqrt(np.mean((mean - ts.y) ** 2))), 5)
    beats = oof_beats(ts, params, folds) if params.beats_model else None
    return CVReport(metrics, per_group, mean, spread, scale, oof, beats)


def oof_member_predictions(
    ts: TrainingSet, params: SurrogateParams, folds: Sequence[tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    """Out-of-fold raw prediction of every member, ``(n, n_members)`` (NaN outside folds)."""
    oof = np.full((len(ts), params.n_members), np.nan)
    for train_idx, test_idx in folds:
        members = _train_members(ts.subset(np.sort(train_idx)), params)
        X_test = ts.X[test_idx]
        oof[test_idx] = np.column_stack(
            [m.predict(X_test, raw_score=True, num_threads=params.num_threads) for m in members]
        )
    return oof


def _interval_scale(y: np.ndarray, mean: np.ndarray, spread: np.ndarray, level: float) -> float:
    ok = np.isfinite(mean) & (spread > 1e-12)
    if not ok.any():
        return 1.28
    ratio = np.abs(y[ok] - mean[ok]) / spread[ok]
    return float(np.quantile(ratio, level))


def train_and_evaluate(
    runs: pd.DataFrame,
    family: str,
    params: SurrogateParams | None = None,
) -> tuple[Surrogate, CVReport]:
    """Build the training set from ``runs``, cross-validate the recipe, fit on all.

    Args:
        runs: the run history (see :func:`hyperprior.training.features.build_training_set`).
        family: which family.
        params: the recipe.

    Returns:
        The surrogate fitted on all runs and the grouped-CV report it carries.
    """
    params = params or SurrogateParams.for_family(family)
    ts = build_training_set(runs, family, normalisation=params.normalisation)
    report = cross_validate(ts, params)
    return fit(ts, params, cv=report), report


# ---------------------------------------------------------------------------------------
# Save and load


def from_text(text: str, metadata: Mapping[str, Any], *, sha256: str | None = None) -> Surrogate:
    """Verify ``text`` against its sha256 and only then parse it.

    Args:
        text: the LightGBM model text.
        metadata: the JSON metadata stored with it.
        sha256: the expected digest (e.g. from the registry); defaults to the one in
            ``metadata``. When both are given they must agree.

    Returns:
        The surrogate.

    Raises:
        SurrogateIntegrityError: no digest, a digest that does not match the text, or
            metadata of an unknown format.
    """
    expected = {d for d in (sha256, metadata.get("sha256")) if d}
    if not expected:
        raise SurrogateIntegrityError("refusing a surrogate without a sha256")
    actual = sha256_text(text)
    if expected != {actual}:
        raise SurrogateIntegrityError(
            f"surrogate text sha256 {actual} does not match the expected {sorted(expected)}"
        )
    if metadata.get("format") != FORMAT:
        raise SurrogateIntegrityError(f"unknown surrogate format {metadata.get('format')!r}")
    return Surrogate(text, metadata)


def save(surrogate: Surrogate, directory: str | Path, name: str | None = None) -> Path:
    """Write ``NAME.txt`` (LightGBM text) and ``NAME.json`` (metadata with sha256).

    Returns:
        The path of the metadata file.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = name or surrogate.family
    (directory / f"{name}.txt").write_text(surrogate.text, encoding="utf-8")
    meta_path = directory / f"{name}.json"
    meta_path.write_text(json.dumps(surrogate.metadata, indent=2, sort_keys=True), encoding="utf-8")
    return meta_path


def load(directory: str | Path, name: str) -> Surrogate:
    """Read a surrogate written by :func:`save`, refusing one whose text was altered."""
    directory = Path(directory)
    metadata = json.loads((directory / f"{name}.json").read_text(encoding="utf-8"))
    text = (directory / f"{name}.txt").read_text(encoding="utf-8")
    return from_text(text, metadata)
