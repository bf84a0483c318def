"""What the surrogate has learnt: partial dependence and importance of hyperparameters.

For a dataset described by its meta-features, :func:`partial_dependence` answers "how
much does the learning rate matter for a dataset like this, and where is it best?"
from the family's surrogate, without training anything:

1. **Background.** A scrambled Sobol sample of the family's box (``n_background``
   configs): the other hyperparameters vary over their whole range, so a curve is the
   effect of one parameter averaged over everything else (Friedman's partial
   dependence), not its effect at one arbitrary setting of the rest.
2. **Grid.** Each parameter that exists for the task is set, in every background
   config, to each value of a grid (``grid`` points evenly spaced in the unit cube,
   so on a log scale for log-scaled parameters; every choice of a categorical). A
   conditional parameter also switches its parent on (``bootstrap=True`` for
   ``max_samples``); a parent's children then take their library defaults.
3. **Predict.** Every configured row goes through :func:`hyperprior.training.features.design_matrix`
   at fidelity 1 (the path suggestions take) and every member of the ensemble. The
   curve is the mean over the background of the members' mean; its band is plus or
   minus one standard deviation of the members' curves (how sure the ensemble is of
   the *curve*, not of a single run).
4. **Importance.** The standard deviation of a parameter's curve over its grid
   (Greenwell et al., 2018, "A simple and effective model-based variable importance
   measure"), normalised to shares that sum to one, alongside the range of the curve
   (best minus worst setting, in normalised quality: the share of the configs tried on
   similar datasets that the choice of this parameter moves you past).

Quality is the surrogate's target: the normalised quality of a config among those
tried on similar datasets (see :mod:`hyperprior.training.features`), so 0.8 means "better than
about 80% of the configs tried on datasets like this".
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from hyperprior.training.features import core_metafeatures, design_matrix, encode_configs
from hyperprior.training.spaces import Categorical, Int, Param, get_space
from hyperprior.training.surrogate import Surrogate

__all__ = [
    "Insights",
    "InsightsError",
    "ParamEffect",
    "partial_dependence",
    "prepare_meta",
]

#: Grid points per numeric parameter, and background configs, by default.
DEFAULT_GRID = 16
DEFAULT_BACKGROUND = 48
_MAX_GRID = 64
_MAX_BACKGROUND = 512
_CACHE_SIZE = 64


class InsightsError(ValueError):
    """A request that cannot be answered (HTTP 422).

    Attributes:
        field: Which part of the request is wrong (``"meta_features"``, ``"task"``...).
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class ParamEffect:
    """The partial dependence of predicted quality on one hyperparameter.

    Attributes:
        name: The estimator keyword argument.
        kind: ``float``, ``int`` or ``categorical``.
        log: Whether the parameter lives on a log scale (plot it so).
        values: The grid, in order (JSON values: numbers, strings, booleans, null).
        mean: Predicted normalised quality at each grid value, averaged over the
            background configs and the ensemble's members.
        lower: ``mean`` minus one standard deviation of the members' curves.
        upper: ``mean`` plus one standard deviation of the members' curves.
        importance: Share of the total importance (all parameters sum to 1).
        spread: Standard deviation of ``mean`` over the grid (the raw importance).
        range: ``max(mean) - min(mean)``.
        best: The grid value with the highest ``mean``.
        default: The library default for the task (None when it is ``None``).
    """

    name: str
    kind: str
    log: bool
    values: list[Any]
    mean: list[float]
    lower: list[float]
    upper: list[float]
    importance: float
    spread: float
    range: float
    best: Any
    default: Any


@dataclass(frozen=True)
class Insights:
    """Partial dependence and importances for one family on one described dataset.

    Attributes:
        family: The model family.
        task: The task.
        params: One effect per parameter of the task, most important first.
        grid: Grid points per numeric parameter.
        n_background: Background configs averaged over.
    """

    family: str
    task: str
    params: list[ParamEffect]
    grid: int
    n_background: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)


def prepare_meta(task: str, meta: Mapping[str, Any]) -> dict[str, float]:
    """Validate meta-features and complete them as the suggestion policy does.

    Args:
        task: ``binary``, ``multiclass`` or ``regression``.
        meta: Name -> number (``None`` for unknown); ``n_rows`` and ``n_features``
            are required.

    Returns:
        Name -> float; unknown core meta-features are NaN (the surrogate routes them
        as missing).

    Raises:
        InsightsError: Naming every impossible value.
    """
    from hyperprior.training.metafeatures import validate_metafeatures

    clean = {k: v for k, v in meta.items() if v is not None}
    try:
        validated = validate_metafeatures(task, clean)
    except ValueError as exc:
        raise InsightsError(str(exc), field="meta_features") from None
    out = {k: float(v) for k, v in validated.items() if v is not None}
    for name in core_metafeatures():
        out.setdefault(name, math.nan)
    return out


def _grid(param: Param, points: int) -> list[Any]:
    if isinstance(param, Categorical):
        return list(param.choices)
    values = param.from_unit(np.linspace(0.0, 1.0, points))
    unique: list[Any] = []
    for value in values:  # ints repeat on narrow ranges (n_layers 1..4)
        if not unique or value != unique[-1]:
            unique.append(value)
    return unique


def _kind(param: Param) -> str:
    if isinstance(param, Categorical):
        return "categorical"
    return "int" if isinstance(param, Int) else "float"


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


