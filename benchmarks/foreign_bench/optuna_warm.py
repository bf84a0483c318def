"""Optional: Optuna's TPE warm-started with hyperprior's suggestions against a cold study."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.foreign_bench.asking import ask, request_body
from benchmarks.foreign_bench.collection import Loaded, load
from benchmarks.foreign_bench.measure import Bench
from benchmarks.foreign_bench.settings import OPTUNA_KS, OPTUNA_SEEDS
from benchmarks.quality_bench.metrics import (
    regret,
)

# ---------------------------------------------------------------------------------------
# Optional: Optuna TPE warm-started with hyperprior's suggestions vs a cold study


@dataclass(frozen=True)
class _Suggested:
    rank: int
    config: dict[str, Any]
    source: str | None
    predicted_quality: float | None


class LocalAsker:
    """What :func:`hyperprior.client.optuna_integration.enqueue_suggestions` needs of a client.

    ``suggest`` answers as the local-mode command does (:func:`ask` on
    :func:`request_body`), with the surrogates the benchmark evaluates.
    """

    def __init__(self, engine: Any, data: Loaded) -> None:
        self.engine = engine
        self.data = data

    def suggest(self, X: Any, y: Any, family: str, n: int = 5, **_: Any) -> list[_Suggested]:
        """The answer's suggestions (``X`` and ``y`` are the loaded data's)."""
        answer = ask(self.engine, request_body(self.data, family, n))
        return [
            _Suggested(s["rank"], s["config"], s.get("source"), s.get("predicted_quality"))
            for s in answer["suggestions"]
        ]


def optuna_distributions(family: str, task: str) -> dict[str, Any]:
    """The Optuna distributions of the family's space (those the benchmark's trials suggest)."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    from hyperprior.training.spaces import Categorical, Float, Int, get_space

    out: dict[str, Any] = {}
    for p in get_space(family).params_for(task):
        if isinstance(p, Categorical):
            out[p.name] = CategoricalDistribution(list(p.choices))
        elif isinstance(p, Int):
            out[p.name] = IntDistribution(int(p.low), int(p.high), log=p.log)
        elif isinstance(p, Float):
            out[p.name] = FloatDistribution(p.low, p.high, log=p.log)
    return out


def run_optuna(
    bench: Bench,
    engine: Any,
    datasets: Sequence[str],
    *,
    n_trials: int = max(OPTUNA_KS),
    seeds: Sequence[int] = OPTUNA_SEEDS,
    family: str = "lightgbm",
    progress: bool = True,
) -> None:
    """Cold and warm-started TPE studies per dataset and seed; every trial measured (cached).

    The warm study enqueues the top 5 with ``enqueue_suggestions``; its trials then run
    as a user's would. Best-so-far after each trial is kept in ``doc["optuna"]``.
    """
    import warnings

    import optuna

    from hyperprior.client.optuna_integration import enqueue_suggestions

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = bench.doc.setdefault("optuna", {})
    for dataset in datasets:
        data = load(dataset)
        space = optuna_distributions(family, data.task)
        for seed in seeds:
            for mode in ("cold", "warm"):
                rid = f"{family}|{dataset}|{seed}|{mode}|{bench.doc['surrogates'].get(family)}"
                if rid in store and len(store[rid]["best_so_far"]) >= n_trials:
                    continue
                sampler = optuna.samplers.TPESampler(seed=seed)
                study = optuna.create_study(direction="maximize", sampler=sampler)
                if mode == "warm":
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        enqueue_suggestions(
                            study,
                            LocalAsker(engine, data),
                            data.X,
                            data.y,
                            family,
                            n=5,
                            search_space=space,
                            task=data.task,
                        )
                scores: list[float | None] = []
                for _ in range(n_trials):
                    trial = study.ask(space)
                    config = dict(trial.params)
                    bench.measure_all([(dataset, family, config, f"optuna-{mode}")], progress=False)
                    score = bench.score(bench.key_of(dataset, family, config))
                    scores.append(score)
                    study.tell(trial, score if score is not None else float("-inf"))
                best, curve = None, []
                for x in scores:
                    if x is not None and (best is None or x > best):
                        best = x
                    curve.append(best)
                store[rid] = {
                    "dataset": dataset,
                    "family": family,
                    "seed": seed,
                    "mode": mode,
                    "surrogate_sha256": bench.doc["surrogates"].get(family),
                    "best_so_far": curve,
                }
                bench.save(force=False)
                if progress:
                    at = {k: curve[k - 1] for k in OPTUNA_KS if k <= len(curve)}
                    print(f"  optuna {dataset:26s} seed {seed} {mode}: {at}", flush=True)
    bench.save()


def optuna_summary(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Median (over datasets) of the mean (over seeds) best-so-far, warm and cold, in regret."""
    runs = [
        r
        for r in doc.get("optuna", {}).values()
        if r.get("surrogate_sha256") == doc.get("surrogates", {}).get(r["family"])
    ]
    if not runs:
        return {}
    bounds: dict[tuple[str, str], tuple[float, float]] = {}
    for m in doc["measurements"].values():
        if m["status"] == "ok":
            lo, hi = bounds.get((m["family"], m["dataset"]), (m["score"], m["score"]))
            bounds[(m["family"], m["dataset"])] = (min(lo, m["score"]), max(hi, m["score"]))
    out: dict[str, Any] = {}
    for k in OPTUNA_KS:
        per: dict[str, dict[str, list[float]]] = {}
        for r in runs:
            if len(r["best_so_far"]) < k:
                continue
            worst, best = bounds[(r["family"], r["dataset"])]
            reg = regret(r["best_so_far"][k - 1], best, worst)
            per.setdefault(r["dataset"], {}).setdefault(r["mode"], []).append(reg)
        pairs = [v for v in per.values() if "warm" in v and "cold" in v]
        if not pairs:
            continue
        warm = [float(np.mean(v["warm"])) for v in pairs]
        cold = [float(np.mean(v["cold"])) for v in pairs]
        out[str(k)] = {
            "datasets": len(pairs),
            "median_regret_warm": float(np.median(warm)),
            "median_regret_cold": float(np.median(cold)),
            "warm_at_least_as_good_share": float(
                np.mean([w <= c for w, c in zip(warm, cold, strict=True)])
            ),
        }
    return out
