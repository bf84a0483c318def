"""The quality benchmark (issue 6): its quick mode runs end to end; its arithmetic."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest

from benchmarks import quality


def test_quick_mode_completes_and_writes_its_outputs(tmp_path: Path) -> None:
    from hyperprior.service.cli import main

    status = main(["bench", "quality", "--quick", "--output-dir", str(tmp_path), "--no-progress"])

    assert status == 0
    doc = json.loads((tmp_path / "quality_quick.json").read_text())
    keys = [(r["family"], r["dataset"], r["method"]) for r in doc["records"]]
    assert len(keys) == len(set(keys))
    expected = {
        (family, dataset, method)
        for family in doc["settings"]["families"]
        for dataset in doc["datasets"][family]
        for method in doc["settings"]["methods"]
    }
    assert set(keys) == expected
    assert len(doc["datasets"]["lightgbm"]) == 3
    assert doc["measurements"]
    assert (tmp_path / "quality_quick.md").read_text().startswith("# Suggestion quality")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert (tmp_path / "quality_quick_regret.png").stat().st_size > 0
    assert (tmp_path / "quality_quick_winloss.png").stat().st_size > 0


def test_expected_min_of_k_matches_enumeration() -> None:
    values = [0.9, 0.1, 0.5, 0.3, 0.7, 0.0]
    for k in range(1, len(values) + 1):
        draws = list(itertools.combinations(values, k))
        brute = sum(min(d) for d in draws) / len(draws)
        assert quality.expected_min_of_k(values, k) == pytest.approx(brute)
    assert quality.expected_min_of_k(values, len(values) + 1) is None


def test_regret_is_normalised_and_failed_is_worst() -> None:
    assert quality.regret(0.9, best=0.9, worst=0.5) == 0.0
    assert quality.regret(0.7, best=0.9, worst=0.5) == pytest.approx(0.5)
    assert quality.regret(None, best=0.9, worst=0.5) == 1.0
    assert quality.regret(0.8, best=0.8, worst=0.8) == 0.0


def test_trials_equivalent_interpolates_in_log_k() -> None:
    curve = {1: 0.4, 2: 0.3, 4: 0.2, 8: 0.1}
    assert quality.trials_equivalent(curve, 0.3) == 2.0
    assert quality.trials_equivalent(curve, 0.15) == pytest.approx(2**2.5)
    assert quality.trials_equivalent(curve, 0.5) == 1.0
    assert quality.trials_equivalent(curve, 0.05) is None


def test_flaml_mapping_keeps_what_fits_and_names_what_does_not() -> None:
    flaml_rf = {
        "n_estimators": 356,
        "max_features": 0.1,
        "criterion": "gini",
        "max_leaf_nodes": 102,
        "verbose": 0,
        "random_state": 12032022,
    }
    config, extras, notes = quality.map_flaml("random_forest", flaml_rf, "binary", 7)

    assert config["n_estimators"] == 356
    # 0.1 of 7 features is 1 feature, as is 0.25 (int(1.75)); "log2" and "sqrt" give 2.
    assert config["max_features"] == 0.25
    assert extras == {"max_features": 0.1, "criterion": "gini", "max_leaf_nodes": 102}
    assert len(notes) == 3

    flaml_lgbm = {"n_estimators": 362, "num_leaves": 1208, "max_bin": 15, "verbose": -1}
    config, extras, _ = quality.map_flaml("lightgbm", flaml_lgbm, "binary", 7)
    assert config["num_leaves"] == 1208
    assert extras == {"max_bin": 15}
    assert quality.map_flaml("lightgbm", {}, "regression", 3)[0]["n_estimators"] == 100
    assert math.isclose(config["learning_rate"], 0.1)
