"""The methods of the quality benchmark: what each one chooses for a held-out dataset
(hyperprior zero-shot and refined, FLAML, the k-NN portfolio, random search and
Optuna's optimisers), from a surrogate and portfolio that never saw it."""

from __future__ import annotations

import contextlib
import math
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from benchmarks.quality_bench.history import _meta_of
from benchmarks.quality_bench.measure import Bench, Measurement, _now
from benchmarks.quality_bench.metrics import _sha, canonical, map_flaml
from benchmarks.quality_bench.settings import FLAML_ESTIMATORS, GRIDS, POINT_METHODS

# ---------------------------------------------------------------------------------------
# Leave-one-out context: the surrogate and portfolio that never saw the dataset


@dataclass
class HeldOut:
    """Everything the zero-shot methods know about one held-out dataset."""

    family: str
    dataset: str
    task: str
    meta: dict[str, float]
    policy: Any  # SuggestionPolicy
    portfolio: Any  # Portfolio
    n_runs: int
    n_datasets: int


def held_out(
    bench: Bench, family: str, dataset: str, *, corpus_fraction: float | None = None
) -> HeldOut:
    """Fit the surrogate on the history without ``dataset`` (the production recipe).

    Args:
        bench: The benchmark.
        family: The family.
        dataset: The held-out dataset.
        corpus_fraction: Keep only this share of the other datasets (seeded by the
            held-out dataset), for the corpus-size ablation.
    """
    import numpy as np

    from hyperprior.training.features import build_training_set
    from hyperprior.training.suggest import Portfolio, SuggestionPolicy
    from hyperprior.training.surrogate import SurrogateParams, fit

    frame = bench.history.frame
    rest = frame[(frame["family"] == family) & (frame["dataset_name"] != dataset)]
    if corpus_fraction is not None:
        names = sorted(rest["dataset_name"].unique())
        rng = np.random.default_rng(zlib.crc32(f"corpus|{family}|{dataset}".encode()))
        keep = rng.permutation(names)[: max(3, round(corpus_fraction * len(names)))]
        rest = rest[rest["dataset_name"].isin(set(keep))]
    params = SurrogateParams.for_family(family)
    # Grouped CV only calibrates the interval; the ranking score (mean - kappa *
    # spread) does not depend on it, so it is skipped here.
    surrogate = fit(build_training_set(rest, family, normalisation=params.normalisation), params)
    ok = rest[rest["status"] == "ok"]
    portfolio = Portfolio.from_frame(ok, family)
    policy = SuggestionPolicy(family, surrogate=surrogate, portfolio=portfolio)
    return HeldOut(
        family=family,
        dataset=dataset,
        task=bench.task(dataset),
        meta=_meta_of(bench.history, dataset),
        policy=policy,
        portfolio=portfolio,
        n_runs=int(len(rest)),
        n_datasets=int(rest["dataset_name"].nunique()),
    )


def _suggest(ho: HeldOut, n: int) -> list[Any]:
    from hyperprior.training.suggest import SuggestionRequest

    request = SuggestionRequest(ho.family, ho.task, ho.meta, n=n, seed=0, dataset_name=ho.dataset)
    return list(ho.policy.suggest(request).suggestions)


# ---------------------------------------------------------------------------------------
# Refinement (pluggable)


@dataclass(frozen=True)
class RefineContext:
    """What a refiner gets."""

    family: str
    dataset: str
    data: Any  # LoadedDataset
    candidates: list[dict[str, Any]]  # the surrogate's suggestions, best first
    budget_full_fits: float
    full_fit_seconds: float  # measured cost of a full fit (the default's or top-1's, the dearer)
    folds: int
    seed: int


@dataclass(frozen=True)
class RefineOutcome:
    """What a refiner found: the chosen config and every trial it ran."""

    config: dict[str, Any] | None
    score: float | None
    trials: list[dict[str, Any]]  # {config, fidelity, status, score, seconds}
    seconds: float
    complete: bool
    notes: list[str] = field(default_factory=list)


class Refiner(Protocol):
    """Verifies suggestions on the held-out data within a budget."""

    name: str

    def __call__(self, ctx: RefineContext) -> RefineOutcome:  # pragma: no cover - protocol
        """Run the refinement."""
        ...


