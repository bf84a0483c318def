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


def test_policy_cv_judges_added_runs_on_the_candidates_of_the_seed(tmp_path: Path) -> None:
    import numpy as np
    import pandas as pd

    runs = pd.read_parquet(SEED_DIR / "runs.parquet")
    ok = runs[(runs["family"] == "linear") & (runs["status"] == "ok") & (runs["fidelity"] == 1)]
    best = ok.loc[ok.groupby("dataset")["score"].idxmax()]
    # Better than anything the seed measured: as candidates they would move every best.
    step = np.where(best["direction"] == "minimize", -1.0, 1.0) * 0.05
    extra = best.assign(id=best["id"] + "-extra", score=best["score"] + step)
    extra.to_parquet(tmp_path / "extra.parquet", index=False)
    argv = ["--seed-dir", str(SEED_DIR), "--families", "linear", "--folds", "3"]

    def default_regrets(out: Path, *more: str) -> dict[str, float]:
        assert policy_cv.main([*argv, *more, "--output-dir", str(out)]) == 0
        doc = json.loads((out / "policy_cv.json").read_text())
        return {r["dataset"]: r["default_regret"] for r in doc["linear"]["per_dataset"]}

    before = default_regrets(tmp_path / "before")
    judged = default_regrets(
        tmp_path / "judged",
        "--extra-runs",
        str(tmp_path / "extra.parquet"),
        "--candidates-from",
        str(SEED_DIR),
    )
    assert judged == before
    free = default_regrets(tmp_path / "free", "--extra-runs", str(tmp_path / "extra.parquet"))
    assert sum(free[d] != before[d] for d in before) >= len(before) // 2
    with pytest.raises(SystemExit) as bad:
        policy_cv.main(["--database-url", "sqlite://", "--extra-runs", "x.parquet"])
    assert bad.value.code == 2


def test_coverage_bins_every_corpus_dataset(tmp_path: Path) -> None:
    status = coverage.main(["--no-foreign", "--output-dir", str(tmp_path)])
    assert status == 0
    doc = json.loads((tmp_path / "coverage.json").read_text())
    for axis in ("task", "rows", "features", "signal"):
        counted = sum(sum(row.values()) for row in doc["counts"][axis].values())
        assert counted == doc["n_datasets"]
    assert doc["foreign_nearest"] == []


def test_learning_curve_splits_whole_groups_into_parts_of_about_equal_size() -> None:
    import pandas as pd

    from benchmarks.experiments.learning_curve import split_groups
    from hyperprior.training.datasets import dataset_group

    names = pd.read_parquet(SEED_DIR / "datasets.parquet")["name"].astype(str)
    for k in (1, 2, 4):
        part = split_groups(names, k, seed=0)
        assert set(part) == set(names)
        assert set(part.values()) == set(range(k))
        # A source group is never split: leave-one-group-out inside a part stays honest.
        by_group: dict[str, set[int]] = {}
        for name, p in part.items():
            by_group.setdefault(dataset_group(name), set()).add(p)
        assert all(len(parts) == 1 for parts in by_group.values())
        sizes = pd.Series(part).value_counts()
        largest = pd.Series([dataset_group(n) for n in names]).value_counts().max()
        assert sizes.max() - sizes.min() <= largest
