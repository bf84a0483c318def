"""Fixtures of the SDK tests: a real app (ASGI, in-process) with a write key, and data."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from hyperprior.client import Client
from hyperprior.db.store import Store
from hyperprior.service.app import create_app
from hyperprior.service.auth import issue_key
from hyperprior.service.settings import Settings


@pytest.fixture
def backend() -> str:
    """SQLite unless a test asks for every backend (the store contract is tested in db/)."""
    return "sqlite"


def app_settings() -> Settings:
    """Settings of an app that runs no background work (the store is given)."""
    return Settings(
        database_url="sqlite://",
        retrain_in_process=False,
        surrogate_poll_s=3600,
        jobs_in_process=False,
        gc_tuning=False,
    )


@pytest.fixture
def service(store: Store, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The real app over the test store, called in-process, with a write key."""
    monkeypatch.delenv("HYPERPRIOR_API_KEY", raising=False)
    _, key = issue_key(store, "write", name="sdk tests")
    with TestClient(create_app(app_settings(), store=store)) as http:
        http.headers["Authorization"] = f"Bearer {key}"
        yield http


@pytest.fixture
def http_client(service: TestClient) -> Client:
    """An SDK client talking HTTP to the app (no retry delays)."""
    client = Client(http=service, backoff=0.0)
    client._sleep = lambda seconds: None
    return client


@pytest.fixture
def local_client(store: Store) -> Client:
    """An SDK client in-process on the same store."""
    return Client.local(store=store)


@pytest.fixture
def binary_data() -> tuple[pd.DataFrame, pd.Series]:
    """200 rows, 5 numeric features, a binary target that depends on two of them."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(200, 5)), columns=[f"x{i}" for i in range(5)])
    y = pd.Series((X["x0"] + 0.5 * X["x1"] + rng.normal(0, 0.5, 200) > 0).astype(int), name="y")
    return X, y