class TrainingRefiner:
    """:func:`hyperprior.training.refine.refine` with the history's folds and seed, inline.

    Its budget is wall-clock seconds: the full-fit budget times the measured cost of
    one full fit on the dataset (of the library default or the zero-shot top-1,
    whichever is dearer).
    """

    name = "training.refine"

    def __call__(self, ctx: RefineContext) -> RefineOutcome:
        """Run :func:`hyperprior.training.refine.refine` on the held-out data."""
        from hyperprior.training.refine import RefineSettings, refine
        from hyperprior.training.trials import TrialData

        data = TrialData(X=ctx.data.X, y=ctx.data.y, task=ctx.data.task, name=ctx.dataset)
        budget = max(ctx.budget_full_fits * ctx.full_fit_seconds, 0.05)
        started = time.perf_counter()
        result = refine(
            data,
            ctx.family,
            ctx.candidates,
            budget_seconds=budget,
            settings=RefineSettings(folds=ctx.folds),
            seed=ctx.seed,
            refinement_id=f"bench|{ctx.family}|{ctx.dataset}",
        )
        trials = [
            {
                "config": t.config,
                "fidelity": t.fidelity,
                "status": t.status,
                "score": t.score,
                "seconds": round(t.seconds, 3),
                "origin": t.origin,
            }
            for t in result.trials
        ]
        return RefineOutcome(
            config=result.config,
            score=result.score,
            trials=trials,
            seconds=time.perf_counter() - started,
            complete=result.complete,
            notes=[*result.notes, f"budget {budget:.2f} s"],
        )


def default_refiner() -> tuple[Refiner | None, str | None]:
    """The refiner of ``hyperprior.training.refine``, or why there is none."""
    try:
        import hyperprior.training.refine  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
        return None, f"hyperprior.training.refine is not available ({type(exc).__name__}: {exc})"
    return TrainingRefiner(), None


# ---------------------------------------------------------------------------------------
# Methods


def _base_record(family: str, dataset: str, task: str, method: str) -> dict[str, Any]:
    from hyperprior.training.families import primary_metric

    return {
        "family": family,
        "dataset": dataset,
        "task": task,
        "metric": primary_metric(task),
        "method": method,
        "status": "ok",
        "created_at": _now(),
    }


def _pick(bench: Bench, family: str, dataset: str, configs: Sequence[Mapping[str, Any]]) -> list:
    return [bench.measure(family, dataset, c) for c in configs]


def _candidates_json(configs: Sequence[Mapping[str, Any]], ms: Sequence[Measurement]) -> list:
    return [
        {"config": dict(c), "measurement": m.key, "score": m.score, "status": m.status}
        for c, m in zip(configs, ms, strict=True)
    ]


