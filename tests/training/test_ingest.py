"""hyperprior.training.ingest: which configs are refused, which are stored and flagged."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from hyperprior.db.entities import DatasetSpec, NewRun
from hyperprior.training.ingest import InvalidConfigError, check_config, check_new_runs


@pytest.mark.parametrize(
    ("family", "config", "task", "field", "message"),
    [
        ("lightgbm", {"num_leaves": "abc"}, "binary", "config.num_leaves", "must be an integer"),
        ("lightgbm", {"num_leaves": -5}, "binary", "config.num_leaves", ">= 2"),
        ("lightgbm", {"learning_rate": 0}, "binary", "config.learning_rate", "> 0"),
        ("lightgbm", {"num_leaves": 99999999}, "binary", "config.num_leaves", "<= 131072"),
        ("lightgbm", {"eta": 0.3}, None, "config.eta", "it accepts n_estimators"),
        ("lightgbm", {"max_depth": 6}, "binary", "config.max_depth", "not a parameter"),
        ("lightgbm", {"subsample_freq": 1.0}, "binary", "config.subsample_freq", "one of 0, 1"),
        ("random_forest", {"bootstrap": 1}, "binary", "config.bootstrap", "one of false, true"),
        ("random_forest", {"max_features": "all"}, "binary", "config.max_features", '"sqrt"'),
        ("linear", {"C": 1.0}, "regression", "config.C", "for a regression task"),
        ("keras_mlp", {"optimizer": "adagrad"}, "binary", "config.optimizer", '"adam"'),
        ("keras_mlp", {"epochs": True}, "binary", "config.epochs", "must be an integer"),
        ("lightgbm", ["num_leaves"], "binary", "config", "must be a JSON object"),
    ],
)
def test_refused_configs_name_the_field_and_what_is_allowed(
    family: str, config: Any, task: str | None, field: str, message: str
) -> None:
    verdict = check_config(family, config, task)

    assert verdict is not None
    assert not verdict.ok
    fields = dict(verdict.errors)
    assert field in fields
    assert message in fields[field]


@pytest.mark.parametrize(
    ("family", "config", "field", "message"),
    [
        ("lightgbm", {"n_estimators": 5000}, "config.n_estimators", "outside the search space"),
        ("lightgbm", {"subsample": 0.8}, "config.subsample", "no effect unless subsample_freq"),
        ("random_forest", {"bootstrap": False, "max_samples": 0.5}, "config.max_samples", "no"),
    ],
)
def test_valid_but_unusual_values_are_stored_and_flagged(
    family: str, config: dict[str, Any], field: str, message: str
) -> None:
    verdict = check_config(family, config, "binary")

    assert verdict is not None
    assert verdict.ok
    assert message in dict(verdict.warnings)[field]


def test_defaults_partial_configs_and_unknown_families_pass_quietly() -> None:
    # reg_alpha=0 (the library default) lies below the box: not worth a warning.
    assert check_config("lightgbm", {"reg_alpha": 0.0, "num_leaves": 63}, "binary") == (
        check_config("lightgbm", {}, "binary")
    )
    assert check_config("lightgbm", {}, "binary").warnings == ()  # type: ignore[union-attr]
    assert check_config("linear", {"C": 2.0}, None).ok  # type: ignore[union-attr]
    assert check_config("catboost", {"eta": "anything"}, "binary") is None


def _run(config: dict[str, Any], **fields: Any) -> NewRun:
    spec = DatasetSpec(name="d", task="binary", meta_features={"n_rows": 10, "n_features": 2})
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "family": "lightgbm",
        "config": config,
        "metric": "roc_auc",
        "direction": "maximize",
        "score": 0.8,
        "fidelity": 1.0,
        "cost_seconds": 1.0,
        "source": "user",
        "dataset": spec,
    }
    values.update(fields)
    return NewRun(**values)


def test_check_new_runs_names_every_bad_run_and_flags_the_rest() -> None:
    runs = [
        _run({"num_leaves": 31}),
        _run({"num_leaves": "abc"}),
        _run({"n_estimators": 4096}),
        _run({"eta": 1}),
    ]

    with pytest.raises(InvalidConfigError) as refused:
        check_new_runs(runs, task_of_dataset=lambda i: None)

    entries = refused.value.entries
    assert [(e["run_index"], e["field"]) for e in entries] == [
        (1, "config.num_leaves"),
        (3, "config.eta"),
    ]
    assert entries[0]["msg"].startswith(f"runs[1] (id {runs[1].id}): config.num_leaves:")
    flagged = check_new_runs([runs[0], runs[2]], task_of_dataset=lambda i: None)
    assert len(flagged) == 1
    assert flagged[0].startswith("runs[1]")


def test_check_new_runs_takes_the_task_of_a_stored_dataset() -> None:
    run = _run({"C": 1.0}, family="linear", dataset=None, dataset_id=7)

    with pytest.raises(InvalidConfigError, match="for a regression task"):
        check_new_runs([run], task_of_dataset={7: "regression"}.get)
    assert check_new_runs([run], task_of_dataset={7: "binary"}.get) == []
