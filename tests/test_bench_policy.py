"""The leave-one-group-out policy benchmark and the coverage report run on the shipped seed."""

from __future__ import annotations

import argparse
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


def test_policy_cv_ranks_and_judges_by_a_named_metric(tmp_path: Path) -> None:
    argv = ["--seed-dir", str(SEED_DIR), "--families", "linear", "--folds", "3"]
    assert policy_cv.main([*argv, "--target", "mae", "--output-dir", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "policy_cv.json").read_text())
    assert doc["target"] == "mae"
    linear = doc["linear"]
    # MAE has no 0-1 scale: fitted as the retrain fits a surrogate of it.
    assert linear["params"]["spread_scale"] == 0.0
    assert {r["task"] for r in linear["per_dataset"]} == {"regression"}
    assert linear["n_datasets"] >= 50
    with pytest.raises(SystemExit) as bad:
        policy_cv.main([*argv, "--target", "r2", "--output-dir", str(tmp_path)])
    assert bad.value.code == 2


def test_metric_experiment_matches_the_primary_picks_to_the_target_rows() -> None:
    import pandas as pd

    from benchmarks.experiments.metric_surrogates import primary_on_target
    from benchmarks.surrogate_cv import load_runs
    from hyperprior.training.confidence import group_folds
    from hyperprior.training.features import build_training_set, runs_for_target
    from hyperprior.training.surrogate import SurrogateParams, cross_validate

    frame = load_runs(argparse.Namespace(seed_dir=str(SEED_DIR), database_url=None))
    runs = frame[(frame["family"] == "linear") & (frame["task"] == "binary")]
    runs = runs[runs["dataset_name"].isin(sorted(set(runs["dataset_name"]))[:24])].copy()
    # A target equal to the primary score: both recipes learn the same thing, so the
    # primary's held-out picks must be the target's own, dataset by dataset.
    runs["metrics"] = [{"accuracy": s} for s in runs["score"]]
    runs = runs.sample(frac=1.0, random_state=3)  # row order must not matter
    params = SurrogateParams.for_family("linear", n_members=2)
    ts = build_training_set(runs_for_target(runs, "accuracy"), "linear")
    folds = group_folds(ts, 4)
    own = cross_validate(ts, params, folds=folds).per_group.set_index("dataset")
    primary = primary_on_target(runs, ts, folds, params).set_index("dataset")
    assert len(own) >= 20
    pd.testing.assert_series_equal(own["regret_at_1"], primary["regret_at_1"])
    # A target that reverses the score: the primary's picks are judged by it (near its
    # worst), the target's own surrogate learns the reversal.
    runs["metrics"] = [{"accuracy": -s} for s in runs["score"]]
    ts = build_training_set(runs_for_target(runs, "accuracy"), "linear")
    own = cross_validate(ts, params, folds=folds).per_group
    primary = primary_on_target(runs, ts, folds, params)
    assert primary["regret_at_1"].mean() > 0.6 > 0.3 > own["regret_at_1"].mean()