def run_zero_shot(bench: Bench, family: str, dataset: str, methods: Sequence[str]) -> None:
    """Default, hyperprior top-1 / best-of-n, FLAML, k-NN portfolio on one dataset."""
    task = bench.task(dataset)
    s = bench.settings
    inputs = _sha(f"{bench.history.fingerprint}|{s.top_n}|{s.knn}|{s.max_estimators}")
    todo = [
        m
        for m in methods
        if m in POINT_METHODS
        and m != "hyperprior_refined"
        and not _reusable(bench.record(family, dataset, m), inputs)
    ]
    if not todo:
        return
    from hyperprior.training.spaces import get_space

    space = get_space(family)
    if "default" in todo:
        rec = _base_record(family, dataset, task, "default")
        config = space.default(task)
        m = bench.measure(family, dataset, config, fresh=True)
        rec.update(inputs=inputs, config=config, measurement=m.key, score=m.score)
        rec["status"] = "ok" if m.ok else "failed"
        entry = bench.doc["measurements"][m.key]
        if "history_score" in entry and entry["history_score"] is not None and m.ok:
            rec["history_check"] = float(m.score) - float(entry["history_score"])  # type: ignore[arg-type]
        bench.put(rec)
    ho: HeldOut | None = None
    if any(m.startswith(("hyperprior", "knn")) for m in todo):
        ho = held_out(bench, family, dataset)
    if ho is not None and any(m.startswith("hyperprior") for m in todo):
        suggestions = _suggest(ho, s.top_n)
        configs = [bench.prepare(family, sg.config, task) for sg in suggestions]
        ms = _pick(bench, family, dataset, configs[:1])
        for method in ("hyperprior_top1", "hyperprior_best_of_5"):
            if method not in todo:
                continue
            if method == "hyperprior_best_of_5":
                ms = _pick(bench, family, dataset, configs)
            chosen = ms[:1] if method == "hyperprior_top1" else ms
            best = _best(chosen)
            rec = _base_record(family, dataset, task, method)
            rec.update(
                inputs=inputs,
                trained_on={"runs": ho.n_runs, "datasets": ho.n_datasets},
                candidates=_candidates_json(configs[: len(chosen)], chosen),
                sources=[sg.source for sg in suggestions[: len(chosen)]],
                score=best.score if best else None,
                measurement=best.key if best else None,
                cost_full_fits=len(chosen),
                status="ok" if best is not None else "failed",
            )
            bench.put(rec)
    if ho is not None and any(m.startswith("knn") for m in todo):
        neighbors = ho.portfolio.nearest(ho.meta, task, s.knn)
        entries = ho.portfolio.entries(neighbors, 1)
        configs = [
            bench.prepare(family, _portfolio_config(space, e.config, task), task) for e in entries
        ]
        for method in ("knn_portfolio_top1", "knn_portfolio_best_of_5"):
            if method not in todo:
                continue
            chosen_configs = configs[:1] if method == "knn_portfolio_top1" else configs
            ms = _pick(bench, family, dataset, chosen_configs)
            best = _best(ms)
            rec = _base_record(family, dataset, task, method)
            rec.update(
                inputs=inputs,
                neighbors=[{"dataset": nb.name, "distance": nb.distance} for nb in neighbors],
                candidates=_candidates_json(chosen_configs, ms),
                score=best.score if best else None,
                measurement=best.key if best else None,
                cost_full_fits=len(ms),
                status="ok" if best is not None else "failed",
            )
            bench.put(rec)
    for method in ("flaml", "flaml_native"):
        if method in todo:
            bench.put(_run_flaml(bench, family, dataset, task, method, inputs))


def _portfolio_config(space: Any, config: Mapping[str, Any], task: str) -> dict[str, Any]:
    # A neighbour of another task may carry parameters this task lacks.
    known = {p.name for p in space.params_for(task)}
    return space.validate({k: v for k, v in config.items() if k in known}, task)


def _best(ms: Sequence[Measurement]) -> Measurement | None:
    ok = [m for m in ms if m.ok]
    return max(ok, key=lambda m: float(m.score)) if ok else None  # type: ignore[arg-type]


def _reusable(rec: Mapping[str, Any] | None, inputs: str) -> bool:
    return rec is not None and rec.get("inputs") == inputs and rec["status"] in ("ok", "failed")


def _run_flaml(
    bench: Bench, family: str, dataset: str, task: str, method: str, inputs: str
) -> dict[str, Any]:
    rec = _base_record(family, dataset, task, method)
    rec["inputs"] = inputs
    estimator = FLAML_ESTIMATORS.get(family)
    if estimator is None:
        rec.update(status="unavailable", note=f"FLAML has no zero-shot {family}")
        return rec
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from flaml.default import suggest_hyperparams
    except Exception as exc:  # noqa: BLE001 - any import failure means "not installed"
        rec.update(
            status="unavailable",
            note=f"flaml is not installed ({type(exc).__name__}: {exc}); pip install -e '.[bench]'",
        )
        return rec
    data = bench.data(dataset)
    flaml_task = "regression" if task == "regression" else "classification"
    try:
        with _quiet():
            params, estimator_class = suggest_hyperparams(flaml_task, data.X, data.y, estimator)
    except Exception as exc:  # noqa: BLE001 - FLAML's failure is this method's result
        rec.update(status="failed", note=f"suggest_hyperparams raised {type(exc).__name__}: {exc}")
        return rec
    params = dict(params or {})
    config, extras, notes = map_flaml(family, params, task, int(data.X.shape[1]))
    rec.update(
        flaml_params=params,
        flaml_estimator=getattr(estimator_class, "__name__", str(estimator_class)),
        config=config,
        unmapped=extras,
        mapping_notes=notes or ["every argument mapped exactly"],
    )
    if method == "flaml_native":
        m = bench.measure(family, dataset, config, extras=extras)
    else:
        m = bench.measure(family, dataset, config)
    rec.update(measurement=m.key, score=m.score, status="ok" if m.ok else "failed")
    return rec


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    import logging
    import warnings

    flaml_log = logging.getLogger("flaml")
    level = flaml_log.level
    flaml_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        flaml_log.setLevel(level)


