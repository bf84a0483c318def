"""The Docker image, reproduced without Docker: a wheel built from what the Dockerfile copies.

There is no Docker engine where the tests run, so the image's contents are rebuilt the
way its ``pip install .`` builds them: the Dockerfile's ``COPY`` sources (less what
``.dockerignore`` keeps out of the context) are copied into an empty directory, a wheel
is built from it, and the wheel is installed into a fresh virtual environment. The
project's dependencies cannot be installed offline, so that environment reads them from
the test interpreter's site-packages through a ``.pth`` line, which adds the directory
only: the editable install of the checkout (a ``.pth`` import hook in that same
directory) is not loaded. Every command then runs from a directory outside the checkout,
so a package the image lacks fails here as it would in the image. The wheel and the venv
are made by tests/wheel_venv.py (shared with tests/test_sdk_install.py).

What a wheel cannot show (the non-root user, the data volume) is checked by reading the
Dockerfile and docker-compose.yml.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sysconfig
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from wheel_venv import (
    DOCKERFILE,
    ROOT,
    build_wheel,
    dockerfile_copies,
    install_wheel,
    instructions,
    run,
)

CSV_RUNS = (
    "dataset,task,n_rows,n_features,n_classes,family,param_learning_rate,param_num_leaves,"
    "metric,score\n"
    "churn,binary,1000,12,2,lightgbm,0.05,31,roc_auc,0.81\n"
    "churn,binary,1000,12,2,lightgbm,0.2,63,roc_auc,0.78\n"
)
# Lists the command paths of the installed CLI (run by the installed interpreter).
LIST_COMMANDS = """
import argparse, json
from hyperprior.service.cli import build_parser

def walk(parser, path):
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, [*path, name])

print(json.dumps(list(walk(build_parser(), []))))
"""
WHERE = """
import json, sys
import hyperprior.client as client, hyperprior.db as db
import hyperprior.service as service, hyperprior.training as training
files = [m.__file__ for m in (client, db, service, training)]
print(json.dumps({"path": sys.path, "files": files}))
"""


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment with the wheel built from the Dockerfile's COPY sources."""
    base = tmp_path_factory.mktemp("image")
    venv = base / "venv"
    purelib = install_wheel(build_wheel(base), venv)
    (purelib / "_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


@pytest.fixture
def outside(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A working directory outside the checkout and an environment without Python paths."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "HYPERPRIOR_"))}
    env["HYPERPRIOR_DATABASE_URL"] = f"sqlite:///{tmp_path / 'unused.db'}"
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    return cwd, env


def test_the_dockerfile_copies_every_package_of_the_project() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_dir = pyproject["tool"]["setuptools"]["package-dir"]
    packages = set(package_dir.values())
    copied = {source for sources, _ in dockerfile_copies() for source in sources}
    assert packages <= copied, f"the Dockerfile does not copy {sorted(packages - copied)}"
    assert {"pyproject.toml", "README.md"} <= copied


def test_the_image_runs_as_a_user_who_can_write_its_data_volume() -> None:
    steps = instructions(DOCKERFILE)
    users = [rest for keyword, rest in steps if keyword == "USER"]
    assert users, "no USER: the server would run as root"
    assert users[-1] not in ("root", "0"), "the server must not run as root"
    user = users[-1]
    env = dict(
        part.split("=", 1)
        for keyword, rest in steps
        if keyword == "ENV"
        for part in shlex.split(rest)
    )
    data_dir = env.get("HYPERPRIOR_DATA_DIR")
    assert data_dir is not None, "HYPERPRIOR_DATA_DIR is not set: uploads go to ./data"
    assert data_dir.startswith("/"), "uploads need an absolute, writable directory"
    volumes = [json.loads(rest) for keyword, rest in steps if keyword == "VOLUME"]
    assert any(data_dir in v for v in volumes), f"{data_dir} is not a VOLUME"
    runs = " ".join(rest for keyword, rest in steps if keyword == "RUN")
    assert f"chown -R {user}:{user} {data_dir}" in runs, f"{data_dir} is not owned by {user}"
    workdirs = [rest for keyword, rest in steps if keyword == "WORKDIR"]
    # The default SQLite database (./hyperprior.db) is created in the working directory.
    assert workdirs[-1] == data_dir

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    api_volumes = compose["services"]["api"].get("volumes", [])
    named = [v.split(":")[0] for v in api_volumes if v.split(":")[1] == data_dir]
    assert named, f"the api mounts no volume at {data_dir}"
    assert named[0] in compose["volumes"], "the api's uploads need a named volume"


def test_the_installed_wheel_imports_nothing_from_the_checkout(
    image: Path, outside: tuple[Path, dict[str, str]]
) -> None:
    cwd, env = outside
    where = run([str(image / "bin" / "python"), "-c", WHERE], cwd, env)
    assert where.returncode == 0, where.stderr[-2000:]
    found = json.loads(where.stdout)
    site = str(image)
    assert all(f.startswith(site) for f in found["files"]), found["files"]
    assert not [p for p in found["path"] if p and Path(p).resolve() == ROOT], found["path"]


def test_every_command_answers_help_from_the_wheel(
    image: Path, outside: tuple[Path, dict[str, str]]
) -> None:
    cwd, env = outside
    listed = run([str(image / "bin" / "python"), "-c", LIST_COMMANDS], cwd, env)
    assert listed.returncode == 0, listed.stderr[-2000:]
    paths = json.loads(listed.stdout)
    for expected in (["import", "csv"], ["serve"], ["keys", "create"], ["db", "seed"]):
        assert expected in paths

    def helped(path: list[str]) -> tuple[list[str], subprocess.CompletedProcess[str]]:
        return path, run([str(image / "bin" / "hyperprior"), *path, "--help"], cwd, env)

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(helped, paths))
    failed = {
        " ".join(path) or "(top)": done.stderr[-500:]
        for path, done in answers
        if done.returncode != 0 or "usage: hyperprior" not in done.stdout
    }
    assert not failed, failed


def test_import_migrate_seed_and_suggest_from_the_wheel(
    image: Path, outside: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """What the compose services run: ``db upgrade`` and ``db seed`` (migrate), and the CLI."""
    cwd, env = outside
    hyperprior = str(image / "bin" / "hyperprior")
    runs = tmp_path / "runs.csv"
    runs.write_text(CSV_RUNS)
    database = ["--database-url", f"sqlite:///{tmp_path / 'image.db'}"]

    dry = run([hyperprior, "import", "csv", str(runs), "--dry-run", *database], cwd, env)
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "read 2 runs" in dry.stdout
    assert "nothing recorded" in dry.stdout

    for command in (["db", "upgrade"], ["db", "seed"]):
        done = run([hyperprior, *command, *database], cwd, env, timeout=300)
        assert done.returncode == 0, (command, done.stderr[-2000:])

    rng = np.random.default_rng(0)
    data = pd.DataFrame(rng.normal(size=(200, 4)), columns=list("abcd"))
    data["y"] = (data["a"] + data["b"] > 0).astype(int)
    data.to_csv(tmp_path / "data.csv", index=False)
    suggested = run(
        [hyperprior, "suggest", str(tmp_path / "data.csv"), "--target", "y",
         "--family", "lightgbm", "--n", "2", "--json", *database],
        cwd, env,
    )  # fmt: skip
    assert suggested.returncode == 0, suggested.stderr[-2000:]
    assert "learning_rate" in suggested.stdout
