"""Bring your own family: declare XGBoost by its space, feed it runs, retrain, build it.

The end-to-end test goes through the SDK over HTTP (the real app, in-process): declare
``my_xgboost``, record 200 runs over 10 datasets (synthetic scores: a smooth function
of the config and the meta-features), retrain through the nightly scheduler, and build
``xgboost.XGBClassifier(**config)`` from the suggestions.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from hyperprior.client import Client
from hyperprior.client.errors import ConflictError, ValidationError
from hyperprior.service.app import create_app
from hyperprior.service.auth import issue_key
from hyperprior.service.scheduler import RetrainScheduler
from hyperprior.service.settings import Settings
from hyperprior.training.families import FAMILIES, find_family
from hyperprior.training.families.declared import (
    MIN_DECLARED_DATASETS,
    NotRunnableError,
    forget_declared,
)

#: XGBoost's scikit-learn arguments, with the library's own defaults.
XGB_SPACE: dict[str, Any] = {
    "params": [
        {"name": "n_estimators", "type": "int", "low": 20, "high": 300, "log": True,
         "default": 100, "minimum": 1},
        {"name": "learning_rate", "type": "float", "low": 0.01, "high": 0.5, "log": True,
         "default": 0.3, "minimum": 0, "exclusive_minimum": True},
        {"name": "max_depth", "type": "int", "low": 2, "high": 10, "default": 6, "minimum": 0},
        {"name": "subsample", "type": "float", "low": 0.5, "high": 1.0, "default": 1.0,
         "minimum": 0, "exclusive_minimum": True, "maximum": 1},
        {"name": "reg_lambda", "type": "float", "low": 0.001, "high": 10.0, "log": True,
         "default": 1.0, "minimum": 0},
        {"name": "booster", "type": "categorical", "choices": ["gbtree", "dart"],
         "default": "gbtree"},
        {"name": "rate_drop", "type": "float", "low": 0.0, "high": 0.5, "default": 0.0,
         "minimum": 0, "maximum": 1, "condition": {"parent": "booster", "values": ["dart"]}},
    ],
}  # fmt: skip


@pytest.fixture(autouse=True)
def _no_declared_family_left() -> Iterator[None]:
    # Declared families are registered process-wide; other tests must not see them.
    forget_declared()
    yield
    forget_declared()


def _app(db_url: str) -> tuple[Any, str]:
    app = create_app(Settings(database_url=db_url, retrain_in_process=False, surrogate_poll_s=3600))
    _, key = issue_key(app.state.store, "write", name="tests")
    return app, key


@pytest.fixture
def service(db_url: str) -> Iterator[TestClient]:
    app, key = _app(db_url)
    with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as http:
        yield http


@pytest.fixture
def sdk(service: TestClient) -> Client:
    return Client(http=service, backoff=0.0)


def _counts(service: TestClient) -> tuple[int, int]:
    stats = service.get("/v1/stats").json()
    return stats["runs"], stats["datasets"]


def _dataset(i: int) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(i)
    n, d = 120 + 40 * i, 3 + i % 5
    X = pd.DataFrame(rng.normal(size=(n, d)), columns=[f"x{j}" for j in range(d)])
    y = pd.Series((X["x0"] - 0.5 * X["x1"] + rng.normal(0, 0.7, n) > 0).astype(int), name="y")
    return X, y


def _config(rng: np.random.Generator) -> dict[str, Any]:
    config: dict[str, Any] = {
        "n_estimators": int(round(math.exp(rng.uniform(math.log(20), math.log(300))))),
        "learning_rate": round(math.exp(rng.uniform(math.log(0.01), math.log(0.5))), 5),
        "max_depth": int(rng.integers(2, 11)),
        "subsample": round(float(rng.uniform(0.5, 1.0)), 4),
        "reg_lambda": round(math.exp(rng.uniform(math.log(0.001), math.log(10))), 5),
        "booster": "dart" if rng.random() < 0.2 else "gbtree",
    }
    if config["booster"] == "dart":
        config["rate_drop"] = round(float(rng.uniform(0, 0.5)), 4)
    return config


def _score(config: dict[str, Any], meta: dict[str, Any]) -> float:
    # Smooth in the config and the data: deeper trees pay off with more features, the
    # best learning rate falls with more rows.
    best_depth = 2 + meta["n_features"]
    best_lr = 0.3 * 150 / meta["n_rows"]
    return (
        0.9
        - 0.004 * (config["max_depth"] - best_depth) ** 2
        - 0.02 * (math.log(config["learning_rate"]) - math.log(best_lr)) ** 2
        - 0.03 * (1.0 - config["subsample"])
    )


def _runs(description: Any, n: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        config = _config(rng)
        out.append(
            {
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"declared/{description.name}/{k}")),
                "dataset": description,
                "family": "my_xgboost",
                "config": config,
                "metric": "roc_auc",
                "direction": "maximize",
                "score": _score(config, description.meta_features),
                "cost_seconds": 1.0,
            }
        )
    return out


# ----------------------------------------------------------------------------- end to end


def test_a_declared_xgboost_family_learns_and_suggests_configs_that_build(
    service: TestClient, sdk: Client
) -> None:
    import xgboost

    declared = sdk.declare_family("my_xgboost", XGB_SPACE, description="XGBoost, our way")
    assert declared["declared"] is True
    assert declared["defaults"]["binary"]["learning_rate"] == 0.3
    assert "rate_drop" not in declared["defaults"]["binary"]  # inactive under gbtree

    descriptions = [sdk.describe(*_dataset(i), name=f"team/data_{i}") for i in range(10)]
    # From the first run: its config (the portfolio, marked so), though one run ranks
    # nothing for a surrogate.
    sdk.record(_runs(descriptions[0], 1, seed=0))
    first = sdk.suggest(descriptions[1], None, "my_xgboost", n=3)
    assert "portfolio" in [s.source for s in first]
    assert first.surrogate is None

    for i, description in enumerate(descriptions[:9]):
        sdk.record(_runs(description, 20, seed=i))
    store = service.app.state.store
    early = RetrainScheduler(store).run_once()
    mine = [r for r in early if r.family == "my_xgboost"]
    assert [r.outcome for r in mine] == ["no_data"]
    assert f"at least {MIN_DECLARED_DATASETS}" in mine[0].reason

    sdk.record(_runs(descriptions[9], 20, seed=9))
    assert sdk.stats()["by_family"]["my_xgboost"] == 200
    # The nightly scheduler, given no list, retrains the declared family too.
    results = RetrainScheduler(store).run_once()
    mine = [r for r in results if r.family == "my_xgboost" and not r.target]
    assert [r.outcome for r in mine] == ["activated"]
    assert mine[0].n_runs == 200
    assert mine[0].n_datasets == 10
    assert "my_xgboost" in service.app.state.suggestions.watcher.poll_once()

    X, y = _dataset(3)
    answer = sdk.suggest(X, y, "my_xgboost", n=5, seed=0)
    assert answer.surrogate is not None
    assert {s.source for s in answer} <= {"surrogate", "portfolio", "default"}
    assert "surrogate" in {s.source for s in answer}
    for suggestion in answer:
        model = xgboost.XGBClassifier(**suggestion.config, n_jobs=1)
        model.fit(X, y)
        assert model.predict_proba(X).shape == (len(X), 2)


# ----------------------------------------------------------------------------- declaring


def test_declaring_is_idempotent_conflicts_are_409_and_built_ins_are_refused(
    service: TestClient, sdk: Client
) -> None:
    body = {"name": "my_xgboost", "space": XGB_SPACE}
    assert service.post("/v1/families", json=body).status_code == 201
    assert service.post("/v1/families", json=body).status_code == 200

    other = {"name": "my_xgboost", "space": {"params": XGB_SPACE["params"][:2]}}
    answer = service.post("/v1/families", json=other)
    assert answer.status_code == 409
    assert "declared already with another space" in answer.json()["detail"]
    with pytest.raises(ConflictError, match="another space"):
        sdk.declare_family("my_xgboost", XGB_SPACE["params"][:2])

    for name in [n for n in FAMILIES if n != "my_xgboost"]:
        refused = service.post("/v1/families", json={"name": name, "space": XGB_SPACE})
        assert refused.status_code == 409
        assert "is a built-in family" in refused.json()["detail"]

    listed = {f["family"]: f for f in service.get("/v1/families").json()["data"]}
    assert listed["my_xgboost"]["declared"] is True
    assert listed["lightgbm"]["declared"] is False
    one = service.get("/v1/families/my_xgboost").json()
    assert [p["name"] for p in one["space"]["params"]][:2] == ["n_estimators", "learning_rate"]


@pytest.mark.parametrize(
    ("space", "loc", "message"),
    [
        ({"params": []}, ["body", "space", "params"], "non-empty list"),
        (
            {"params": [{"name": "lr", "type": "real", "low": 0, "high": 1, "default": 0.1}]},
            ["body", "space", "params", 0, "type"],
            "not one of float, int, categorical",
        ),
        (
            {"params": [{"name": "lr", "type": "float", "low": 0, "high": 1, "log": True,
                         "default": 0.1}]},
            ["body", "space", "params", 0],
            "log-scaled parameter needs low > 0",
        ),
        (
            {"params": [{"name": "depth", "type": "int", "low": 2, "high": 8}]},
            ["body", "space"],
            'give every parameter a "default"',
        ),
        (
            {"params": [{"name": "depth", "type": "int", "low": 2, "high": 8, "default": 4,
                         "condition": {"parent": "booster", "values": ["dart"]}}]},
            ["body", "space", "params", 0, "condition"],
            "must be an earlier categorical parameter",
        ),
        (
            {"params": [{"name": "depth", "type": "int", "low": 2, "high": 8, "default": 4}],
             "defaults": {"ranking": {"depth": 3}}},
            ["body", "space", "defaults"],
            "'ranking' is not a task",
        ),
        (
            {"params": [{"name": "b", "type": "categorical", "choices": ["x"], "default": "x",
                         "low": 1}]},
            ["body", "space", "params", 0],
            "unknown key(s) ['low']",
        ),
    ],
)  # fmt: skip
def test_a_bad_space_is_422_naming_the_field_and_declares_nothing(
    service: TestClient, space: dict[str, Any], loc: list[Any], message: str
) -> None:
    answer = service.post("/v1/families", json={"name": "my_model", "space": space})

    assert answer.status_code == 422
    entry = answer.json()["detail"][0]
    assert entry["loc"] == loc
    assert message in entry["msg"]
    assert service.get("/v1/families/my_model").status_code == 404
    assert find_family("my_model") is None


def test_defaults_per_task_override_the_parameters_own(service: TestClient) -> None:
    space = {**XGB_SPACE, "defaults": {"regression": {"max_depth": 4}}}
    body = service.post("/v1/families", json={"name": "my_xgboost", "space": space}).json()

    assert body["defaults"]["regression"]["max_depth"] == 4
    assert body["defaults"]["binary"]["max_depth"] == 6


# ----------------------------------------------------------------------------- runs


def test_runs_of_an_undeclared_family_are_422_saying_how_to_declare_it(
    service: TestClient, make_run: Any
) -> None:
    service.post("/v1/runs", json={"runs": [make_run(index=0)]})
    before = _counts(service)

    answer = service.post(
        "/v1/runs", json={"runs": [make_run(index=1), make_run(index=2, family="my_catboost")]}
    )

    assert answer.status_code == 422
    entry = answer.json()["detail"][0]
    assert entry["field"] == "family"
    assert entry["run_index"] == 1
    assert "declare it with POST /v1/families (or Client.declare_family)" in entry["msg"]
    assert _counts(service) == before


def test_runs_of_a_declared_family_are_checked_against_its_space(
    service: TestClient, make_run: Any
) -> None:
    service.post("/v1/families", json={"name": "my_xgboost", "space": XGB_SPACE})
    before = _counts(service)
    bad = make_run(family="my_xgboost", task="binary", config={"max_depth": "deep", "eta": 1})

    answer = service.post("/v1/runs", json={"runs": [bad]})

    assert answer.status_code == 422
    fields = {e["field"] for e in answer.json()["detail"]}
    assert fields == {"config.max_depth", "config.eta"}
    assert _counts(service) == before
    # Outside the box but not refused by a bound: stored and flagged, as for built-ins.
    wide = make_run(family="my_xgboost", task="binary", config={"n_estimators": 2000})
    stored = service.post("/v1/runs", json={"runs": [wide]})
    assert stored.status_code == 201
    assert "outside the search space" in stored.json()["warnings"][0]


def test_a_family_declared_through_one_process_is_known_to_another(
    db_url: str, make_run: Any
) -> None:
    first, key = _app(db_url)
    second = create_app(
        Settings(database_url=db_url, retrain_in_process=False, surrogate_poll_s=3600)
    )
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(first, headers=auth) as a, TestClient(second, headers=auth) as b:
        assert a.post("/v1/families", json={"name": "my_xgboost", "space": XGB_SPACE}).is_success
        forget_declared()  # what the other process knows: nothing yet
        assert "my_xgboost" not in FAMILIES

        runs = [
            make_run(family="my_xgboost", task="binary", config={"max_depth": 2 + i}, score=s)
            for i, s in enumerate((0.7, 0.9, 0.8))
        ]
        assert b.post("/v1/runs", json={"runs": runs}).status_code == 201
        body = {
            "family": "my_xgboost",
            "task": "binary",
            "dataset": {"meta_features": {"n_rows": 150, "n_features": 4, "n_classes": 2}},
        }
        answer = b.post("/v1/suggestions", json=body)
        assert answer.status_code == 200
        best = answer.json()["suggestions"][0]
        assert best["source"] == "portfolio"
        assert best["config"]["max_depth"] == 3

        forget_declared()
        assert b.get("/v1/families/my_xgboost").json()["declared"] is True
        second.state.suggestions.watcher.poll_once()  # the poll loads new declarations
        assert "my_xgboost" in FAMILIES


def test_the_service_never_runs_a_declared_family(service: TestClient) -> None:
    from hyperprior.training.families import evaluate

    service.post("/v1/families", json={"name": "my_xgboost", "space": XGB_SPACE})
    family = find_family("my_xgboost")
    assert family is not None
    with pytest.raises(NotRunnableError, match="cannot train it"):
        family.make_estimator({}, "binary", 0)
    X, y = _dataset(0)
    result = evaluate("my_xgboost", {}, X, y, "binary")
    assert result.status == "failed"
    assert "declared family" in str(result.error)
    # A refinement of it is refused saying why, for a catalog dataset and an upload.
    before = len(service.get("/v1/refinements").json()["data"])
    answer = service.post(
        "/v1/refinements", json={"family": "my_xgboost", "dataset": "sklearn/wine"}
    )
    assert answer.status_code == 422
    assert "my_xgboost' is a declared family: the service cannot run it" in answer.text
    csv = X.assign(label=y).to_csv(index=False).encode()
    answer = service.post(
        "/v1/refinements",
        files={"file": ("data.csv", csv, "text/csv")},
        data={"target": "label", "family": "my_xgboost"},
    )
    assert answer.status_code == 422
    assert "the service cannot run it" in answer.text
    assert len(service.get("/v1/refinements").json()["data"]) == before


def test_unknown_family_suggestions_say_how_to_declare(service: TestClient) -> None:
    body = {
        "family": "my_catboost",
        "task": "binary",
        "dataset": {"meta_features": {"n_rows": 150, "n_features": 4, "n_classes": 2}},
    }
    answer = service.post("/v1/suggestions", json=body)

    assert answer.status_code == 422
    assert "POST /v1/families" in answer.text


# ----------------------------------------------------------------------------- SDK


def test_the_sdk_declares_in_process_too(store: Any) -> None:
    client = Client.local(store=store)
    try:
        declared = client.declare_family(
            "my_xgboost", XGB_SPACE["params"], defaults={"binary": {"max_depth": 3}}
        )
        assert declared["defaults"]["binary"]["max_depth"] == 3
        with pytest.raises(ValidationError, match="log-scaled"):
            client.declare_family(
                "my_other", [{"name": "a", "type": "float", "low": 0, "high": 1, "log": True}]
            )
        with pytest.raises(ConflictError, match="built-in"):
            client.declare_family("lightgbm", XGB_SPACE)
    finally:
        client.close()


def test_an_optuna_study_declares_a_family(sdk: Client, service: TestClient) -> None:
    import optuna

    from hyperprior.client.optuna_integration import declare_family_from_study, space_from_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("learning_rate", 1e-3, 0.3, log=True)
        depth = trial.suggest_int("max_depth", 2, 10)
        booster = trial.suggest_categorical("booster", ["gbtree", "dart"])
        return -abs(math.log(lr) + 3) - depth / 10 + (booster == "gbtree")

    study.optimize(objective, n_trials=5)
    space = space_from_study(study, defaults={"learning_rate": 0.3})
    by_name = {p["name"]: p for p in space["params"]}
    assert by_name["learning_rate"] == {
        "name": "learning_rate", "type": "float", "low": 1e-3, "high": 0.3, "log": True,
        "default": 0.3,
    }  # fmt: skip
    assert by_name["max_depth"]["default"] == 6  # the middle of 2..10
    assert by_name["booster"]["choices"] == ["gbtree", "dart"]

    declared = declare_family_from_study(sdk, "my_optuna_model", study)
    assert declared["declared"] is True
    listed = service.get("/v1/families/my_optuna_model").json()
    assert {p["name"] for p in listed["space"]["params"]} == {
        "learning_rate",
        "max_depth",
        "booster",
    }


# ----------------------------------------------------------------------------- CLI


def test_the_cli_declares_from_a_file_and_lists(
    db_url: str, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from hyperprior.service.cli import main

    path = tmp_path / "my_xgboost.json"
    path.write_text(json.dumps({"name": "my_xgboost", "space": XGB_SPACE}))

    assert main(["families", "declare", str(path), "--database-url", db_url]) == 0
    assert main(["families", "declare", str(path), "--database-url", db_url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("declared my_xgboost (7 parameters: n_estimators,")
    assert out[1].startswith("already declared with this space: my_xgboost")

    assert main(["families", "list", "--database-url", db_url]) == 0
    listed = capsys.readouterr().out
    assert "lightgbm             built-in" in listed
    assert "my_xgboost           declared" in listed


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not JSON"),
        ('{"name": "my_xgboost"}', 'expected {"name": ..., "space"'),
        ('{"name": "lightgbm", "space": {"params": []}}', "is a built-in family"),
        ('{"name": "my_x", "space": {"params": [{"name": "a", "type": "float"}]}}',
         "low is required"),
    ],
)  # fmt: skip
def test_the_cli_refuses_a_bad_declaration_in_one_line(
    db_url: str, tmp_path: Any, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    from hyperprior.service.cli import main

    path = tmp_path / "family.json"
    path.write_text(content)

    assert main(["families", "declare", str(path), "--database-url", db_url]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert message in err
    assert main(["families", "list", "--database-url", db_url]) == 0
    assert "declared" not in capsys.readouterr().out


def test_a_refinement_of_a_declared_family_is_refused(service: TestClient) -> None:
    service.post("/v1/families", json={"name": "my_xgboost", "space": XGB_SPACE})

    answer = service.post(
        "/v1/refinements", json={"dataset": "sklearn/wine", "family": "my_xgboost"}
    )

    assert answer.status_code == 422
    assert "family" in answer.text


def test_the_retrain_command_retrains_declared_families_and_names_unknown_ones(
    service: TestClient, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from hyperprior.service.cli import main

    body = {"name": "my_xgboost", "space": XGB_SPACE}
    assert service.post("/v1/families", json=body).status_code == 201
    forget_declared()  # the command is another process: it knows only the store
    # No runs yet: the declared family is retrained with the others and has no data.
    assert main(["retrain", "--json", "--database-url", db_url]) == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["family"]: r["outcome"] for r in results}["my_xgboost"] == "no_data"
    assert main(["retrain", "--family", "my_xgboost", "--database-url", db_url]) == 0
    assert "my_xgboost" in capsys.readouterr().out
    assert main(["retrain", "--family", "catboost", "--database-url", db_url]) == 2
    err = capsys.readouterr().err
    assert "unknown family 'catboost'" in err
    assert "my_xgboost" in err  # the known ones are listed, the declared one too
