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
this package never touches a database session. :class:`SuggestionEngine` keeps one
policy per family and reloads it when the registry's active surrogate changes.

The package's modules, along the policy's seams: :mod:`.protocols` (what the policy
reads through and what a request and its answer look like), :mod:`.portfolio` (the best
configs per dataset and the nearest-neighbour index), :mod:`.candidates` (candidates as
unit-cube arrays, decoded lazily), :mod:`.policy` (:class:`SuggestionPolicy` and its
settings) and :mod:`.engine` (:class:`SuggestionEngine`). Callers import from here.
"""

from __future__ import annotations

from hyperprior.training.suggest.engine import SuggestionEngine, surrogate_from_record
from hyperprior.training.suggest.policy import PolicySettings, SuggestionPolicy
from hyperprior.training.suggest.portfolio import (
    Neighbor,
    Portfolio,
    PortfolioEntry,
    with_portfolio,
)
from hyperprior.training.suggest.protocols import (
    SOURCES,
    HistoryReader,
    Suggestion,
    SuggestionError,
    SuggestionRequest,
    SuggestionResult,
    SurrogateInfo,
    SurrogateRecord,
    SurrogateRegistry,
)
from hyperprior.vocabulary import TASKS

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
    "SurrogateRecord",
    "SurrogateRegistry",
    "surrogate_from_record",
    "with_portfolio",
]
