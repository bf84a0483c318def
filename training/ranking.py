"""How suggestions are ranked, in words, for the API's answer, the SDK and the CLI.

One sentence kept next to no logic on purpose: :mod:`hyperprior.training.suggest` holds the rule
(``mean - kappa * spread``, the default's bar, the distance fallback); this says it to
users, who otherwise see a rank order that differs from ``predicted_quality``.
"""

from __future__ import annotations

__all__ = ["COLD_START_RANKING", "SURROGATE_RANKING", "ranking_note"]

SURROGATE_RANKING = (
    "by a pessimistic score, the surrogate's mean prediction minus a multiple of its "
    "spread (the ensemble's disagreement), so a config far from anything measured on "
    "similar datasets cannot win by extrapolation; predicted_quality is the mean, so it "
    "need not fall with rank. Configs unlikely to beat the library default "
    "(p_beats_default below the surrogate's bar) rank after it, and for a dataset farther "
    "from the history than validation reached the default comes first, unless it rarely "
    "matched the surrogate's held-out picks on the task."
)
COLD_START_RANKING = (
    "unscored (no surrogate yet): the nearest dataset's best config, the library default, "
    "then the best configs of the other nearest datasets, nearest first."
)


def ranking_note(has_surrogate: bool) -> str:
    """How an answer's suggestions were ranked."""
    return SURROGATE_RANKING if has_surrogate else COLD_START_RANKING
