"""The ``hyperprior`` command line: exit statuses and one-line errors."""

from __future__ import annotations

import pytest

from hyperprior.service.cli import main


@pytest.fixture
def backend() -> str:
    """The CLI is exercised on SQLite only (its code paths do not depend on the backend)."""
    return "sqlite"


def test_db_upgrade_and_current(blank_db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "current", "--database-url", blank_db_url]) == 0
    assert main(["db", "current", "--check", "--database-url", blank_db_url]) == 1
    assert "run `hyperprior db upgrade`" in capsys.readouterr().out

    assert main(["db", "upgrade", "--database-url", blank_db_url]) == 0
    assert "upgraded from nothing to" in capsys.readouterr().out
    assert main(["db", "upgrade", "--database-url", blank_db_url]) == 0
    assert "already at" in capsys.readouterr().out
    assert main(["db", "current", "--check", "--database-url", blank_db_url]) == 0
    assert "(head)" in capsys.readouterr().out


def test_database_url_comes_from_the_environment(
    blank_db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HYPERPRIOR_DATABASE_URL", blank_db_url)

    assert main(["db", "upgrade"]) == 0
    assert main(["db", "current", "--check"]) == 0


def test_serve_refuses_an_unmigrated_database(
    blank_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--database-url", blank_db_url, "--port", "1"]) == 2

    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("hyperprior: error: ")
    assert "hyperprior db upgrade" in err


def test_unreachable_database_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql+psycopg://postgres@127.0.0.1:1/nothing"

    assert main(["db", "upgrade", "--database-url", url]) == 3

    err = capsys.readouterr().err
    assert "cannot reach the database" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["db", "current", "--database-url", "mysql://u@h/db"], {}, "unsupported database"),
        (["db", "current", "--database-url", "::nonsense"], {}, "invalid database URL"),
        (["serve"], {"HYPERPRIOR_PORT": "eighty"}, "invalid settings: port"),
    ],
)
def test_user_errors_exit_2_with_one_line(
    argv: list[str],
    env: dict[str, str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    assert main(argv) == 2

    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1


def test_bad_usage_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])

    assert info.value.code == 2


def test_bootstrap_adaptive_only_skips_the_missing_sobol_configs(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from hyperprior.db.engine import make_engine
    from hyperprior.db.store import Store

    common = ["bootstrap", "--datasets", "sklearn/breast_cancer", "--families", "lightgbm"]
    common += ["--reduced-configs", "0", "--folds", "2", "--workers", "0", "--no-progress"]
    common += ["--database-url", db_url]
    assert main([*common, "--configs", "2"]) == 0
    store = Store(make_engine(db_url))
    sobol = set(store.runs_frame(status=None)["id"])
    assert len(sobol) == 2

    # Asked for a 4-config Sobol plan, it runs none of the 2 configs that plan still lacks:
    # only the 2 adaptive ones, and says so up front.
    more = [*common, "--configs", "4", "--adaptive", "2", "--adaptive-only"]
    assert main([*more, "--dry-run"]) == 0
    assert "0 still to run (then up to 2 adaptive" in capsys.readouterr().out
    assert main(more) == 0
    runs = store.runs_frame(status=None)
    assert len(runs) == 4
    assert main([*common, "--configs", "4", "--dry-run"]) == 0
    assert "2 still to run" in capsys.readouterr().out  # the Sobol configs 3 and 4
    # Resumable: done is done.
    assert main(more) == 0
    assert len(store.runs_frame(status=None)) == 4

    assert main([*common, "--adaptive-only"]) == 2
    assert "--adaptive-only needs --adaptive N" in capsys.readouterr().err
