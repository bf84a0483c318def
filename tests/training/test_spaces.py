"""Search spaces: library defaults, sampling, encoding round trips, validation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hyperprior.training.spaces import (
    INACTIVE,
    SPACES,
    TASKS,
    Categorical,
    Float,
    Int,
    Space,
    UnknownFamilyError,
    get_space,
)

FAMILY_TASKS = [(f, t) for f in SPACES for t in TASKS]


def _library_defaults(family: str, task: str) -> dict[str, object]:
    """get_params() of the estimator the family wraps, with the library's defaults."""
    if family == "lightgbm":
        import lightgbm as lgb

        cls = lgb.LGBMRegressor if task == "regression" else lgb.LGBMClassifier
        return cls().get_params()
    if family == "random_forest":
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

        cls = RandomForestRegressor if task == "regression" else RandomForestClassifier
        return cls().get_params()
    if family == "linear":
        from sklearn.linear_model import ElasticNet, LogisticRegression

        return (ElasticNet() if task == "regression" else LogisticRegression()).get_params()
    raise AssertionError(family)


# XGBoost's get_params() is all None (its booster resolves the defaults):
# tests/training/test_xgboost_family.py compares the resolved ones.
@pytest.mark.parametrize(
    ("family", "task"), [ft for ft in FAMILY_TASKS if ft[0] not in ("keras_mlp", "xgboost")]
)
def test_default_is_the_library_default(family: str, task: str) -> None:
    default = get_space(family).default(task)
    library = _library_defaults(family, task)
    assert default == {k: library[k] for k in default}


def test_lightgbm_default_builds_the_default_estimator() -> None:
    import lightgbm as lgb

    for task, cls in (("binary", lgb.LGBMClassifier), ("regression", lgb.LGBMRegressor)):
        assert cls(**get_space("lightgbm").default(task)).get_params() == cls().get_params()


def test_random_forest_default_depends_on_task() -> None:
    space = get_space("random_forest")
    assert space.default("binary")["max_features"] == "sqrt"
    assert space.default("regression")["max_features"] == 1.0


def test_keras_default_is_the_documented_one() -> None:
    assert get_space("keras_mlp").default("binary") == {
        "learning_rate": 1e-3,
        "batch_size": 32,
        "epochs": 20,
        "n_layers": 2,
        "units": 64,
        "dropout": 0.0,
        "l2": 0.0,
        "optimizer": "adam",
        "activation": "relu",
        "batch_norm": False,
    }


def test_linear_keys_depend_on_task() -> None:
    space = get_space("linear")
    assert set(space.default("binary")) == {"C", "l1_ratio", "class_weight"}
    assert set(space.default("regression")) == {"alpha", "l1_ratio"}
    assert [p.name for p in space.params_for("regression")] == ["alpha", "l1_ratio"]
    # One encoding for both tasks: the other task's dimensions are inactive.
    assert space.dim_names == ("C", "alpha", "l1_ratio", "class_weight")
    assert space.encode(space.default("regression"))[0] == INACTIVE


@pytest.mark.parametrize(("family", "task"), FAMILY_TASKS)
def test_sample_round_trips_through_the_unit_cube(family: str, task: str) -> None:
    space = get_space(family)
    configs = space.sample(200, seed=3, task=task)
    assert len(configs) == 200
    unit = space.encode_many(configs)
    assert unit.shape == (200, len(space.dim_names))
    assert ((unit >= 0) & (unit <= 1)).all()
    assert space.decode_many(unit, task) == configs
    for i in (0, 57, 199):
        np.testing.assert_array_equal(space.encode(configs[i]), unit[i])
        assert space.decode(unit[i], task) == configs[i]
    for config in configs:
        assert space.validate(config, task) == config


@pytest.mark.parametrize("family", list(SPACES))
def test_sample_is_reproducible_and_covers_the_box(family: str) -> None:
    space = get_space(family)
    assert space.sample(37, 11, "binary") == space.sample(37, 11, "binary")
    assert space.sample(37, 11, "binary") != space.sample(37, 12, "binary")
    assert space.sample(0, 1, "binary") == []
    configs = space.sample(64, 0, "binary")
    for p in space.params_for("binary"):
        values = [c[p.name] for c in configs if p.name in c]
        assert values, p.name
        if isinstance(p, Categorical):
            assert {json.dumps(v) for v in values} == {json.dumps(c) for c in p.choices}
        else:
            assert min(values) >= p.low
            assert max(values) <= p.high
            distinct = 7 if getattr(p, "power_of_two", False) else min(10, int(p.high - p.low))
            assert len(set(values)) >= distinct, p.name
        if isinstance(p, Int):
            assert all(type(v) is int for v in values)


@settings(max_examples=60, deadline=None)
@given(
    family=st.sampled_from(sorted(SPACES)),
    task=st.sampled_from(TASKS),
    u=arrays(np.float64, 10, elements=st.floats(0.0, 1.0)),
)
def test_any_unit_point_decodes_to_a_valid_fixed_point(
    family: str, task: str, u: np.ndarray
) -> None:
    space = get_space(family)
    config = space.decode(u[: len(space.dim_names)], task)
    assert space.validate(config, task) == config
    assert space.decode(space.encode(config), task) == config


def test_in_box_values_round_trip() -> None:
    space = get_space("lightgbm")
    config = {
        "n_estimators": 300,
        "learning_rate": 0.05,
        "num_leaves": 63,
        "min_child_samples": 10,
        "subsample_freq": 1,
        "subsample": 0.8,
        "colsample_bytree": 0.7,
        "reg_alpha": 0.001,
        "reg_lambda": 1.0,
    }
    assert space.decode(space.encode(config)) == config