def refine_method(budget: float | None) -> str:
    """The method name of a refinement budget (``None``: the main one)."""
    return "hyperprior_refined" if budget is None else f"hyperprior_refined_b{budget:g}"


def run_refine(
    bench: Bench,
    family: str,
    dataset: str,
    refiner: Refiner | None,
    why: str | None,
    *,
    extra_budget: float | None = None,
) -> None:
    """A refinement on one dataset (reused as recorded when its inputs match).

    Args:
        bench: The benchmark.
        family: The family.
        dataset: The held-out dataset.
        refiner: The refiner, or ``None`` when there is none (``why`` says why).
        why: Why there is no refiner.
        extra_budget: One of ``extra_refine_budgets`` (default: ``refine_budget``).
    """
    s = bench.settings
    task = bench.task(dataset)
    budget = s.refine_budget if extra_budget is None else extra_budget
    method = refine_method(extra_budget)
    inputs = _sha(
        f"{bench.history.fingerprint}|{budget}|{s.refine_candidates}|{s.max_estimators}"
        f"|{getattr(refiner, 'name', None)}|full-fit=max(default,top1)"
    )
    if _reusable(bench.record(family, dataset, method), inputs):
        return
    rec = _base_record(family, dataset, task, method)
    rec["inputs"] = inputs
    if refiner is None:
        rec.update(status="unavailable", note=why)
        bench.put(rec)
        return
    from hyperprior.training.spaces import get_space

    default = bench.measure(family, dataset, get_space(family).default(task))
    ho = held_out(bench, family, dataset)
    configs = [bench.prepare(family, sg.config, task) for sg in _suggest(ho, s.refine_candidates)]
    # One full fit is the dearer of the two configs a user would otherwise train: the
    # default and the zero-shot pick. Timed against the default alone, a pick with more
    # trees than the default could not even be verified within a few "full fits".
    top1 = bench.measure(family, dataset, configs[0]) if configs else None
    full_fit = max(default.seconds, top1.seconds if top1 is not None else 0.0, 1e-3)
    ctx = RefineContext(
        family=family,
        dataset=dataset,
        data=bench.data(dataset),
        candidates=configs,
        budget_full_fits=budget,
        full_fit_seconds=full_fit,
        folds=s.folds,
        seed=s.cv_seed,
    )
    if bench._bar is not None:
        bench._bar.set_postfix_str(f"{family} {dataset.split('/')[-1]}: refining", refresh=True)
    outcome = refiner(ctx)
    # Full-fidelity trials ran with the benchmark's protocol: they are measurements.
    for t in outcome.trials:
        if t["fidelity"] >= 1.0 - 1e-9 and t["status"] in ("ok", "failed"):
            bench.add_measured(
                family,
                dataset,
                t["config"],
                status=t["status"],
                score=t["score"],
                seconds=t["seconds"],
                source="refine",
            )
    nominal = sum(t["fidelity"] for t in outcome.trials if t["status"] in ("ok", "failed"))
    measured = (
        bench.add_measured(
            family,
            dataset,
            outcome.config,
            status="ok",
            score=outcome.score,
            seconds=0.0,
            source="refine",
        )
        if outcome.config is not None and outcome.score is not None
        else None
    )
    rec.update(
        refiner=refiner.name,
        config=outcome.config,
        score=outcome.score,
        measurement=measured.key if measured else None,
        status="ok" if outcome.score is not None else "failed",
        budget_full_fits=budget,
        full_fit_seconds=round(full_fit, 3),
        used_full_fits_rows=round(nominal, 3),
        used_full_fits_seconds=round(sum(t["seconds"] for t in outcome.trials) / full_fit, 3),
        seconds=round(outcome.seconds, 3),
        complete=outcome.complete,
        n_trials=len(outcome.trials),
        trials=outcome.trials,
        notes=outcome.notes,
        candidates=configs,
    )
    bench.put(rec)


