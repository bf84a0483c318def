"""The leave-one-group-out policy benchmark and the coverage report run on the shipped seed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import coverage, policy_cv
from hyperprior.training.seed import SEED_DIR


def test_policy_cv_reports_the_served_policy_on_held_out_groups(tmp_path: Path) -> None:
    status = policy_cv.main(
        ["--seed-dir", str(SEED_DIR), "--families", "linear", "--output-dir", str(tmp_path)]
    )
    assert status == 0
    doc = json.loads((tmp_path / "policy_cv.json").read_text())
    linear = doc["linear"]
    assert linear["n_datasets"] >= 100
    assert linear["n_groups"] >= 20
    served = linear["policies"][linear["chosen_policy"]]
    default = linear["policies"]["library default"]
    assert served["n_datasets"] == default["n_datasets"] == linear["n_datasets"]
    assert default["mean_regret"] == served["default_regret"]
    assert 0.0 <= served["mean_regret"] <= 1.0
    assert 0.0 <= served["not_lose_share"] <= 1.0
    # Every bar was learned on other folds, from the grid.
    assert set(linear["bars_learned_per_fold"]) <= {0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8}
    picks = linear["reliability"]["picks"]
    assert sum(b["n"] for b in picks) <= linear["n_datasets"]
    assert all(b["n"] == 0 or 0.0 <= b["observed"] <= 1.0 for b in picks)


def test_policy_cv_averages_over_surrogate_seeds_with_a_recipe_override(tmp_path: Path) -> None:
    argv = ["--seed-dir", str(SEED_DIR), "--families", "linear", "--folds", "3"]
    status = policy_cv.main(
        [*argv, "--seeds", "0,1", "--spread-scale", "0", "--output-dir", str(tmp_path)]
    )
    assert status == 0
    linear = json.loads((tmp_path / "policy_cv.json").read_text())["linear"]
    assert linear["params"]["spread_scale"] == 0.0
    per_seed = linear["over_seeds"]["per_seed"]
    assert [r["seed"] for r in per_seed] == [0, 1]
    # The tables are the first seed's; the mean is over both.
    served = linear["policies"][linear["chosen_policy"]]
    assert per_seed[0]["policy_regret"] == served["mean_regret"]
    mean = (per_seed[0]["policy_regret"] + per_seed[1]["policy_regret"]) / 2
    assert linear["over_seeds"]["mean"]["policy_regret"] == pytest.approx(mean, abs=1e-4)
    with pytest.raises(SystemExit) as bad:
        policy_cv.main([*argv, "--seeds", "zero", "--output-dir", str(tmp_path)])
    assert bad.value.code == 2


def test_coverage_bins_every_corpus_dataset(tmp_path: Path) -> None:
    status = coverage.main(["--no-foreign", "--output-dir", str(tmp_path)])
    assert status == 0
    doc = json.loads((tmp_path / "coverage.json").read_text())
    for axis in ("task", "rows", "features", "signal"):
        counted = sum(sum(row.values()) for row in doc["counts"][axis].values())
        assert counted == doc["n_datasets"]
    assert doc["foreign_nearest"] == []
