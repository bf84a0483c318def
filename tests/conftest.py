"""Shared fixtures: a fresh, migrated database per test on every backend.

* ``sqlite``: a template database is migrated once per session and copied per test.
* ``postgres``: a fresh schema per test in the database given by
  ``HYPERPRIOR_TEST_POSTGRES_URL`` (default: the local ``test`` database), selected
  through ``search_path``, migrated, and dropped at teardown. When PostgreSQL cannot
  be reached these tests fail with a message saying so; they are skipped only when
  ``HYPERPRIOR_TEST_POSTGRES=skip`` is set explicitly.

Tests that use ``db_url``, ``engine`` or ``store`` run once per backend; a test can
pin one with ``@pytest.mark.parametrize("backend", ["sqlite"])``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, make_url, text

# Tests train many small surrogates: compiling each one's trees in the background would
# load the CPU and write to the user's cache. tests/training/test_compiled.py turns
# compiled trees on with a cache of its own.
os.environ.setdefault("HYPERPRIOR_COMPILED_TREES", "off")
# Nor should an app started on a seeded database fit its metric surrogates behind a
# test's back; the catch-up tests in tests/service/test_surrogates_api.py turn it on.
os.environ.setdefault("HYPERPRIOR_RETRAIN_CATCH_UP", "false")

from hyperprior.db import migrate  # noqa: E402
from hyperprior.db.engine import make_engine
from hyperprior.db.store import Store

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
# The packages whose versions every test log shows (as `make`'s install step does).
KEY_PACKAGES = (
    "lightgbm", "scikit-learn", "pandas", "numpy", "tensorflow-cpu", "fastapi", "sqlalchemy",
)  # fmt: skip
LOCK = Path(__file__).resolve().parents[1] / "requirements-test.lock"


def pytest_report_header() -> str:
    """The installed versions of the key packages, and whether they are requirements-test.lock's."""
    from importlib import metadata

    pins = dict(re.findall(r"(?m)^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", LOCK.read_text()))
    pins = {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in pins.items()}
    shown = []
    for name in KEY_PACKAGES:
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "missing"
        locked = pins.get(name, "unpinned")
        shown.append(f"{name} {installed}" + ("" if installed == locked else f" (lock: {locked})"))
    return f"{LOCK.name}: " + ", ".join(shown)


def postgres_url() -> str:
    """The PostgreSQL server the tests use."""
    return os.environ.get("HYPERPRIOR_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Engine]:
    """An engine on the test PostgreSQL database, or a clear failure if it is down."""
    if os.environ.get("HYPERPRIOR_TEST_POSTGRES", "").lower() == "skip":
        pytest.skip("PostgreSQL tests disabled by HYPERPRIOR_TEST_POSTGRES=skip")
    url = postgres_url()
    engine = make_engine(url, pool_size=2, connect_timeout_s=3)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as error:
        engine.dispose()
        pytest.fail(
            f"PostgreSQL is unreachable at {make_url(url).render_as_string()} ({error}).\n"
            "Start it (pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start), "
            "point HYPERPRIOR_TEST_POSTGRES_URL at another server, or set "
            "HYPERPRIOR_TEST_POSTGRES=skip to skip the PostgreSQL tests.",
            pytrace=False,
        )
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database migrated to head once per session."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend under test."""
    return str(request.param)


@contextmanager
def _postgres_schema_url(admin: Engine) -> Iterator[str]:
    """Create a fresh schema; yield a URL that uses it; drop it afterwards."""
    schema = f"hp_test_{uuid.uuid4().hex[:12]}"
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(postgres_url()).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            # Idle connections left open on the schema hold no locks; one stuck in a
            # transaction would, so do not wait for it forever.
            conn.execute(text("SET LOCAL lock_timeout = '20s'"))
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture
def blank_db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of an empty database (no schema) on the backend under test."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'blank.db'}"
        return
    admin = request.getfixturevalue("postgres_admin")
    with _postgres_schema_url(admin) as url:
        yield url


@pytest.fixture
def db_url(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, sqlite_template: Path
) -> Iterator[str]:
    """URL of a fresh database migrated to head on the backend under test."""
    if backend == "sqlite":
        path = tmp_path / "test.db"
        shutil.copyfile(sqlite_template, path)
        yield f"sqlite:///{path}"
        return
    admin = request.getfixturevalue("postgres_admin")
    with _postgres_schema_url(admin) as url:
        migrate.upgrade(url)
        yield url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on a fresh migrated database."""
    engine = make_engine(db_url, pool_size=5)
    yield engine
    engine.dispose()


class FakeClock:
    """A controllable UTC clock for the store."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self.now = start or dt.datetime(2025, 1, 1, 12, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock, starting at 2025-01-01 12:00 UTC."""
    return FakeClock()


@pytest.fixture
def store(engine: Engine, clock: FakeClock) -> Store:
    """A store on a fresh migrated database, driven by the fake clock."""
    return Store(engine, clock=clock)


def run_payload(
    *,
    index: int = 0,
    run_id: uuid.UUID | None = None,
    dataset: str = "iris",
    task: str = "multiclass",
    family: str = "lightgbm",
    score: float | None = 0.9,
    **overrides: Any,
) -> dict[str, Any]:
    """A valid JSON run for the HTTP API (override any field)."""
    meta: dict[str, Any] = {"n_rows": 150, "n_features": 4, "skewness_mean": 0.25}
    if task != "regression":
        meta["n_classes"] = 2 if task == "binary" else 3
    payload: dict[str, Any] = {
        "id": str(run_id or uuid.uuid4()),
        "dataset": {"name": dataset, "task": task, "meta_features": meta},
        "family": family,
        "config": {"learning_rate": 0.05 + index * 1e-4, "num_leaves": 31 + index % 50},
        "metric": "accuracy" if task != "regression" else "rmse",
        "direction": "maximize" if task != "regression" else "minimize",
        "score": score,
        "fidelity": 1.0,
        "cost_seconds": 1.5,
        "source": "user",
        "status": "ok",
        "error": None,
    }
    payload.update(overrides)
    return payload


@pytest.fixture
def make_run() -> Callable[..., dict[str, Any]]:
    """Factory of valid JSON runs (see `run_payload`)."""
    return run_payload
