"""Client.refine: locally (trials here, runs recorded through the SDK) and as a service job."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from hyperprior.client import Client, ConflictError, NotFoundError, Refinement, ValidationError
from hyperprior.db.store import Store
from hyperprior.service.app import create_app
from hyperprior.service.auth import issue_key
from hyperprior.service.settings import Settings
from hyperprior.training.retrain import install_shipped
from hyperprior.training.seed import SEED_DIR


@pytest.fixture
def shipped(store: Store) -> Store:
    """The store with the shipped surrogates active (real suggestions, no training)."""
    install_shipped(store, SEED_DIR / "surrogates")
    return store


def test_local_refinement_records_verification_runs(
    http_client: Client, shipped: Store, binary_data: tuple[pd.DataFrame, pd.Series]
) -> None:
    X, y = binary_data
    progress: list[dict[str, Any]] = []
    result = http_client.refine(
        X, y, "lightgbm", budget=8, n=3, folds=3, name="tiny", progress=progress.append,
        configs=[{"n_estimators": 20, "num_leaves": 7}],
    )  # fmt: skip
    assert isinstance(result, Refinement)
    assert result.metric == "roc_auc"
    assert result.config is not None
    assert result.score is not None
    assert result.default_score is not None
    assert result.score >= result.default_score  # the control is measured on the same folds
    assert result.improvement == pytest.approx(result.score - result.default_score)
    measured = [t for t in result.trials if t["status"] != "cut"]
    assert progress
    assert progress[-1]["trials_done"] == len(result.trials)
    runs = shipped.list_runs(source="verification", limit=1000)
    assert runs.count == len(measured)
    assert {r.id for r in runs.data} == {uuid.UUID(t["run_id"]) for t in measured}
    assert shipped.get_dataset(runs.data[0].dataset_id).name == "tiny"
    with pytest.raises(ValidationError, match="budget must be positive"):
        http_client.refine(X, y, "lightgbm", budget=0)
    with pytest.raises(ValidationError, match="needs a service"):
        Client.local(store=shipped).refine(X, y, "lightgbm", budget=1, local=False)


@pytest.fixture
def job_service(shipped: Store, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        database_url="sqlite://",
        retrain_in_process=False,
        surrogate_poll_s=3600,
        gc_tuning=False,
        jobs_in_process=True,
        job_poll_s=0.2,
        refine_workers=1,
        refine_folds=3,
        data_dir=tmp_path / "data",
    )
    _, key = issue_key(shipped, "write", name="refine tests")
    with TestClient(create_app(settings, store=shipped)) as http:
        http.headers["Authorization"] = f"Bearer {key}"
        yield http


def test_remote_refinement_uploads_and_polls(
    job_service: TestClient, shipped: Store, binary_data: tuple[pd.DataFrame, pd.Series]
) -> None:
    X, y = binary_data
    client = Client(http=job_service)
    seen: list[dict[str, Any]] = []
    result = client.refine(
        X, y, "lightgbm", budget=4, local=False, n=2, name="uploaded", progress=seen.append,
        poll_interval=0.3,
    )  # fmt: skip
    assert result.metric == "roc_auc"
    assert result.score is not None
    assert result.raw["trials"]
    assert seen
    assert seen[-1]["phase"] == "done"
    assert shipped.list_runs(source="verification", limit=1).count >= 1


def test_ctrl_c_while_polling_cancels_the_service_job(
    job_service: TestClient, shipped: Store, binary_data: tuple[pd.DataFrame, pd.Series]
) -> None:
    X, y = binary_data
    client = Client(http=job_service)

    def interrupt(progress: dict[str, Any]) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        client.refine(X, y, "lightgbm", budget=60, local=False, n=2, progress=interrupt)

    [job] = job_service.get("/v1/refinements").json()["data"]
    assert job["status"] == "cancelled"
    assert "refine tests" in job["error"]
    with pytest.raises(ConflictError, match="already cancelled"):
        client.cancel_refinement(job["id"])
    with pytest.raises(NotFoundError):
        client.cancel_refinement(str(uuid.uuid4()))
