"""Small pure helpers of the quality benchmark (unit-tested): ids, normalised regret,
expected best of k, trials-equivalents, and FLAML's configs mapped onto a family's keys."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

# ---------------------------------------------------------------------------------------
# Small pure helpers (unit-tested)


def _sha(text: str, n: int = 16) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:n]


def canonical(config: Mapping[str, Any]) -> str:
    """Stable JSON of a config (the training code's own canonical form)."""
    from hyperprior.vocabulary import canonical_json

    return canonical_json(dict(config))


def regret(score: float | None, best: float, worst: float) -> float:
    """Normalised regret ``(best - score) / (best - worst)`` in [0, 1]; failed is 1."""
    if score is None or not math.isfinite(score):
        return 1.0
    span = best - worst
    if not span > 0:
        return 0.0
    return float(min(1.0, max(0.0, (best - score) / span)))


def expected_min_of_k(values: Sequence[float], k: int) -> float | None:
    """Expected minimum of ``k`` values drawn without replacement (exact).

    With the values sorted in decreasing order, the ``i``-th (1-based) is the minimum of
    the draw when it is drawn and the other ``k - 1`` come from the ``i - 1`` before it:
    probability ``C(i-1, k-1) / C(n, k)``.

    Returns:
        The expectation, or ``None`` when ``k`` exceeds the number of values.
    """
    n = len(values)
    if k < 1 or k > n:
        return None
    ordered = sorted(values, reverse=True)
    total = math.comb(n, k)
    return float(sum(v * math.comb(i - 1, k - 1) for i, v in enumerate(ordered, start=1)) / total)


def trials_equivalent(curve: Mapping[int, float], target: float) -> float | None:
    """Smallest ``k`` at which a mean-regret curve reaches ``target``.

    Linear interpolation in ``log2 k`` between measured points. ``None`` when the
    curve never reaches it; the first ``k`` when it starts at or below it.
    """
    points = sorted((int(k), float(v)) for k, v in curve.items() if v is not None)
    if not points:
        return None
    if points[0][1] <= target:
        return float(points[0][0])
    for (k0, v0), (k1, v1) in zip(points, points[1:], strict=False):
        if v1 <= target:
            if v0 == v1:
                return float(k1)
            t = (v0 - target) / (v0 - v1)
            return float(2 ** (math.log2(k0) + t * (math.log2(k1) - math.log2(k0))))
    return None


def _max_features_count(choice: Any, n_features: int) -> int:
    # scikit-learn's own rule for RandomForest max_features.
    if choice == "sqrt":
        return max(1, int(math.sqrt(n_features)))
    if choice == "log2":
        return max(1, int(math.log2(max(n_features, 1))))
    if choice is None:
        return n_features
    return max(1, int(float(choice) * n_features))


def map_flaml(
    family: str, params: Mapping[str, Any], task: str, n_features: int
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """FLAML's estimator arguments onto the family's config keys.

    Args:
        family: ``lightgbm`` or ``random_forest``.
        params: What ``suggest_hyperparams`` returned (``{}`` means the estimator's
            own defaults).
        task: The task.
        n_features: Feature columns of the data (``max_features`` is mapped by the
            number of features it selects).

    Returns:
        ``(config, extras, notes)``: a valid config of the family; FLAML's arguments the
        config cannot carry, which ``flaml_native`` sets on the estimator (tuned ones
        only: ``n_jobs``, ``verbose`` and ``random_state`` belong to the harness); and
        what the mapping changed or dropped, in words.
    """
    from hyperprior.training.spaces import get_space

    space = get_space(family)
    harness = {"n_jobs", "verbose", "random_state", "verbosity"}
    keys = {p.name for p in space.params_for(task)}
    config: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    notes: list[str] = []
    for name, value in params.items():
        if name in harness:
            continue
        if family == "random_forest" and name == "max_features" and value is not None:
            choices = space.param("max_features").choices  # type: ignore[attr-defined]
            wanted = _max_features_count(value, n_features)
            best = min(
                choices,
                key=lambda c: (
                    abs(_max_features_count(c, n_features) - wanted),
                    abs(_max_features_count(c, n_features) / max(n_features, 1) - float(value)),
                ),
            )
            config[name] = best
            if best != value:
                notes.append(
                    f"max_features={value:.4g} ({wanted} of {n_features} features) -> {best!r} "
                    f"({_max_features_count(best, n_features)} features)"
                )
                extras[name] = value
            continue
        if name in keys:
            config[name] = value
        else:
            extras[name] = value
            notes.append(f"{name}={value!r} has no key in the {family} space: dropped")
    if family == "lightgbm" and any(k in config for k in ("subsample",)):
        config.setdefault("subsample_freq", 1)
    return space.validate(config, task), extras, notes
