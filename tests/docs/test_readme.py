"""The README documents what the code offers: every setting and every command."""

from __future__ import annotations

import re
from pathlib import Path

from hyperprior.service.cli import build_parser
from hyperprior.service.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    missing = [
        f"HYPERPRIOR_{name.upper()}"
        for name in Settings.model_fields
        if f"HYPERPRIOR_{name.upper()}" not in README
    ]
    assert not missing, f"README does not mention: {', '.join(missing)}"


def test_every_command_is_documented() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    missing = [
        name
        for name in subparsers.choices  # type: ignore[union-attr]
        if not re.search(rf"hyperprior {re.escape(name)}\b", README)
    ]
    assert not missing, f"README does not show: {', '.join(missing)}"


def test_the_two_commands_are_in_the_readme_and_ci_runs_the_test_one() -> None:
    assert "make run" in README
    assert "make test" in README
    ci = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.MULTILINE)