def corpus_method(fraction: float) -> str:
    """The method name of a corpus-size ablation."""
    return f"hyperprior_top1_corpus{round(fraction * 100)}"


def run_corpus(bench: Bench, family: str, dataset: str, fraction: float) -> None:
    """hyperprior's top-1 with a surrogate fitted on a share of the training datasets."""
    s = bench.settings
    task = bench.task(dataset)
    method = corpus_method(fraction)
    inputs = _sha(f"{bench.history.fingerprint}|corpus|{fraction}|{s.max_estimators}")
    if _reusable(bench.record(family, dataset, method), inputs):
        return
    ho = held_out(bench, family, dataset, corpus_fraction=fraction)
    suggestion = _suggest(ho, 1)[0]
    config = bench.prepare(family, suggestion.config, task)
    m = bench.measure(family, dataset, config)
    rec = _base_record(family, dataset, task, method)
    rec.update(
        inputs=inputs,
        trained_on={"runs": ho.n_runs, "datasets": ho.n_datasets, "fraction": fraction},
        config=config,
        source=suggestion.source,
        measurement=m.key,
        score=m.score,
        status="ok" if m.ok else "failed",
    )
    bench.put(rec)


def run_random(bench: Bench, family: str, dataset: str) -> None:
    """The random-search pool of one dataset: history's Sobol runs, topped up."""
    from hyperprior.training.spaces import get_space

    s = bench.settings
    task = bench.task(dataset)
    space = get_space(family)
    default_text = canonical(space.default(task))
    frame = bench.history.frame
    mine = frame[
        (frame["family"] == family)
        & (frame["dataset_name"] == dataset)
        & (frame["fidelity"] >= 1.0 - 1e-9)
    ]
    if "source" in mine.columns:
        # Only the bootstrap's runs are random draws; other sources chose their configs.
        mine = mine[mine["source"] == "bootstrap"]
    pool: list[Measurement] = []
    seen = {default_text}
    for config in mine["config"]:
        cfg = bench.prepare(family, config, task)
        text = canonical(cfg)
        if text in seen:
            continue
        seen.add(text)
        pool.append(bench.measure(family, dataset, cfg))
        if len(pool) >= s.random_pool:
            break
    n_history = len(pool)
    need = s.random_pool - len(pool)
    if need > 0:
        seed = zlib.crc32(f"bench-random|{dataset}|{family}".encode()) % (2**31)
        for cfg in space.sample(need + 4, seed, task):
            cfg = bench.prepare(family, cfg, task)
            text = canonical(cfg)
            if text in seen:
                continue
            seen.add(text)
            pool.append(bench.measure(family, dataset, cfg, source="random"))
            if len(pool) >= s.random_pool:
                break
    rec = _base_record(family, dataset, task, "random_search")
    rec.update(
        pool=[{"measurement": m.key, "score": m.score, "status": m.status} for m in pool],
        pool_from_history=n_history,
        pool_measured=len(pool) - n_history,
        ks=list(s.random_ks),
    )
    bench.put(rec)


# ---------------------------------------------------------------------------------------
# Optuna search


