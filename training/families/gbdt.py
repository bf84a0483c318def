"""Surrogate features shared by the gradient-boosted tree families (lightgbm, xgboost).

A tree splits on one column at a time, so ratios such as ``min_child / rows`` must be
given to the surrogate. The two libraries name their knobs differently (``num_leaves``
against a depth-``d`` tree's ``2**d`` leaves; ``min_child_samples`` against
``min_child_weight``), so each passes its names and how to get log leaves from them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hyperprior.training.features import Interaction, applied, safe_log


def gbdt_interactions(
    leaves: str, log_leaves: Callable[[np.ndarray], np.ndarray], min_child: str
) -> tuple[Interaction, ...]:
    """The interaction features of a GBDT family whose tree size is ``leaves`` (a
    parameter; ``log_leaves`` turns it into log leaves) and leaf minimum ``min_child``."""
    return (
        Interaction(
            "log_min_child_per_row",
            (min_child,),
            lambda v: applied(v, safe_log, min_child) - safe_log(v["rows"]),
        ),
        Interaction(
            "leaves_per_log_rows",
            (leaves,),
            lambda v: applied(v, log_leaves, leaves) / safe_log(np.maximum(v["rows"], 2.0)),
        ),
        Interaction(
            "log_leaves_per_feature",
            (leaves,),
            lambda v: applied(v, log_leaves, leaves) - safe_log(v["features"]),
        ),
        Interaction(
            "log_rows_per_leaf_over_min_child",
            (leaves, min_child),
            lambda v: (
                safe_log(v["rows"])
                - applied(v, log_leaves, leaves)
                - applied(v, safe_log, min_child)
            ),
        ),
        Interaction(
            "log_rounds_x_lr",
            ("n_estimators", "learning_rate"),
            lambda v: safe_log(v["n_estimators"] * v["learning_rate"]),
        ),
        Interaction(
            "log_features_per_tree",
            ("colsample_bytree",),
            lambda v: safe_log(v["colsample_bytree"] * v["features"]),
        ),
        Interaction(
            "log_rows_per_tree",
            ("subsample",),
            lambda v: safe_log(v["subsample"] * v["rows"]),
        ),
    )
