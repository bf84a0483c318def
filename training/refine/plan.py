"""How a refinement is planned: candidates, relative costs, rung fidelities, its executor."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

from hyperprior.training.executor import (
    InlineExecutor,
    TrialExecutor,
    WorkerFailure,
    make_executor,
)
from hyperprior.training.families import (
    UnknownFamilyError,
    get_family,
)
from hyperprior.training.refine.types import (
    _FULL,
    Candidate,
)
from hyperprior.training.spaces import get_space
from hyperprior.training.trials import (
    warm_up,
)
from hyperprior.vocabulary import canonical_json

_EPS = 1e-9


def candidates_from_suggestions(suggestions: Sequence[Any]) -> list[Candidate]:
    """Candidates from suggestions, best first.

    Accepts :class:`hyperprior.training.suggest.Suggestion` objects or their JSON form (dicts
    with ``config`` and optionally ``rank``, ``source``, ``predicted_quality``).
    """
    out = []
    for position, s in enumerate(suggestions, start=1):
        get = s.get if isinstance(s, Mapping) else functools.partial(getattr, s)
        source = get("source", None)
        config = s["config"] if isinstance(s, Mapping) else s.config
        out.append(
            Candidate(
                config=dict(config),
                origin="default" if source == "default" else "suggestion",
                rank=int(get("rank", None) or position),
                predicted_quality=get("predicted_quality", None),
            )
        )
    return out


def fill_candidates(
    candidates: Sequence[Candidate], family: str, task: str, n: int, seed: int = 0
) -> list[Candidate]:
    """Top ``candidates`` up to ``n`` with a scrambled Sobol sample of the space.

    Without a surrogate (cold start) the suggestions may be just the default; a
    refinement asked to compare ``n`` configs then explores instead. The samples
    (origin ``sample``) rank after every suggestion.
    """
    out = list(candidates)
    missing = n - len(out)
    if missing <= 0:
        return out
    last = max((c.rank for c in out if c.rank is not None), default=0)
    sampled = get_space(family).sample(missing, seed, task)
    out += [
        Candidate(config, origin="sample", rank=last + i) for i, config in enumerate(sampled, 1)
    ]
    return out


def relative_cost(family: str, config: Mapping[str, Any], default: Mapping[str, Any]) -> float:
    """A config's expected cost relative to the default's (a prior, before measuring).

    The family's own cost model (``Family.cost``: tree ensembles scale with their number
    of trees, the MLP with epochs times steps per epoch); a family without one, or an
    unknown family, is taken to cost the same as the default. Clipped to ``[0.1, 50]``.
    """
    try:
        rel = get_family(family).relative_cost(config, default)
    except UnknownFamilyError:
        rel = 1.0
    return min(50.0, max(0.1, rel))


def rung_fidelities(n_candidates: int, floor: float, eta: int = 3) -> tuple[float, ...]:
    """Fidelities of a successive-halving plan for ``n_candidates``, lowest first.

    As many rungs as halving can fill (``floor(log_eta(n))`` below the top) and as the
    lowest fidelity allows (not below ``floor``); always ends with 1.
    """
    if n_candidates < 1:
        return (_FULL,)
    by_n = int(math.floor(math.log(n_candidates) / math.log(eta) + _EPS))
    by_floor = int(math.floor(math.log(1.0 / floor) / math.log(eta) + _EPS)) if floor < 1 else 0
    s = max(0, min(by_n, by_floor))
    return tuple(float(eta ** (i - s)) for i in range(s + 1))


def _rung_sizes(n: int, rungs: int, eta: int) -> list[int]:
    sizes = [n]
    for _ in range(rungs - 1):
        sizes.append(max(1, math.ceil(sizes[-1] / eta)))
    return sizes


def _canonical(config: Mapping[str, Any]) -> str:
    return canonical_json(dict(config))


def make_refine_executor(
    family: str,
    *,
    workers: int | None = None,
    memory_limit_mb: float | None = None,
    dask_scheduler: str | None = None,
) -> TrialExecutor:
    """The executor a refinement runs its trials on.

    Local trials run in worker processes under the memory limit (a config that blows
    up kills its worker, not the caller), warmed up with the family's heavy imports;
    ``workers=0`` runs them inline (no isolation; tests and debugging). With a Dask
    scheduler address, trials go to the cluster.
    """
    if workers == 0 and not dask_scheduler:
        return InlineExecutor()
    return make_executor(
        workers=workers,
        dask_scheduler=dask_scheduler,
        memory_limit_mb=memory_limit_mb,
        on_failure=_pass_failure,
        warmup=functools.partial(warm_up, family),
        # Items carry their own limits; this only selects the isolated pool.
        time_limit_seconds=None if memory_limit_mb is not None else 3600.0,
    )


def _pass_failure(item: Any, failure: WorkerFailure) -> WorkerFailure:
    return failure
