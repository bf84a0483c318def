"""The locks: what they pin, that the installed versions are theirs, and that the seed agrees.

``requirements.lock`` pins the SDK's and the server extra's dependencies (the Dockerfile
installs it); ``requirements-test.lock`` pins those and the test extra's (``make`` installs it),
both with hashes, made by ``make lock``. The shipped seed records the versions it was
measured with (``training/seed/manifest.json``); they must be the lock's, so an upgrade
of the lock and a re-seed go together.
"""

from __future__ import annotations

import json
import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from wheel_venv import closure as _closure
from wheel_venv import normalize as _name

ROOT = Path(__file__).resolve().parents[1]
SERVER_LOCK = ROOT / "requirements.lock"
TEST_LOCK = ROOT / "requirements-test.lock"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# The base dependencies are the SDK's; the locks add the server extra's (`make lock`).
SERVER_EXTRA = PYPROJECT["optional-dependencies"]["server"]
KEY_PACKAGES = (
    "lightgbm", "scikit-learn", "pandas", "numpy", "tensorflow-cpu", "fastapi", "sqlalchemy",
)  # fmt: skip
# Measured by the seed: the packages that decide its scores (training/seed.py's _versions).
SEED_PACKAGES = {"lightgbm", "xgboost-cpu", "scikit-learn", "tensorflow-cpu", "pandas", "numpy"}


def _pins(lock: Path) -> dict[str, str]:
    return {
        _name(name): version
        for name, version in re.findall(
            r"(?m)^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", lock.read_text()
        )
    }


def _entries(lock: Path) -> list[str]:
    """Each requirement of the lock, its continuation lines joined, comments dropped."""
    text = re.sub(r"(?m)\s*#.*$", "", lock.read_text()).replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("lock", "requirements"),
    [
        pytest.param(SERVER_LOCK, PYPROJECT["dependencies"] + SERVER_EXTRA, id="server"),
        pytest.param(
            TEST_LOCK,
            PYPROJECT["dependencies"] + SERVER_EXTRA + PYPROJECT["optional-dependencies"]["test"],
            id="test",
        ),
    ],
)
def test_the_lock_pins_everything_pyproject_needs(lock: Path, requirements: list[str]) -> None:
    pins = _pins(lock)
    needed = _closure(requirements)
    missing = sorted(set(needed) - set(pins))
    assert not missing, f"{lock.name} lacks {missing}: run `make lock`"
    outside = [
        f"{name}=={pins[name]} (wants {r})"
        for name, reqs in needed.items()
        for r in reqs
        if not r.specifier.contains(pins[name], prereleases=True)
    ]
    assert not outside, f"{lock.name} pins versions its requirements exclude: {outside}"


def test_every_pin_is_exact_and_hashed() -> None:
    for lock in (SERVER_LOCK, TEST_LOCK):
        for entry in _entries(lock):
            assert re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*==\S+ ", entry), entry
            assert "--hash=sha256:" in entry, f"{lock.name}: no hash for {entry.split()[0]}"


def test_the_test_lock_pins_the_server_lock_unchanged() -> None:
    server, test = _pins(SERVER_LOCK), _pins(TEST_LOCK)
    differ = {n: (v, test.get(n)) for n, v in server.items() if test.get(n) != v}
    assert not differ, f"requirements-test.lock differs from requirements.lock: {differ}"
    assert set(KEY_PACKAGES) <= set(server)


def test_the_installed_versions_are_the_locked_ones() -> None:
    """Every pin of the lock `make` installs, the key packages named first."""
    pins = _pins(TEST_LOCK)
    wrong = {}
    for name in sorted(pins, key=lambda n: (n not in KEY_PACKAGES, n)):
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "missing"
        if installed != pins[name]:
            wrong[name] = f"installed {installed}, locked {pins[name]}"
    assert not wrong, f"not the versions of {TEST_LOCK.name} (rerun make): {wrong}"


def test_the_seed_records_the_locked_versions() -> None:
    manifest = json.loads((ROOT / "training" / "seed" / "manifest.json").read_text())
    recorded = {_name(k): v for k, v in manifest["versions"].items()}
    assert SEED_PACKAGES <= set(recorded), f"the seed records only {sorted(recorded)}"
    pins = _pins(SERVER_LOCK)
    differ = {
        name: f"seed {version}, lock {pins.get(name)}"
        for name, version in recorded.items()
        if name not in ("python", "hyperprior") and pins.get(name) != version
    }
    assert not differ, (
        f"the seed was measured with other versions than requirements.lock pins: {differ}; "
        "re-seed with the locked versions, or lock the seed's"
    )
    # The locks are resolved for CPython 3.11 (`make lock`), as the seed was measured.
    assert recorded["python"].split(".")[:2] == ["3", "11"]


def test_make_and_the_dockerfile_install_from_the_locks() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"(?m)^LOCK := requirements-test\.lock$", makefile)
    assert "pip install --quiet --require-hashes -r $(LOCK)" in makefile
    assert "pip install --quiet --no-deps -e ." in makefile
    # pyproject's base dependencies are the SDK's alone: both locks add the server extra.
    assert re.search(r"compile --quiet pyproject.toml --extra server \$\(LOCK_ARGS\)", makefile)
    assert re.search(r"compile --quiet pyproject.toml --extra server --extra test ", makefile)
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install --require-hashes -r requirements.lock" in dockerfile
    assert "pip install --no-deps ." in dockerfile
    # pip check sees base dependencies only: an offline install of the extras checks theirs.
    assert "pip install --quiet --no-index 'hyperprior[server,test]' &&" in makefile
    assert "pip install --quiet --no-index 'hyperprior[server]'" in dockerfile
