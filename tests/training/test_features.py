"""Features: columns, interactions, the shared training/suggesting path, the target."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from hyperprior.training.features import (
    FAILED_QUALITY,
    TASKS,
    build_training_set,
    core_metafeatures,
    design_matrix,
    encode_configs,
    feature_names,
    normalise_quality,
    oriented_scores,
    relevance_labels,
)
from hyperprior.training.spaces import SPACES, get_space
from hyperprior.training.synthetic_history import SyntheticHistory

FAMILIES = sorted(SPACES)


@pytest.mark.parametrize("family", FAMILIES)
def test_feature_names_are_unique_safe_and_ordered(family: str) -> None:
    names = feature_names(family)
    assert len(names) == len(set(names))
    assert all(not set(n) & set(',:[]{}"') for n in names)
    n_mf = len(core_metafeatures())
    assert names[:n_mf] == [f"mf_{m}" for m in core_metafeatures()]
    assert names[n_mf] == "fidelity"
    assert names[n_mf + 1 : n_mf + 1 + len(TASKS)] == [f"task_{t}" for t in TASKS]
    cfg = [n for n in names if n.startswith("cfg_")]
    assert cfg == [f"cfg_{d}" for d in get_space(family).dim_names]
    assert any(n.startswith("ix_") for n in names)


def test_interactions_relate_hyperparameters_to_the_data() -> None:
    block = encode_configs(
        "lightgbm",
        [{"n_estimators": 200, "learning_rate": 0.05, "num_leaves": 63, "min_child_samples": 40}],
    )
    meta = {"n_rows": 10_000.0, "n_features": 16.0}
    names = feature_names("lightgbm")
    row = dict(zip(names, design_matrix("lightgbm", block, meta, task="binary")[0], strict=True))
    assert row["ix_log_min_child_per_row"] == pytest.approx(math.log(40 / 10_000))
    assert row["ix_leaves_per_log_rows"] == pytest.approx(math.log(63) / math.log(10_000))
    assert row["ix_log_rounds_x_lr"] == pytest.approx(math.log(200 * 0.05))
    assert row["ix_log_leaves_per_feature"] == pytest.approx(math.log(63 / 16))
    assert row["task_binary"] == 1.0
    assert row["task_regression"] == 0.0
    # At fidelity 0.25 the run saw a quarter of the rows.
    quarter = design_matrix("lightgbm", block, meta, task="binary", fidelity=0.25)[0]
    row_q = dict(zip(names, quarter, strict=True))
    assert row_q["ix_log_min_child_per_row"] == pytest.approx(math.log(40 / 2_500))
    assert row_q["fidelity"] == 0.25


def test_keras_fidelity_cuts_epochs_not_rows() -> None:
    config = {"batch_size": 64, "epochs": 40, "learning_rate": 0.001}
    block = encode_configs("keras_mlp", [config])
    meta = {"n_rows": 6_400.0, "n_features": 10.0}
    names = feature_names("keras_mlp")
    full = dict(zip(names, design_matrix("keras_mlp", block, meta, task="binary")[0], strict=True))
    assert full["ix_log_batch_per_row"] == pytest.approx(math.log(64 / 6_400))
    assert full["ix_log_steps"] == pytest.approx(math.log(40 * 6_400 / 64))
    half = design_matrix("keras_mlp", block, meta, task="binary", fidelity=0.5)[0]
    half_row = dict(zip(names, half, strict=True))
    assert half_row["ix_log_batch_per_row"] == pytest.approx(math.log(64 / 6_400))
    assert half_row["ix_log_steps"] == pytest.approx(math.log(20 * 6_400 / 64))


def test_random_forest_named_max_features_become_counts() -> None:
    block = encode_configs(
        "random_forest", [{"max_features": "sqrt"}, {"max_features": 0.5}, {"max_features": "log2"}]
    )
    names = feature_names("random_forest")
    X = design_matrix("random_forest", block, {"n_rows": 1000.0, "n_features": 64.0}, task="binary")
    col = X[:, names.index("ix_log_max_features_count")]
    np.testing.assert_allclose(col, np.log([8.0, 32.0, 6.0]))


def test_missing_meta_features_are_nan() -> None:
    block = encode_configs("linear", [{"C": 1.0}])
    X = design_matrix("linear", block, {"n_rows": 100.0, "n_features": 3.0}, task="binary")
    names = feature_names("linear")
    assert math.isnan(X[0, names.index("mf_lm_stump")])
    assert X[0, names.index("ix_log_C_x_rows")] == pytest.approx(math.log(100.0))


def test_training_rows_equal_candidate_rows_built_on_the_suggestion_path() -> None:
    frame = SyntheticHistory("lightgbm", seed=3).frame(4, 6, n_reduced=2, failure_rate=0.0)
    ts = build_training_set(frame, "lightgbm")
    assert len(ts) == len(frame)
    for i in [0, 5, len(ts) - 1]:
        config = frame.loc[frame["id"] == _row_id(frame, ts, i), "config"].iloc[0]
        source = frame.loc[frame["id"] == _row_id(frame, ts, i)].iloc[0]
        meta = {c[3:]: source[c] for c in frame.columns if c.startswith("mf_")}
        X = design_matrix(
            "lightgbm",
            encode_configs("lightgbm", [config]),
            meta,
            task=source["task"],
            fidelity=source["fidelity"],
        )
        np.testing.assert_array_equal(np.isnan(X[0]), np.isnan(ts.X[i]))
        np.testing.assert_allclose(np.nan_to_num(X[0]), np.nan_to_num(ts.X[i]))


@pytest.mark.parametrize("family", FAMILIES)
def test_one_datasets_candidates_equal_rows_given_meta_per_row(family: str) -> None:
    # Scalar meta-features (a suggestion) take a broadcast shortcut; the per-row path
    # (training) must give the same bits.
    rng = np.random.default_rng(5)
    space = get_space(family)
    configs = space.decode_many(rng.random((40, len(space.dim_names))), "binary")
    block = encode_configs(family, configs)
    meta = SyntheticHistory(family, seed=1).sample_meta(rng, "binary")
    scalar = design_matrix(family, block, meta, task="binary", fidelity=1.0)
    per_row = design_matrix(
        family,
        block,
        {
            k: np.full(len(block), np.nan if v is None else v, dtype=np.float64)
            for k, v in meta.items()
        },
        task=np.array(["binary"] * len(block), dtype=object),
        fidelity=np.ones(len(block)),
    )
    np.testing.assert_array_equal(scalar, per_row)


def _row_id(frame: pd.DataFrame, ts: object, i: int) -> str:
    # Training rows are sorted by (group, run id): recover the id of row i.
    ordered = frame.assign(_g=frame["dataset_id"].astype(str) + "|" + frame["metric"])
    ordered = ordered.sort_values(["_g", "id"], kind="mergesort")
    return str(ordered["id"].iloc[i])


def test_rank_normalisation_within_groups_and_failed_runs_last() -> None:
    oriented = np.array([0.7, 0.9, np.nan, 0.8, 10.0, 30.0, 20.0, 20.0])
    groups = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    q = normalise_quality(oriented, groups, method="rank")
    # Group 0: failed run is last (0), then 0.7, 0.8, 0.9 evenly spread above it.
    np.testing.assert_allclose(q[:4], [1 / 3, 1.0, FAILED_QUALITY, 2 / 3])
    # Group 1: ties share the mean rank.
    np.testing.assert_allclose(q[4:], [0.0, 1.0, 0.5, 0.5])


def test_tied_rank_counts_scores_within_the_tolerance_as_ties(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hyperprior.training import features

    oriented = np.array([0.700, 0.701, 0.800, np.nan, 10.0, 30.0, 20.0, 20.0])
    groups = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    monkeypatch.setattr(features, "TIE_TOLERANCE", 0.002)
    q = normalise_quality(oriented, groups, method="tied_rank")
    # 0.700 and 0.701 tie: each beats the failed run and shares half a rank.
    np.testing.assert_allclose(q[:4], [0.5, 0.5, 1.0, FAILED_QUALITY])
    monkeypatch.setattr(features, "TIE_TOLERANCE", 0.0)
    np.testing.assert_allclose(
        normalise_quality(oriented, groups, method="tied_rank"),
        normalise_quality(oriented, groups, method="rank"),
    )


def test_minmax_normalisation_and_uninformative_groups_dropped() -> None:
    oriented = np.array([1.0, 2.0, 3.0, 5.0, 5.0, 5.0, 1.0, 2.0, np.nan])
    groups = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    q = normalise_quality(oriented, groups, method="minmax")
    np.testing.assert_allclose(q[:3], [0.0, 0.5, 1.0])
    assert np.isnan(q[3:6]).all()  # every run scored the same: nothing to learn
    assert np.isnan(q[6:]).all()  # fewer than three ok runs
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalise_quality(oriented, groups, method="zscore")


def test_oriented_scores_flip_minimised_metrics_and_blank_failures() -> None:
    frame = pd.DataFrame(
        {
            "score": [0.3, 0.3, 0.9],
            "direction": ["minimize", "maximize", "maximize"],
            "status": ["ok", "ok", "failed"],
        }
    )
    out = oriented_scores(frame)
    assert out[0] == -0.3
    assert out[1] == 0.3
    assert math.isnan(out[2])


def test_relevance_labels_are_integer_levels() -> None:
    labels = relevance_labels(np.array([0.0, 0.5, 0.999, 1.0, np.nan]), levels=4)
    assert labels.tolist() == [0, 2, 3, 3, 0]


def test_training_set_summary_and_subset() -> None:
    frame = SyntheticHistory("random_forest", seed=1).frame(6, 8, n_reduced=2)
    ts = build_training_set(frame, "random_forest", normalisation="minmax")
    summary = ts.summary()
    assert summary["n_datasets"] == 6
    assert summary["normalisation"] == "minmax"
    assert 0.0 <= ts.y.min()
    assert ts.y.max() <= 1.0
    half = ts.subset(ts.dataset == ts.dataset[0])
    assert set(half.dataset) == {ts.dataset[0]}
    assert build_training_set(frame.iloc[:0], "random_forest").X.shape == (0, len(ts.feature_names))


def test_each_family_keeps_its_interaction_columns() -> None:
    # The shipped surrogates were trained on these columns, in this order.
    from hyperprior.training.features import interactions_for

    data = [
        "signal_1nn_minus_linear",
        "learnable_beyond_stump",
        "signal_gbdt_minus_linear",
        "tree_minus_gbdt",
        "rf_minus_gbdt",
        "gbdt_minus_short",
    ]
    assert [ix.name for ix in interactions_for("lightgbm")] == [
        "log_min_child_per_row",
        "leaves_per_log_rows",
        "log_leaves_per_feature",
        "log_rows_per_leaf_over_min_child",
        "log_rounds_x_lr",
        "log_features_per_tree",
        "log_rows_per_tree",
        *data,
    ]
    assert [ix.name for ix in interactions_for("random_forest")] == [
        "log_min_leaf_per_row",
        "log_min_split_per_row",
        "log_max_features_count",
        "log_rows_per_bootstrap",
        "depth_per_log_rows",
        *data,
    ]
    assert [ix.name for ix in interactions_for("linear")] == [
        "log_C_x_rows",
        "log_alpha_per_row",
        *data,
    ]
    assert [ix.name for ix in interactions_for("keras_mlp")] == [
        "log_batch_per_row",
        "log_steps",
        "log_steps_x_lr",
        "log_units_per_feature",
        *data,
    ]