def test_out_of_box_values_are_clipped() -> None:
    space = get_space("lightgbm")
    unit = space.encode(space.default("binary"))
    names = space.dim_names
    assert unit[names.index("reg_alpha")] == 0.0  # default 0 lies below the log box
    assert unit[names.index("reg_lambda")] == 0.0
    assert unit[names.index("subsample")] == INACTIVE  # subsample_freq=0: inactive
    assert unit[names.index("learning_rate")] == pytest.approx(
        math.log(0.1 / 0.005) / math.log(0.5 / 0.005)
    )
    assert space.encode({"n_estimators": 100_000})[0] == 1.0


def test_categorical_encoding_is_index_over_k_minus_one() -> None:
    space = get_space("keras_mlp")
    j = space.dim_names.index("optimizer")
    unit = space.encode_many([{"optimizer": o} for o in ("adam", "adamw", "sgd", "rmsprop")])
    np.testing.assert_allclose(unit[:, j], [0.0, 1 / 3, 2 / 3, 1.0])


def test_batch_size_decodes_to_powers_of_two() -> None:
    sizes = {c["batch_size"] for c in get_space("keras_mlp").sample(128, 0, "binary")}
    assert sizes == {16, 32, 64, 128, 256, 512, 1024}


def test_conditional_parameters_are_omitted_when_inactive() -> None:
    rf = get_space("random_forest")
    configs = rf.sample(64, 0, "binary")
    assert all(("max_samples" in c) == c["bootstrap"] for c in configs)
    unit = rf.encode({"bootstrap": False, "max_samples": 0.5})
    assert unit[rf.dim_names.index("max_samples")] == INACTIVE
    # validate drops it: scikit-learn refuses max_samples without bootstrap.
    assert "max_samples" not in rf.validate({"bootstrap": False, "max_samples": 0.5}, "binary")
    lgb = get_space("lightgbm")
    assert all(
        ("subsample" in c) == (c["subsample_freq"] == 1) for c in lgb.sample(64, 0, "binary")
    )
    assert lgb.validate({"subsample_freq": 1})["subsample"] == 1.0  # filled with the default


def test_validate_fills_defaults_and_canonicalises() -> None:
    space = get_space("lightgbm")
    out = space.validate({"n_estimators": 250.0, "learning_rate": 1}, "binary")
    assert out["n_estimators"] == 250
    assert type(out["n_estimators"]) is int
    assert out["learning_rate"] == 1.0
    assert type(out["learning_rate"]) is float
    assert out["num_leaves"] == 31
    assert list(out) == [k for k in space.dim_names if k in out]


def test_validate_names_every_bad_key_and_value() -> None:
    space = get_space("lightgbm")
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['max_bin', 'verbose'\]") as e:
        space.validate(
            {
                "verbose": -1,
                "max_bin": 63,
                "num_leaves": 1,
                "learning_rate": 0,
                "subsample_freq": 2,
            },
            "binary",
        )
    message = str(e.value)
    assert "num_leaves=1 must be >= 2" in message
    assert "learning_rate=0 must be > 0" in message
    assert "subsample_freq=2 must be one of [0, 1]" in message
    with pytest.raises(ValueError, match="n_estimators=12.5 must be an integer"):
        space.validate({"n_estimators": 12.5})
    with pytest.raises(ValueError, match="must be a number"):
        space.validate({"learning_rate": "0.1"})
    with pytest.raises(ValueError, match="not finite"):
        space.validate({"learning_rate": float("nan")})


def test_validate_matches_choices_by_type() -> None:
    rf = get_space("random_forest")
    assert rf.validate({"max_features": 1.0}, "binary")["max_features"] == 1.0
    # 1 (an int) means one feature to scikit-learn, not all of them.
    with pytest.raises(ValueError, match="max_features=1 must be one of"):
        rf.validate({"max_features": 1}, "binary")
    with pytest.raises(ValueError, match="bootstrap=1 must be one of"):
        rf.validate({"bootstrap": 1}, "binary")


def test_validate_rejects_parameters_of_another_task() -> None:
    linear = get_space("linear")
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['C'\] for task 'regression'"):
        linear.validate({"C": 1.0}, "regression")
    with pytest.raises(ValueError, match="depends on the task; pass task="):
        linear.validate({})
    with pytest.raises(ValueError, match="unknown task"):
        linear.validate({}, "ranking")


def test_encode_rejects_values_that_are_not_choices() -> None:
    with pytest.raises(ValueError, match="optimizer='adagrad' must be one of"):
        get_space("keras_mlp").encode({"optimizer": "adagrad"})


def test_get_space_lists_known_families() -> None:
    with pytest.raises(KeyError, match="known families: lightgbm, random_forest, linear"):
        get_space("catboost")
    with pytest.raises(ValueError, match="unknown family 'catboost'"):
        get_space("catboost")
    with pytest.raises(UnknownFamilyError):
        get_space("catboost")


@pytest.mark.parametrize("family", list(SPACES))
def test_to_json_is_json(family: str) -> None:
    doc = json.loads(json.dumps(get_space(family).to_json()))
    assert doc["family"] == family
    assert doc["dim_names"] == list(get_space(family).dim_names)
    assert set(doc["defaults"]) == set(TASKS)
    assert all("type" in p and "default" in p for p in doc["params"])


def test_space_rejects_bad_definitions() -> None:
    with pytest.raises(ValueError, match="log-scaled box needs low > 0"):
        Float("x", 0.0, 1.0, log=True, default=0.5)
    with pytest.raises(ValueError, match="must be an earlier categorical"):
        Space("f", (Float("a", 0, 1, default=0.5, condition=("b", (True,))),))
    with pytest.raises(ValueError, match="must be one of"):
        Space("f", (Categorical("b", (True, False), default="yes"),))
