"""How runs of the large-data plan (few full-fidelity configs, all reduced) enter the models."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hyperprior.training.confidence import candidate_rows, evaluate_policies
from hyperprior.training.features import build_training_set
from hyperprior.training.suggest import Portfolio
from hyperprior.training.surrogate import SurrogateParams
from hyperprior.training.synthetic_history import SyntheticHistory

FAMILY = "lightgbm"
FULL = 4  # full-fidelity configs of the large dataset (the default first)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """12 datasets with 20 configs at fidelity 1 and 0.25; the first one as the large plan
    leaves it: only its first FULL configs at fidelity 1, every config at 0.25."""
    runs = SyntheticHistory(FAMILY, seed=3).frame(
        12, 20, n_reduced=20, failure_rate=0.0, tasks=("binary",)
    )
    first = runs["dataset_id"] == 0
    full = runs["fidelity"] == 1.0
    keep = ~(first & full) | (first & full).cumsum().le(FULL)
    return runs[keep].reset_index(drop=True)


def test_reduced_runs_are_ranked_with_the_full_ones_of_their_dataset(frame: pd.DataFrame) -> None:
    ts = build_training_set(frame, FAMILY)
    mine = ts.dataset == "0"
    # One (dataset, metric) group holds both fidelities: 4 full + 20 reduced runs, the
    # fidelity a column the surrogate can split on.
    assert mine.sum() == FULL + 20
    assert len(np.unique(ts.group[mine])) == 1
    assert (ts.fidelity[mine] == 1.0).sum() == FULL
    assert ts.y[mine].min() == 0.0
    assert ts.y[mine].max() == 1.0
    assert "fidelity" in ts.feature_names


def test_evaluation_picks_among_the_full_fidelity_configs_only(frame: pd.DataFrame) -> None:
    ts = build_training_set(frame, FAMILY)
    members = np.random.default_rng(0).normal(size=(len(ts), 3))
    rows = candidate_rows(ts, members, {})
    mine = rows[rows["dataset"] == "0"]
    assert len(mine) == FULL
    assert mine["is_default"].sum() == 1
    assert (ts.fidelity[mine["row"].to_numpy()] == 1.0).all()
    # Its portfolio entries are its best full-fidelity configs, never reduced-only ones.
    entries = Portfolio.from_frame(frame, FAMILY).to_json()["0"]["entries"]
    full = frame[(frame["dataset_id"] == 0) & (frame["fidelity"] == 1.0)]["config"]
    assert entries
    assert all(e["config"] in list(full) for e in entries)


def test_policy_evaluation_runs_with_a_large_plan_dataset(frame: pd.DataFrame) -> None:
    params = SurrogateParams(n_members=2, n_rounds=20, num_leaves=7, min_data_in_leaf=5)
    report = evaluate_policies(frame, FAMILY, n_folds=3, params=params)
    assert report is not None
    assert report["n_datasets"] == 12


def test_runs_that_are_not_candidates_are_trained_on_but_never_picked(
    frame: pd.DataFrame,
) -> None:
    params = SurrogateParams(n_members=2, n_rounds=20, num_leaves=7, min_data_in_leaf=5)
    full = frame[frame["fidelity"] == 1.0]
    # Adaptive-like runs: the best config of each dataset again, measured 0.05 higher.
    best = full.loc[full.groupby("dataset_id")["score"].idxmax()]
    extra = best.assign(id=best["id"].astype(str) + "-adaptive", score=best["score"] + 0.05)
    grown = pd.concat([frame, extra], ignore_index=True)

    def default_regrets(report: dict) -> dict[str, float]:
        return {r["dataset"]: r["default_regret"] for r in report["per_dataset"]}

    before = evaluate_policies(frame, FAMILY, n_folds=3, params=params)
    judged = evaluate_policies(
        grown, FAMILY, n_folds=3, params=params, not_candidates=set(extra["id"])
    )
    free = evaluate_policies(grown, FAMILY, n_folds=3, params=params)
    assert before is not None
    assert judged is not None
    assert free is not None
    # The same candidates and the same best as the history without them...
    assert default_regrets(judged) == default_regrets(before)
    assert max(r["regret"] for r in judged["per_dataset"]) <= 1.0
    # ...where, as candidates, the better runs would have moved every dataset's best.
    moved = [d for d, r in default_regrets(free).items() if r != default_regrets(before)[d]]
    assert len(moved) >= len(before["per_dataset"]) // 2
    # Without run ids there is nothing to exclude by: said, not silently ignored.
    with pytest.raises(ValueError, match="needs runs with ids"):
        evaluate_policies(
            frame.drop(columns="id"), FAMILY, n_folds=3, params=params, not_candidates={"x"}
        )