_cache: OrderedDict[str, Insights] = OrderedDict()
_cache_lock = threading.Lock()


def partial_dependence(
    surrogate: Surrogate,
    task: str,
    meta: Mapping[str, Any],
    *,
    grid: int = DEFAULT_GRID,
    n_background: int = DEFAULT_BACKGROUND,
    seed: int = 0,
) -> Insights:
    """Partial dependence of predicted quality on each hyperparameter, and importances.

    See the module docstring for the method. Answers are cached per surrogate and
    request (a dashboard asks the same question often).

    Args:
        surrogate: The family's surrogate (``surrogate.family`` names the family).
        task: ``binary``, ``multiclass`` or ``regression``.
        meta: The dataset's meta-features (``n_rows`` and ``n_features`` at least).
        grid: Grid points per numeric parameter (2..64).
        n_background: Background configs (8..512): more is smoother and slower.
        seed: Seeds the background sample.

    Returns:
        The effects, most important first.

    Raises:
        InsightsError: An unknown task, impossible meta-features or bounds.
    """
    from hyperprior.training.spaces import TASKS

    if task not in TASKS:
        raise InsightsError(f"task must be one of {', '.join(TASKS)}, got {task!r}", field="task")
    if not 2 <= grid <= _MAX_GRID:
        raise InsightsError(f"grid must be between 2 and {_MAX_GRID}, got {grid}", field="grid")
    if not 8 <= n_background <= _MAX_BACKGROUND:
        raise InsightsError(
            f"n_background must be between 8 and {_MAX_BACKGROUND}, got {n_background}",
            field="n_background",
        )
    values = prepare_meta(task, meta)
    key = json.dumps(
        [
            surrogate.sha256,
            task,
            sorted((k, None if math.isnan(v) else v) for k, v in values.items()),
            grid,
            n_background,
            seed,
        ]
    )
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    result = _compute(surrogate, task, values, grid=grid, n_background=n_background, seed=seed)
    with _cache_lock:
        _cache[key] = result
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return result


def _compute(
    surrogate: Surrogate,
    task: str,
    meta: Mapping[str, float],
    *,
    grid: int,
    n_background: int,
    seed: int,
) -> Insights:
    family = surrogate.family
    space = get_space(family)
    background = space.sample(n_background, seed, task)
    params = space.params_for(task)
    parents = {p.condition[0] for p in params if p.condition is not None}

    configs: list[dict[str, Any]] = []
    spans: list[tuple[Param, list[Any], int]] = []  # param, grid values, first row
    for param in params:
        values = _grid(param, grid)
        kept: list[Any] = []
        start = len(configs)
        for value in values:
            rows = []
            for base in background:
                config = dict(base)
                config[param.name] = value
                if param.condition is not None or param.name in parents:
                    # Switch the parent on for a conditional parameter; a parent's
                    # children take their defaults (or drop out) through validate.
                    if param.condition is not None and not _condition_met(space, config, param):
                        _enable(space, config, param)
                    try:
                        config = space.validate(config, task)
                    except ValueError:
                        continue
                rows.append(config)
            if len(rows) == len(background):
                kept.append(value)
                configs.extend(rows)
        spans.append((param, kept, start))

    members = surrogate.predict_members(
        design_matrix(family, encode_configs(family, configs), meta, task=task, fidelity=1.0)
    )
    b = len(background)
    effects: list[ParamEffect] = []
    for param, values, start in spans:
        if not values:
            continue
        block = members[start : start + b * len(values)].reshape(len(values), b, -1)
        curves = block.mean(axis=1)  # (grid, members)
        mean = curves.mean(axis=1)
        sd = curves.std(axis=1) if curves.shape[1] > 1 else np.zeros(len(values))
        best = int(np.argmax(mean))
        try:
            default = param.default_for(task)
        except ValueError:
            default = None
        effects.append(
            ParamEffect(
                name=param.name,
                kind=_kind(param),
                log=bool(getattr(param, "log", False)),
                values=[_json_value(v) for v in values],
                mean=[round(float(v), 5) for v in mean],
                lower=[round(float(v), 5) for v in mean - sd],
                upper=[round(float(v), 5) for v in mean + sd],
                importance=0.0,
                spread=round(float(mean.std()), 6),
                range=round(float(mean.max() - mean.min()), 5),
                best=_json_value(values[best]),
                default=_json_value(default),
            )
        )
    total = sum(e.spread for e in effects)
    effects = [
        ParamEffect(**{**asdict(e), "importance": round(e.spread / total, 5) if total else 0.0})
        for e in effects
    ]
    effects.sort(key=lambda e: -e.spread)
    return Insights(family=family, task=task, params=effects, grid=grid, n_background=b)


def _condition_met(space: Any, config: Mapping[str, Any], param: Param) -> bool:
    assert param.condition is not None
    parent, allowed = param.condition
    if parent not in config:
        return False
    choices = space.param(parent)
    return bool(choices.index_of(config[parent]) in {choices.index_of(v) for v in allowed})


def _enable(space: Any, config: dict[str, Any], param: Param) -> None:
    """Set the ancestors of ``param`` so that it is active."""
    while param.condition is not None:
        parent, allowed = param.condition
        parent_param = space.param(parent)
        if parent not in config or not _condition_met(space, config, param):
            config[parent] = allowed[0]
        param = parent_param
