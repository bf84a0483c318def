"""The project as a user installs it: a wheel built as the Docker image builds it, in a bare venv.

Shared by tests/test_image.py (the image: the wheel with every dependency of the test
interpreter) and tests/test_sdk_install.py (the SDK alone: the wheel with only its own
dependencies). Offline: the wheel is built without build isolation and installed with
``--no-deps``; the dependencies are the test interpreter's installed distributions, made
visible to the venv through a ``.pth`` line. Imported as ``from wheel_venv import ...``
(``tests/`` is on ``sys.path``).
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def run(
    args: list[str], cwd: Path, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run a command and capture its output (the timeout is a guard against a hang)."""
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def instructions(text: str) -> list[tuple[str, str]]:
    """A Dockerfile's instructions as (keyword, arguments), continuations joined."""
    joined = text.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def dockerfile_copies() -> list[tuple[list[str], str]]:
    """Each COPY of the build context: (sources, destination)."""
    copies = []
    for keyword, rest in instructions(DOCKERFILE):
        if keyword in ("COPY", "ADD"):
            parts = shlex.split(rest)
            assert keyword == "COPY", "ADD fetches and unpacks: the image should use COPY"
            assert not [p for p in parts if p.startswith("--")], f"COPY {rest}: flags unexpected"
            copies.append((parts[:-1], parts[-1]))
    return copies


def _dockerignore() -> Callable[[str, list[str]], set[str]]:
    """A `shutil.copytree` ignore function for .dockerignore's patterns (the forms it uses)."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert not [p for p in patterns if p.startswith("!")], "exceptions are not handled here"

    def ignore(directory: str, names: list[str]) -> set[str]:
        relative = Path(directory).resolve().relative_to(ROOT)
        ignored = set()
        for name in names:
            path = (relative / name).as_posix()
            for pattern in patterns:
                anywhere = pattern.removeprefix("**/")
                if fnmatch.fnmatch(path, pattern) or (
                    pattern.startswith("**/") and fnmatch.fnmatch(name, anywhere)
                ):
                    ignored.add(name)
        return ignored

    return ignore


def clean_env() -> dict[str, str]:
    """This environment without Python's and pip's own variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def build_wheel(base: Path) -> Path:
    """The project's wheel, built from what the Dockerfile copies (nothing else of the checkout)."""
    context = base / "context"
    context.mkdir()
    ignore = _dockerignore()
    for sources, destination in dockerfile_copies():
        for source in sources:
            # The image's layout must be the checkout's: each source lands under its name.
            assert destination in ("./", f"./{source}", source), (sources, destination)
            path = ROOT / source
            if path.is_dir():
                shutil.copytree(path, context / source, ignore=ignore)
            else:
                shutil.copy2(path, context / source)
    built = run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "--wheel-dir", str(base / "dist"), str(context)],
        base, clean_env(), timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (wheel,) = (base / "dist").glob("hyperprior-*.whl")
    return wheel


def install_wheel(wheel: Path, venv: Path) -> Path:
    """A new venv (no system site-packages) with only ``wheel`` in it; its purelib directory."""
    env = clean_env()
    made = run([sys.executable, "-m", "venv", "--without-pip", str(venv)], venv.parent, env)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    # Installed before any dependency is visible, so that pip never sees (and never
    # offers to uninstall) the checkout's editable install.
    installed = run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", "--ignore-installed", str(wheel)],
        venv.parent, env, timeout=300,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]
    purelib = run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        venv.parent,
        env,
    ).stdout.strip()
    return Path(purelib)


def normalize(name: str) -> str:
    """A distribution's canonical name (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(requirements: Iterable[str]) -> dict[str, list[Requirement]]:
    """Every distribution the requirements need on this interpreter (installed metadata)."""
    environment: dict[str, str] = dict(default_environment())
    needed: dict[str, list[Requirement]] = {}
    todo = [Requirement(r) for r in requirements]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        requirement = todo.pop()
        name = normalize(requirement.name)
        needed.setdefault(name, []).append(requirement)
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        for line in metadata.requires(requirement.name) or []:
            child = Requirement(line)
            extras = {""} | set(requirement.extras)
            if child.marker is None or any(
                child.marker.evaluate({**environment, "extra": extra}) for extra in extras
            ):
                todo.append(child)
    return needed


def link_distributions(names: Iterable[str], target: Path) -> None:
    """Symlink the installed files of these distributions (top-level entries) into ``target``.

    A ``.pth`` line pointing at ``target`` then makes exactly these importable.
    """
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        distribution = metadata.distribution(name)
        tops = {Path(f).parts[0] for f in distribution.files or []}
        for top in tops - {"..", "__pycache__"}:
            source = Path(str(distribution.locate_file(top)))
            if source.exists() and not (target / top).exists():
                (target / top).symlink_to(source)
