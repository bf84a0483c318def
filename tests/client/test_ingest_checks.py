"""The SDK and the importers apply the ingest check of POST /v1/runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hyperprior.client import Client, HyperpriorWarning, NotFoundError, ValidationError
from hyperprior.client.importers import check_runs, runs_from_csv
from hyperprior.service.cli import main

MakeRun = Callable[..., dict[str, Any]]


@pytest.mark.parametrize("mode", ["http", "local"])
def test_record_refuses_a_bad_config_in_both_modes_and_stores_nothing(
    mode: str, http_client: Client, local_client: Client, make_run: MakeRun
) -> None:
    client = http_client if mode == "http" else local_client
    runs = [make_run(index=i) for i in range(3)] + [make_run(config={"num_leaves": "abc"})]

    with pytest.raises(ValidationError) as refused:
        client.record(runs, batch_size=2)

    # Named by its index in the caller's list, not in its batch.
    assert "runs[3]" in str(refused.value)
    assert "config.num_leaves" in str(refused.value)
    assert refused.value.detail[0]["run_index"] == 3
    # Earlier batches are stored (documented); the refused batch is not.
    assert client.stats()["runs"] == 2


@pytest.mark.parametrize("mode", ["http", "local"])
def test_record_returns_the_flags(
    mode: str, http_client: Client, local_client: Client, make_run: MakeRun
) -> None:
    client = http_client if mode == "http" else local_client
    runs = [make_run(index=0), make_run(index=1), make_run(config={"n_estimators": 9000})]

    result = client.record(runs, batch_size=2)

    assert result.inserted == 3
    assert len(result.warnings) == 1
    assert result.warnings[0].startswith("runs[2] ")
    assert "outside the search space" in result.warnings[0]


def test_local_client_without_a_database_refuses_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYPERPRIOR_DATABASE_URL", raising=False)

    with pytest.raises(NotFoundError, match="hyperprior db seed"):
        Client.local()

    assert list(tmp_path.iterdir()) == []


def test_suggesting_from_an_empty_local_history_warns(
    local_client: Client, binary_data: Any
) -> None:
    X, y = binary_data

    with pytest.warns(HyperpriorWarning, match="hyperprior db seed"):
        local_client.suggest(X, y, "lightgbm", n=2)


def test_check_runs_splits_what_the_service_would_refuse(make_run: MakeRun) -> None:
    runs = [
        make_run(index=0),
        make_run(config={"num_leaves": 99999999, "foo": 1}),
        make_run(config={"num_leaves": 1000}),
        make_run(family="catboost", config={"eta": 1}),
    ]

    kept, rejected, flagged = check_runs(runs)

    assert [r["id"] for r in kept] == [runs[0]["id"], runs[2]["id"], runs[3]["id"]]
    assert [r.index for r in rejected] == [1]
    assert any(p.startswith("config.foo:") for p in rejected[0].problems)
    assert any("config.num_leaves: 99999999 is not allowed" in p for p in rejected[0].problems)
    assert flagged[0].startswith(f"run 3 (id {runs[2]['id']}): config.num_leaves")


_TABLE = """dataset,task,n_rows,n_features,family,param_num_leaves,param_foo,metric,score
d1,binary,100,5,lightgbm,99999999,1,roc_auc,0.8
d1,binary,100,5,lightgbm,31,,roc_auc,0.81
"""


def test_import_csv_skips_and_lists_invalid_rows(
    tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    table = tmp_path / "runs.csv"
    table.write_text(_TABLE)
    assert len(runs_from_csv(table)) == 2

    assert main(["import", "csv", str(table), "--database-url", db_url, "--no-progress"]) == 0

    out, err = capsys.readouterr()
    assert out.startswith("imported 1 run from ")
    assert "1 new" in out
    assert "1 skipped (invalid config, listed above)" in out
    assert err.startswith("hyperprior: warning: skipped row 1 (id ")
    assert "config.foo: is not a parameter of lightgbm" in err
    assert "config.num_leaves: 99999999 is not allowed" in err


def test_import_csv_of_only_invalid_rows_exits_2_and_stores_nothing(
    tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    table = tmp_path / "runs.csv"
    table.write_text(_TABLE.splitlines()[0] + "\n" + _TABLE.splitlines()[1] + "\n")

    assert main(["import", "csv", str(table), "--database-url", db_url]) == 2

    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "none of the 1 run from" in err
    assert "row 1: config.foo" in err
    with Client.local(database_url=db_url) as client:
        assert client.stats()["runs"] == 0
