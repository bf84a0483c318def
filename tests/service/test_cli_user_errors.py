"""The CLI never leaves a user stuck: one line on stderr, exit 2, nothing left behind."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from hyperprior.service.cli import main
from hyperprior.training.refine import RefineProgress


@pytest.fixture
def backend() -> str:
    """SQLite only: these code paths do not depend on the backend."""
    return "sqlite"


def _write(path: Path, label: list[Any]) -> Path:
    rng = np.random.default_rng(0)
    n = len(label)
    pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "label": label}).to_csv(
        path, index=False
    )
    return path


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("hyperprior: error: ")
    assert "Traceback" not in err
    assert "np.int64" not in err
    return err


@pytest.mark.parametrize(
    ("label", "extra", "message"),
    [
        ([1] * 40, [], "the target 'label' has a single value (1 in every row)"),
        ([1] * 35 + [None] * 5, [], "single value (1.0 in every row; 5 rows without a value)"),
        (["x", "y"] * 20, ["--task", "regression"], "needs a numeric target"),
        ([0, 1] * 20, ["--task", "multiclass"], "use task 'binary'"),
        ([0] * 39 + [1], ["--refine"], "class 1 has 1 row: --refine cross-validates"),
        ([0, 1] * 5, ["--refine"], "--refine needs at least 30 rows"),
    ],
)
def test_bad_targets_exit_2_with_the_cause(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    label: list[Any],
    extra: list[str],
    message: str,
) -> None:
    data = _write(tmp_path / "data.csv", label)
    database = tmp_path / "never.db"

    argv = ["suggest", str(data), "--target", "label", "--family", "lightgbm", *extra]
    assert main([*argv, "--database-url", f"sqlite:///{database}"]) == 2

    assert message in _one_error_line(capsys)
    assert not database.exists()


def test_suggest_on_an_empty_database_says_to_seed(
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = _write(tmp_path / "data.csv", [0, 1] * 20)

    argv = ["suggest", str(data), "--target", "label", "--family", "lightgbm"]
    assert main([*argv, "--database-url", db_url]) == 2

    assert "holds no runs" in (err := _one_error_line(capsys))
    assert "hyperprior db seed" in err
    # With --refine it goes on (the default is worth measuring) but says the same.
    import hyperprior.service.commands.suggest as suggest

    monkeypatch.setattr(suggest, "refine_command", _fake_refinement({"C": 1.0})[0])
    refine = ["--refine", "--no-progress", "--database-url", db_url]
    assert main([*argv, *refine]) == 0
    assert "hyperprior: warning: the database" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["keys", "create", "--scope", "read"],
        ["keys", "list"],
        ["retrain"],
        ["serve", "--port", "1"],
        ["bootstrap", "--datasets", "sklearn/iris", "--configs", "1", "--no-progress"],
        ["db", "export-seed", "--dir", "out"],
    ],
)
def test_commands_without_a_database_create_none(
    argv: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYPERPRIOR_DATABASE_URL", raising=False)

    assert main(argv) == 2

    err = _one_error_line(capsys)
    assert "no hyperprior database at hyperprior.db" in err
    assert "hyperprior db seed" in err
    assert list(tmp_path.iterdir()) == []


def test_db_current_without_a_database_creates_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYPERPRIOR_DATABASE_URL", raising=False)

    assert main(["db", "current", "--check"]) == 1

    assert "no database at hyperprior.db" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_db_seed_creates_a_new_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # An empty seed directory: only the creation of the database is under test here.
    seed = tmp_path / "seed"
    seed.mkdir()
    url = f"sqlite:///{tmp_path / 'new.db'}"

    assert main(["db", "seed", "--database-url", url, "--dir", str(seed), "--no-progress"]) == 0

    assert "nothing loaded" in capsys.readouterr().out
    assert main(["db", "current", "--check", "--database-url", url]) == 0


def _fake_refinement(config: dict[str, Any] | None) -> Any:
    seen: dict[str, Any] = {}

    def refine_command(
        client: Any, args: Any, X: Any, y: Any, suggestions: Any, progress: Any = None
    ) -> dict[str, Any]:
        seen["progress"] = progress
        if progress is not None:
            progress(RefineProgress("rung", 0, 2, 0.5, 1, 4, 0.1, 10.0, 0.9).to_dict())
        return {
            "metric": "roc_auc",
            "trials": [],
            "elapsed_seconds": 0.1,
            "budget_seconds": 10.0,
            "default_score": None,
            "zero_shot": None,
            "score": None if config is None else 0.9,
            "config": config,
            "notes": ["no config could be measured: every trial failed (ValueError: boom)"],
        }

    return refine_command, seen


def _answer_with_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """No database and no suggestions: only what the CLI does with a refinement is tested."""
    import hyperprior.service.commands.suggest as suggest
    from hyperprior.client import Description, Suggestions

    nothing = Suggestions([], None, [], Description("data", "binary", {}), "lightgbm")
    monkeypatch.setattr(suggest, "open_client", lambda args: contextlib.nullcontext(None))
    monkeypatch.setattr(suggest, "ask", lambda client, args, X, y, task: nothing)


@pytest.mark.parametrize("no_progress", [False, True])
def test_refine_that_verifies_nothing_exits_2_with_the_reason(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_progress: bool,
) -> None:
    import hyperprior.service.commands.suggest as suggest

    data = _write(tmp_path / "data.csv", [0, 1] * 20)
    _answer_with_nothing(monkeypatch)
    refine_command, seen = _fake_refinement(None)
    monkeypatch.setattr(suggest, "refine_command", refine_command)

    argv = ["suggest", str(data), "--target", "label", "--family", "lightgbm", "--refine"]
    assert main(argv + (["--no-progress"] if no_progress else [])) == 2

    captured = capsys.readouterr()
    assert "note: no config could be measured" in captured.out
    last = captured.err.strip().splitlines()[-1]
    assert last == (
        "hyperprior: error: --refine verified no config: no config could be measured: "
        "every trial failed (ValueError: boom)"
    )
    assert (seen["progress"] is None) == no_progress
    if not no_progress:
        assert "refine" in captured.err  # the bar, on stderr
        assert "1/4" in captured.err


def test_refine_that_verifies_a_config_exits_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import hyperprior.service.commands.suggest as suggest

    data = _write(tmp_path / "data.csv", [0, 1] * 20)
    _answer_with_nothing(monkeypatch)
    monkeypatch.setattr(suggest, "refine_command", _fake_refinement({"num_leaves": 7})[0])

    argv = ["suggest", str(data), "--target", "label", "--family", "lightgbm", "--refine"]
    assert main([*argv, "--no-progress"]) == 0
    assert "num_leaves=7" in capsys.readouterr().out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])

    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("hyperprior 0.")


def test_output_piped_into_head_ends_quietly(tmp_path: Path) -> None:
    # A real pipe: the reader closes it after one line, the writer must not complain.
    # The catalog is printed 30 times, far more than a pipe buffers, so the writer
    # certainly meets the closed pipe.
    code = (
        "import sys\n"
        "import hyperprior.service.commands.bootstrap as b\n"
        "once = b._print_entries\n"
        "b._print_entries = lambda *a, **k: [once(*a, **k) for _ in range(30)]\n"
        "from hyperprior.service.cli import main\n"
        "sys.exit(main(['bootstrap', '--list']))\n"
    )
    script = Path(tmp_path) / "writer.py"
    script.write_text(code)
    done = subprocess.run(
        f"set -o pipefail; '{sys.executable}' '{script}' | head -n 1",
        shell=True,
        capture_output=True,
        text=True,
        check=False,
        executable="/bin/bash",
    )

    assert done.stdout.startswith("name")
    assert done.stderr == ""
    assert done.returncode == 0
