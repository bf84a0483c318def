"""The surrogate: ensemble layout, grouped CV, metrics, and tamper-proof save/load."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from hyperprior.training.features import TrainingSet, build_training_set
from hyperprior.training.surrogate import (
    SurrogateIntegrityError,
    SurrogateParams,
    combine_members,
    cross_validate,
    fit,
    from_text,
    grouped_folds,
    load,
    member_text,
    ranking_metrics,
    save,
    sha256_text,
    spread_weights,
)
from hyperprior.training.synthetic_history import SyntheticHistory

FAST = SurrogateParams(n_members=3, n_rounds=25, num_leaves=7, min_data_in_leaf=10, cv_folds=4)


@pytest.fixture(scope="module")
def training_set() -> TrainingSet:
    frame = SyntheticHistory("lightgbm", seed=11).frame(24, 20, n_reduced=4)
    return build_training_set(frame, "lightgbm")


def test_combined_members_predict_exactly_like_the_members() -> None:
    rng = np.random.default_rng(0)
    X = rng.random((300, 5))
    y = X[:, 0] + rng.normal(0, 0.1, 300)
    params = {"objective": "regression", "num_leaves": 7, "verbosity": -1, "num_threads": 1}
    members = [
        lgb.train(
            {**params, "seed": s, "bagging_fraction": 0.7, "bagging_freq": 1}, lgb.Dataset(X, y), 10
        )
        for s in range(3)
    ]
    combined = lgb.Booster(model_str=combine_members([m.model_to_string() for m in members]))
    expected = np.column_stack([m.predict(X) for m in members])
    np.testing.assert_allclose(combined.predict(X, raw_score=True), expected, rtol=1e-12)
    single = lgb.Booster(model_str=member_text(combined.model_to_string(), 1, 3))
    np.testing.assert_allclose(single.predict(X), expected[:, 1], rtol=1e-12)


def test_members_that_stopped_early_are_padded_not_refused() -> None:
    # On a tiny history a member can run out of splits that meet the leaf minimums.
    rng = np.random.default_rng(1)
    X = rng.random((40, 3))
    y = X[:, 0] + rng.normal(0, 0.05, 40)
    base = {"objective": "regression", "verbosity": -1, "num_threads": 1}
    members = [
        lgb.train({**base, "min_data_in_leaf": 5}, lgb.Dataset(X, y), 8),
        lgb.train({**base, "min_data_in_leaf": 100}, lgb.Dataset(X, y), 8),
    ]
    assert members[0].num_trees() > members[1].num_trees()
    combined = lgb.Booster(model_str=combine_members([m.model_to_string() for m in members]))
    expected = np.column_stack([m.predict(X) for m in members])
    np.testing.assert_allclose(combined.predict(X, raw_score=True), expected, rtol=1e-12)
    single = lgb.Booster(model_str=member_text(combined.model_to_string(), 1, 2))
    np.testing.assert_allclose(single.predict(X), expected[:, 1], rtol=1e-12)


def test_fit_predicts_mean_spread_and_pessimistic_score(training_set: TrainingSet) -> None:
    surrogate = fit(training_set, FAST)
    pred = surrogate.predict(training_set.X[:50])
    members = surrogate.predict_members(training_set.X[:50])
    assert members.shape == (50, 3)
    np.testing.assert_allclose(pred.mean, members.mean(axis=1))
    np.testing.assert_allclose(pred.score, pred.mean - FAST.kappa * pred.spread)
    assert (pred.lower <= pred.mean).all()
    assert (pred.upper >= pred.mean).all()
    assert surrogate.compatible()
    contrib = surrogate.contributions(training_set.X[:2])
    assert contrib.shape == (2, len(training_set.feature_names))
    meta = surrogate.metadata
    assert meta["family"] == "lightgbm"
    assert meta["feature_names"] == training_set.feature_names
    assert meta["training"]["n_datasets"] == 24
    assert {"lightgbm", "numpy", "scikit-learn"} <= set(meta["versions"])


def test_the_beats_classifier_is_one_more_output_of_the_same_text(
    training_set: TrainingSet,
) -> None:
    from sklearn.metrics import roc_auc_score

    from hyperprior.training.surrogate import beats_rows

    rows, label, weight = beats_rows(training_set)
    # Full-fidelity runs of datasets with a measured default, the default itself left out.
    assert (training_set.fidelity[rows] >= 1.0).all()
    assert not training_set.is_default[rows].any()
    assert 0 < label.mean() < 1
    assert weight.mean() == pytest.approx(1.0)
    with_beats = fit(training_set, FAST)
    without = fit(training_set, replace(FAST, beats_model=False))
    assert with_beats.has_beats
    assert with_beats.n_outputs == 4
    assert not without.has_beats
    assert without.predict_outputs(training_set.X[:5])[1] is None
    X = training_set.X[rows]
    members, logit = with_beats.predict_outputs(X)
    # The members predict as before the classifier joined them; the classifier learned.
    np.testing.assert_allclose(members, without.predict_members(X), rtol=1e-12)
    assert logit is not None
    assert roc_auc_score(label, logit) > 0.8
    # Screening and explanations read the first member of the wider text.
    np.testing.assert_allclose(with_beats.screen(X[:20]), without.screen(X[:20]), rtol=1e-12)
    old = {k: v for k, v in FAST.to_dict().items() if k != "beats_model"}
    assert SurrogateParams.from_dict(old).beats_model is False


def test_grouped_folds_never_share_a_dataset(training_set: TrainingSet) -> None:
    folds = grouped_folds(training_set, 4)
    assert len(folds) == 4
    seen: set[str] = set()
    for train, test in folds:
        test_sets = set(training_set.dataset[test])
        assert not test_sets & set(training_set.dataset[train])
        assert not test_sets & seen
        seen |= test_sets
    assert seen == set(training_set.dataset)


def _fold_by_name(ts: TrainingSet, folds: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, int]:
    return {
        ts.dataset_names[d]: i for i, (_, test) in enumerate(folds) for d in set(ts.dataset[test])
    }


def test_grouped_folds_keep_every_dataset_in_its_fold_when_one_is_added() -> None:
    # Datasets of unequal size, as in real histories: balancing folds by size (as
    # GroupKFold does) moved 35 of these 40 datasets when the 41st was added.
    frame = SyntheticHistory("lightgbm", seed=5).frame(41, 12, reduced_fidelity=None)
    frame = frame[frame.groupby("dataset_id").cumcount() < 4 + frame["dataset_id"] % 7]
    added = frame.loc[frame["dataset_id"] == 6, "dataset_name"].iloc[0]
    smaller = build_training_set(frame[frame["dataset_name"] != added], "lightgbm")
    larger = build_training_set(frame, "lightgbm")
    before = _fold_by_name(smaller, grouped_folds(smaller, 5))
    after = _fold_by_name(larger, grouped_folds(larger, 5))
    assert len(before) == 40
    assert set(after) - set(before) == {added}
    assert {name: after[name] for name in before} == before


def test_grouped_folds_fill_every_fold_with_few_datasets() -> None:
    ts = build_training_set(SyntheticHistory("lightgbm", seed=2).frame(3, 6), "lightgbm")
    folds = grouped_folds(ts, 5)
    assert len(folds) == 3
    assert sorted(len(set(ts.dataset[test])) for _, test in folds) == [1, 1, 1]


def test_cross_validation_beats_default_and_random(training_set: TrainingSet) -> None:
    report = cross_validate(training_set, FAST)
    m = report.metrics
    assert m["n_datasets"] == 24
    assert m["folds"] == 4
    assert 0.0 <= m["regret_at_1"] <= 1.0
    assert 0.0 <= m["ndcg_at_5"] <= 1.0
    assert m["spearman"] > 0.5
    assert m["regret_at_1"] < m["random_regret"]
    assert m["regret_at_1"] < m["default_regret"]
    assert m["regret_at_5"] <= m["regret_at_1"]
    assert report.interval_scale > 0
    # The interval is calibrated on the out-of-fold targets.
    inside = np.abs(training_set.y - report.oof_mean) <= report.interval_scale * report.oof_spread
    assert inside.mean() == pytest.approx(FAST.interval_level, abs=0.05)


def test_lambdarank_objective_trains_and_cross_validates(training_set: TrainingSet) -> None:
    params = SurrogateParams(**{**FAST.to_dict(), "objective": "lambdarank", "n_members": 2})
    report = cross_validate(training_set, params)
    assert report.metrics["regret_at_1"] < report.metrics["random_regret"]


def _toy(order: list[float]) -> TrainingSet:
    n = len(order)
    return TrainingSet(
        family="lightgbm",
        normalisation="rank",
        feature_names=["x"],
        X=np.zeros((n, 1)),
        y=np.linspace(0, 1, n),
        dataset=np.array(["d"] * n, dtype=object),
        group=np.zeros(n, dtype=np.int64),
        fidelity=np.ones(n),
        oriented=np.array(order, dtype=float),
        is_default=np.zeros(n, dtype=bool),
        task=np.array(["binary"] * n, dtype=object),
    )


def test_ranking_metrics_of_perfect_and_reversed_predictions() -> None:
    ts = _toy([0.1, 0.5, 0.9, 0.3, 0.7, 0.2])
    truth = ts.oriented
    perfect, _ = ranking_metrics(ts, truth, truth)
    assert perfect["regret_at_1"] == 0.0
    assert perfect["ndcg_at_5"] == pytest.approx(1.0)
    assert perfect["spearman"] == pytest.approx(1.0)
    reverse, _ = ranking_metrics(ts, -truth, -truth)
    assert reverse["regret_at_1"] == 1.0
    assert reverse["spearman"] == pytest.approx(-1.0)


def test_a_failed_pick_has_full_regret() -> None:
    ts = _toy([0.2, np.nan, 0.9, 0.5])
    metrics, _ = ranking_metrics(ts, np.array([0.0, 1.0, 0.5, 0.2]), np.array([0.0, 1.0, 0.5, 0.2]))
    assert metrics["regret_at_1"] == 1.0


def test_save_and_load_round_trip(tmp_path: Path, training_set: TrainingSet) -> None:
    surrogate = fit(training_set, FAST)
    save(surrogate, tmp_path, "lgb")
    text = (tmp_path / "lgb.txt").read_text()
    assert text.startswith("tree\n")  # LightGBM text, not a pickle
    meta = json.loads((tmp_path / "lgb.json").read_text())
    assert meta["sha256"] == sha256_text(text)
    loaded = load(tmp_path, "lgb")
    X = training_set.X[:20]
    np.testing.assert_array_equal(loaded.predict_members(X), surrogate.predict_members(X))


def test_load_refuses_a_tampered_model(tmp_path: Path, training_set: TrainingSet) -> None:
    save(fit(training_set, FAST), tmp_path, "lgb")
    path = tmp_path / "lgb.txt"
    text = path.read_text()
    # Nudge one leaf value: still a valid LightGBM model, but not the one that was saved.
    start = text.index("leaf_value=") + len("leaf_value=")
    path.write_text(text[:start] + "9" + text[start:])
    with pytest.raises(SurrogateIntegrityError, match="sha256"):
        load(tmp_path, "lgb")


def test_from_text_checks_the_registry_digest_too(training_set: TrainingSet) -> None:
    surrogate = fit(training_set, FAST)
    with pytest.raises(SurrogateIntegrityError, match="does not match"):
        from_text(surrogate.text, surrogate.metadata, sha256="0" * 64)
    no_digest = {k: v for k, v in surrogate.metadata.items() if k != "sha256"}
    with pytest.raises(SurrogateIntegrityError, match="without a sha256"):
        from_text(surrogate.text, no_digest)
    assert from_text(surrogate.text, no_digest, sha256=surrogate.sha256).sha256 == surrogate.sha256


def test_params_round_trip_and_ignore_unknown_keys() -> None:
    params = SurrogateParams(n_members=2, kappa=0.5)
    assert SurrogateParams.from_dict({**params.to_dict(), "from_the_future": 1}) == params


def test_each_family_has_its_recipe_and_overrides_win() -> None:
    assert SurrogateParams.for_family("lightgbm") == SurrogateParams()
    assert SurrogateParams.for_family("random_forest").spread_scale == 0.0
    assert SurrogateParams.for_family("random_forest", spread_scale=0.1).spread_scale == 0.1
    # A family only declared at run time gets the defaults.
    assert SurrogateParams.for_family("not_registered_here", seed=3) == SurrogateParams(seed=3)


def test_a_recipe_stored_before_spread_weights_had_none() -> None:
    old = {k: v for k, v in SurrogateParams().to_dict().items() if k != "spread_scale"}
    assert SurrogateParams.from_dict(old).spread_scale == 0.0
    assert SurrogateParams.from_dict(SurrogateParams().to_dict()).spread_scale > 0


def test_flat_groups_weigh_less_and_failed_groups_weigh_one(training_set: TrainingSet) -> None:
    ts = training_set
    groups = np.unique(ts.group)
    oriented = ts.oriented.copy()
    flat, failed = groups[0], groups[1]
    # A group whose configs all score within 0.005: noise, not ranking information.
    rows = np.flatnonzero(ts.group == flat)
    oriented[rows] = 0.8 + np.linspace(0.0, 0.005, len(rows))
    oriented[ts.group == failed] = np.nan
    spread_out = ts.group == groups[2]
    oriented[spread_out] = np.linspace(0.5, 0.9, int(spread_out.sum()))
    ts = TrainingSet(**{**ts.__dict__, "oriented": oriented})

    params = SurrogateParams(spread_scale=0.05, spread_floor=0.2)
    w = spread_weights(ts, params)
    assert w.shape == (len(ts),)
    assert np.allclose(w[ts.group == flat], 0.2)  # spread 0.004 / 0.05 clipped to the floor
    assert np.all(w[ts.group == failed] == 1.0)
    assert np.all(w[spread_out] == 1.0)
    assert np.all(spread_weights(ts, SurrogateParams(spread_scale=0.0)) == 1.0)


def test_cv_needs_two_datasets() -> None:
    frame = SyntheticHistory("linear", seed=0).frame(1, 10)
    ts = build_training_set(frame, "linear")
    with pytest.raises(ValueError, match="two datasets"):
        cross_validate(ts, FAST)


def test_empty_history_cannot_be_fitted() -> None:
    ts = build_training_set(pd.DataFrame(columns=["family"]), "linear")
    with pytest.raises(ValueError, match="no usable runs"):
        fit(ts, FAST)
