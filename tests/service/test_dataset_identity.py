"""One dataset, one record: the SDK, the CSV importer and the CLI agree on it (issue 17)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from hyperprior.client import Client, ConflictError
from hyperprior.db.store import Store
from hyperprior.service.app import create_app
from hyperprior.service.auth import issue_key
from hyperprior.service.cli import main
from hyperprior.service.settings import Settings

NAME = "nmes_insurance"
CSV_HEADER = "dataset,task,n_rows,n_features,{classes}family,param_learning_rate,metric,score\n"


@pytest.fixture
def service(store: Store, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.delenv("HYPERPRIOR_API_KEY", raising=False)
    settings = Settings(
        database_url="sqlite://",
        retrain_in_process=False,
        surrogate_poll_s=3600,
        jobs_in_process=False,
        gc_tuning=False,
    )
    _, key = issue_key(store, "write", name="identity tests")
    with TestClient(create_app(settings, store=store)) as http:
        http.headers["Authorization"] = f"Bearer {key}"
        yield http


@pytest.fixture
def data() -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(120, 4)), columns=[f"x{i}" for i in range(4)])
    y = pd.Series((X["x0"] + rng.normal(0, 0.5, 120) > 0).astype(int), name="y")
    return X, y


def _sdk_run(dataset: Any, index: int) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "family": "lightgbm",
        "config": {"learning_rate": 0.05 + index / 100},
        "metric": "roc_auc",
        "direction": "maximize",
        "score": 0.8,
    }


def _csv(path: Path, *, n_rows: int, with_classes: bool, rate: float) -> Path:
    classes = "n_classes," if with_classes else ""
    row = f"{NAME},binary,{n_rows},4,{'2,' if with_classes else ''}lightgbm,{rate},roc_auc,0.7\n"
    path.write_text(CSV_HEADER.format(classes=classes) + row)
    return path


def _study(storage: str) -> None:
    study = optuna.create_study(study_name="nmes", storage=storage, direction="maximize")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(
        lambda t: 0.9 - t.suggest_float("learning_rate", 0.01, 0.3, log=True), n_trials=3
    )


def _state(service: TestClient) -> tuple[Any, Any]:
    return service.get("/v1/datasets").json(), service.get("/v1/stats").json()


def test_the_sdk_the_csv_importer_and_the_cli_record_one_dataset(
    service: TestClient,
    store: Store,
    db_url: str,
    tmp_path: Path,
    data: tuple[pd.DataFrame, pd.Series],
    capsys: pytest.CaptureFixture[str],
) -> None:
    X, y = data
    sdk = Client(http=service, backoff=0.0)
    description = sdk.describe(X, y, name=NAME)
    table = tmp_path / "data.csv"
    X.assign(y=y).to_csv(table, index=False)
    storage = f"sqlite:///{tmp_path}/study.db"
    _study(storage)

    # 1. The SDK: 25 meta-features and a hash of the data; the answer names the id.
    recorded = sdk.record([_sdk_run(description, i) for i in range(2)])
    dataset_id = recorded.dataset_id
    assert dataset_id is not None
    # 2. The CSV importer, without and with n_classes.
    for i, with_classes in enumerate((False, True)):
        path = _csv(tmp_path / f"runs{i}.csv", n_rows=120, with_classes=with_classes, rate=0.1 + i)
        assert main(["import", "csv", str(path), "--database-url", db_url, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["dataset_ids"] == [dataset_id]
    # 3. The CLI, describing the data from its file.
    optuna_args = ["import", "optuna", "--storage", storage, "--study", "nmes"]
    optuna_args += ["--family", "lightgbm", "--dataset", NAME, "--database-url", db_url]
    assert main([*optuna_args, "--data", str(table), "--target", "y"]) == 0
    assert f"(dataset {dataset_id}): 3 new" in capsys.readouterr().out

    (only,) = store.list_datasets(name=NAME).data
    assert only.id == dataset_id
    assert only.data_sha256 == description.data_sha256
    assert (only.n_rows, only.n_features, only.n_classes) == (120, 4, 2)
    assert store.list_runs(dataset_id=dataset_id).count == 2 + 2 + 3
    # The CLI by name alone, which used to fail with "3 stored datasets are named ...".
    assert main([*optuna_args, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["duplicates"], summary["dataset_ids"]) == (3, [dataset_id])
    # The id is reusable as such.
    again = sdk.record([{**_sdk_run(None, 9), "dataset_id": dataset_id}])
    assert (again.inserted, again.dataset_ids) == (1, [dataset_id])


def test_other_data_under_a_stored_name_is_a_409_that_changes_nothing(
    service: TestClient,
    db_url: str,
    tmp_path: Path,
    data: tuple[pd.DataFrame, pd.Series],
    capsys: pytest.CaptureFixture[str],
) -> None:
    X, y = data
    sdk = Client(http=service, backoff=0.0)
    stored_id = sdk.record([_sdk_run(sdk.describe(X, y, name=NAME), 0)]).dataset_id
    before = _state(service)

    # Over HTTP: fewer rows under the same name.
    other = {"name": NAME, "task": "binary", "meta_features": {"n_rows": 99, "n_features": 4}}
    run = {**_sdk_run(other, 1), "id": str(uuid.uuid4()), "source": "user"}
    answer = service.post("/v1/runs", json={"runs": [{**run, "fidelity": 1, "cost_seconds": 0}]})
    assert answer.status_code == 409
    body = answer.json()
    assert body["dataset_id"] == stored_id
    assert f"id {stored_id} (version 1): n_rows: stored 120, sent 99" in body["detail"]
    assert '"version": 2' in body["detail"]
    # Through the SDK: the same rows and columns, other values (the data's hash differs).
    changed = sdk.describe(X.assign(x0=X["x0"] + 1), y, name=NAME)
    with pytest.raises(ConflictError, match="data_sha256: stored"):
        sdk.record([_sdk_run(changed, 2)])
    # Through the CLI: one line, exit 2.
    path = _csv(tmp_path / "other.csv", n_rows=99, with_classes=True, rate=0.2)
    assert main(["import", "csv", str(path), "--database-url", db_url]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("hyperprior: error: ")
    assert "n_rows: stored 120, sent 99" in err

    assert _state(service) == before


def test_a_new_version_is_asked_for_and_the_cli_tells_versions_apart(
    service: TestClient,
    db_url: str,
    tmp_path: Path,
    data: tuple[pd.DataFrame, pd.Series],
    capsys: pytest.CaptureFixture[str],
) -> None:
    X, y = data
    sdk = Client(http=service, backoff=0.0)
    first = sdk.record([_sdk_run(sdk.describe(X, y, name=NAME), 0)]).dataset_id
    fewer = sdk.describe(X.head(60), y.head(60), name=NAME, version=2)

    second = sdk.record([_sdk_run(fewer, 1)]).dataset_id
    path = _csv(tmp_path / "v2.csv", n_rows=60, with_classes=True, rate=0.3)
    assert main(["import", "csv", str(path), "--database-url", db_url, "--json"]) == 0

    assert json.loads(capsys.readouterr().out)["dataset_ids"] == [second]
    assert second != first
    versions = {d["version"]: d["id"] for d in service.get("/v1/datasets").json()["data"]}
    assert versions == {1: first, 2: second}
    storage = f"sqlite:///{tmp_path}/study.db"
    _study(storage)
    args = ["import", "optuna", "--storage", storage, "--study", "nmes", "--family", "lightgbm"]
    args += ["--dataset", NAME, "--database-url", db_url]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"id {first} (binary, version 1, 120 rows), id {second} (binary, version 2" in err
    assert "--dataset-version" in err
    assert main([*args, "--dataset-version", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dataset_ids"] == [second]
