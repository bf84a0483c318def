"""The shared vocabulary: canonical config JSON (which run ids rest on) and finite numbers."""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hyperprior.training.bootstrap import RUN_NAMESPACE, TrialSpec
from hyperprior.vocabulary import (
    TASKS,
    Task,
    canonical_json,
    finite_or_none,
    finite_values,
)

SEED_RUNS = Path(__file__).resolve().parents[1] / "training" / "seed" / "runs.parquet"


def test_every_shipped_seed_run_id_is_reproduced_by_canonical_json():
    # The bootstrap's run id is uuid5 of (dataset, family, canonical config JSON,
    # fidelity, folds, seed); the seed was made with 3 folds and seed 0. If the canonical
    # JSON moved by one character, a resumed bootstrap would measure everything again.
    runs = pd.read_parquet(SEED_RUNS, columns=["id", "dataset", "family", "config", "fidelity"])
    assert len(runs) > 20_000
    moved = []
    for row in runs.itertuples(index=False):
        key = "|".join(
            [
                row.dataset,
                row.family,
                canonical_json(json.loads(row.config)),
                f"{row.fidelity:.6g}",
                "3",
                "0",
            ]
        )
        if str(uuid.uuid5(RUN_NAMESPACE, key)) != row.id:
            moved.append(row.id)
    assert moved == []


def test_the_bootstraps_trial_ids_use_the_shared_canonical_json():
    config = {"num_leaves": np.int64(31), "learning_rate": np.float64(0.05)}
    spec = TrialSpec(
        dataset="d",
        task="binary",
        family="lightgbm",
        config_json=canonical_json(config),
        fidelity=1.0,
        folds=3,
        seed=0,
        time_limit_seconds=60.0,
        origin="sobol",
    )
    assert spec.config_json == '{"learning_rate":0.05,"num_leaves":31}'
    key = 'd|lightgbm|{"learning_rate":0.05,"num_leaves":31}|1|3|0'
    assert spec.run_id == uuid.uuid5(RUN_NAMESPACE, key)


def test_canonical_json_is_sorted_compact_and_refuses_what_json_cannot_hold():
    assert canonical_json({"b": 1, "a": [True, None, "é"]}) == '{"a":[true,null,"é"],"b":1}'
    assert canonical_json({"x": np.float32(0.5), "n": np.int8(3)}) == '{"n":3,"x":0.5}'
    with pytest.raises(ValueError, match="not JSON compliant"):
        canonical_json({"x": math.nan})
    with pytest.raises(TypeError, match="not JSON serialisable"):
        canonical_json({"x": object()})


def test_finite_or_none():
    assert finite_or_none(math.nan) is None
    assert finite_or_none(-math.inf) is None
    assert finite_or_none(np.float64("nan")) is None
    assert finite_or_none(1.5) == 1.5
    assert finite_or_none(3) == 3
    assert finite_or_none("text") == "text"
    assert finite_or_none(None) is None
    assert finite_values({"a": math.inf, "b": 2.0}) == {"a": None, "b": 2.0}


def test_tasks_are_the_literal():
    assert TASKS == ("binary", "multiclass", "regression")
    assert Task.__args__ == TASKS