def _optuna_sampler(name: str, seed: int, family: str, task: str) -> Any:
    import optuna

    if name == "grid":
        return optuna.samplers.GridSampler(_grid_space(family, task), seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    raise ValueError(f"unknown optimiser {name!r}")


def _grid_space(family: str, task: str) -> dict[str, list[Any]]:
    from hyperprior.training.spaces import get_space

    space = get_space(family)
    out: dict[str, list[Any]] = {}
    for name, values in GRIDS[family].items():
        default = space.param(name).default_for(task)
        out[name] = [default if v == "default" else v for v in values]
    return out


def _suggest_config(trial: Any, family: str, task: str, grid: Mapping[str, Any] | None) -> dict:
    """Define-by-run over the family's space (conditions respected); grid: its params."""
    from hyperprior.training.spaces import Categorical, Float, Int, get_space

    space = get_space(family)
    if grid is not None:
        config = {name: trial.suggest_categorical(name, list(vals)) for name, vals in grid.items()}
        return space.validate(config, task)
    config: dict[str, Any] = {}
    for p in space.params_for(task):
        if p.condition is not None:
            parent, allowed = p.condition
            if parent not in config or config[parent] not in allowed:
                continue
        if isinstance(p, Categorical):
            config[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        elif isinstance(p, Int):
            config[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log)
        elif isinstance(p, Float):
            config[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log)
    return space.validate(config, task)


def run_search(
    bench: Bench,
    family: str,
    dataset: str,
    optimizer: str,
    seeds: Sequence[int] | None = None,
) -> None:
    """One optimiser, ``max(search_ks)`` trials per seed; resumes recorded trials.

    Args:
        bench: The benchmark.
        family: The family.
        dataset: The held-out dataset.
        optimizer: ``grid``, ``gp``, ``tpe``, ``nsga2`` or ``cmaes``.
        seeds: Seeds to run now (default: all of the settings'); others stay as recorded.
    """
    import optuna
    from optuna.distributions import distribution_to_json, json_to_distribution
    from optuna.trial import TrialState, create_trial

    s = bench.settings
    task = bench.task(dataset)
    n_trials = max(s.search_ks)
    old = bench.record(family, dataset, optimizer) or {}
    inputs = _sha(f"{optimizer}|{n_trials}|{s.max_estimators}|{bench.settings.cv_seed}")
    runs: dict[str, list[dict[str, Any]]] = (
        dict(old.get("runs", {})) if old.get("inputs") == inputs else {}
    )
    # Each parameter's distribution is the same in every trial: kept once per record.
    distributions: dict[str, str] = (
        dict(old.get("distributions", {})) if old.get("inputs") == inputs else {}
    )
    rec = _base_record(family, dataset, task, optimizer)
    rec.update(inputs=inputs, ks=list(s.search_ks), runs=runs, distributions=distributions)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    grid = _grid_space(family, task) if optimizer == "grid" else None
    try:
        for seed in s.search_seeds if seeds is None else seeds:
            trials = list(runs.get(str(seed), []))
            if len(trials) >= n_trials or (grid is not None and len(trials) >= _grid_size(grid)):
                continue
            sampler = _optuna_sampler(optimizer, seed, family, task)
            study = optuna.create_study(direction="maximize", sampler=sampler)
            for t in trials:
                known = t.get("distributions") or {k: distributions[k] for k in t["params"]}
                dists = {k: json_to_distribution(v) for k, v in known.items()}
                ok = t["score"] is not None
                study.add_trial(
                    create_trial(
                        params=t["params"],
                        distributions=dists,
                        value=t["score"] if ok else None,
                        state=TrialState.COMPLETE if ok else TrialState.FAIL,
                    )
                )

            def objective(trial: Any, _trials: list = trials, _seed: int = seed) -> float:
                config = _suggest_config(trial, family, task, grid)
                m = bench.measure(family, dataset, config, source=optimizer)
                for k, v in trial.distributions.items():
                    distributions.setdefault(k, distribution_to_json(v))
                _trials.append(
                    {"params": dict(trial.params), "measurement": m.key, "score": m.score}
                )
                runs[str(_seed)] = _trials
                bench.save(force=False)
                return float(m.score) if m.ok else float("nan")

            with _quiet():
                study.optimize(objective, n_trials=n_trials - len(trials))
            runs[str(seed)] = trials
            bench.put(rec)
    except ImportError as exc:  # GPSampler needs torch
        rec.update(status="unavailable", note=f"{type(exc).__name__}: {exc}")
    bench.put(rec)


def _grid_size(grid: Mapping[str, Sequence[Any]]) -> int:
    return math.prod(len(v) for v in grid.values())
