"""Refinement: successive halving of suggested configs on the user's own data.

A suggestion from history is a prior; short verification runs on the user's data make
it an answer. :func:`refine` takes the surrogate's top-k configs (best first), adds the
family's library default as a control, and within a wall-clock budget:

1. **Anchors.** Measures the default and the top suggestion at full fidelity first.
   Together they are the least a refinement must deliver (the answer is never worse
   than the default on the user's own folds, and the zero-shot pick is verified), and
   their costs calibrate the plan.
2. **Plan.** Classic successive halving with ``eta = 3``: rung fidelities
   ``eta**-s, ..., 1/3, 1`` (fraction of training rows per fold, or of epochs for
   ``keras_mlp``), every candidate on the lowest rung, the best third (rounded up)
   promoted each time. ``s`` is fixed by the number of candidates and by a floor on the
   lowest fidelity (at least ``min_rung_rows`` training rows, or ``min_epoch_fraction``
   of the epochs), so for a seed the plan is deterministic. When the estimated cost
   of the plan does not fit the remaining budget, the lowest-ranked suggestions are
   dropped until it does.
3. **Rungs.** Trials are handed to the executor lazily, each only if its estimated cost
   fits the time left (minus a reserve for the full-fidelity rung); every trial's time
   limit is the smaller of the per-trial limit and the budget left. Costs are estimated
   from the candidate's own measured trials (affine in the fidelity), else from the
   default's cost scaled by the config's size (``n_estimators``, epochs...). Between
   rungs the remaining plan is re-estimated; if it no longer fits, the middle rungs are
   skipped and the best candidates go straight to full fidelity.
4. **Answer.** The best config among those measured at full fidelity (ties go to the
   default), its score, the default's score, and every trial. All candidates share
   the same folds and row subsamples (one seed), so their scores are paired.

Every measured trial (ok or failed) is handed to ``record`` as a ``verification`` run
with the dataset's meta-features, so the next retrain learns from it. A trial cut short
by the *budget* measured nothing about the config and is reported but not recorded; a
trial that exceeded the per-trial time limit or the memory limit is a failed run.

Results are deterministic for a seed, except where timing decides: which trials the
budget cuts off.
"""

from __future__ import annotations

from hyperprior.training.refine.job import (
    REFINE_NAMESPACE,
    refine,
)
from hyperprior.training.refine.plan import (
    candidates_from_suggestions,
    fill_candidates,
    make_refine_executor,
    relative_cost,
    rung_fidelities,
)
from hyperprior.training.refine.types import (
    Candidate,
    RefineProgress,
    RefineResult,
    RefineSettings,
    TrialRecord,
)

__all__ = [
    "REFINE_NAMESPACE",
    "Candidate",
    "RefineProgress",
    "RefineResult",
    "RefineSettings",
    "TrialRecord",
    "candidates_from_suggestions",
    "fill_candidates",
    "make_refine_executor",
    "refine",
    "relative_cost",
    "rung_fidelities",
]
