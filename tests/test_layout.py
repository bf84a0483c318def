"""The installed layout: everything under ``hyperprior``, nothing generic at the top."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("client", "db", "service", "training")


def test_every_package_folder_is_listed_under_hyperprior():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {"hyperprior"}
    for folder in FOLDERS:
        assert config["package-dir"][f"hyperprior.{folder}"] == folder
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT).parts
            on_disk.add(".".join(("hyperprior", *parts)))
    assert on_disk == listed


def test_a_users_own_modules_named_like_ours_do_not_shadow_the_sdk(tmp_path):
    # Common names beside a user's script; Python puts the script's folder first on sys.path.
    for name in ("training", "db", "client", "service"):
        (tmp_path / f"{name}.py").write_text("raise ImportError('the user module was imported')\n")
    script = tmp_path / "train.py"
    script.write_text(
        "from hyperprior import Client\n"
        "import hyperprior.training.suggest, hyperprior.db.store, hyperprior.service.app\n"
        "print(Client.__module__)\n"
    )
    out = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith("hyperprior.client")


def test_the_top_level_names_come_from_the_sdk():
    import hyperprior
    from hyperprior.client import Client, Suggestions

    assert hyperprior.Client is Client
    assert hyperprior.Suggestions is Suggestions
    assert "Client" in dir(hyperprior)
