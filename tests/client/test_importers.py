"""Importers: CSV tables and MLflow file stores, through the functions and the CLI."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml

from hyperprior.client.importers import RunTableError, runs_from_csv, runs_from_mlflow
from hyperprior.db.store import Store
from hyperprior.service.cli import main

HEADER = (
    "dataset,task,n_rows,n_features,n_classes,mf_missing_cells_frac,family,"
    "param_learning_rate,param_num_leaves,metric,score,fidelity,cost_seconds,status,error\n"
)
ROWS = [
    "churn,binary,1000,12,2,0.01,lightgbm,0.05,31,roc_auc,0.81,1,2.5,ok,\n",
    "churn,binary,1000,12,2,0.01,lightgbm,0.2,63,roc_auc,0.78,0.5,1.2,ok,\n",
    "churn,binary,1000,12,2,0.01,lightgbm,3.0,63,roc_auc,,1,0.3,failed,diverged\n",
    "houses,regression,500,8,,,random_forest,,,rmse,0.41,1,4,ok,\n",
]


def _write(tmp_path: Path, text: str, name: str = "runs.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_rows_become_runs(tmp_path: Path) -> None:
    runs = runs_from_csv(_write(tmp_path, HEADER + "".join(ROWS)))
    assert len(runs) == 4
    first = runs[0]
    assert first["dataset"] == {
        "name": "churn",
        "task": "binary",
        "meta_features": {
            "n_rows": 1000,
            "n_features": 12,
            "n_classes": 2,
            "missing_cells_frac": 0.01,
        },
    }
    assert first["config"] == {"learning_rate": 0.05, "num_leaves": 31}
    assert (first["direction"], first["source"], first["status"]) == ("maximize", "import", "ok")
    assert runs[2]["status"] == "failed"
    assert runs[2]["score"] is None
    assert runs[2]["error"] == "diverged"
    assert runs[3]["direction"] == "minimize"  # from the metric's name: rmse
    assert runs[3]["config"] == {}
    # Ids depend on the content only: the same file gives the same ids.
    again = runs_from_csv(_write(tmp_path, HEADER + "".join(ROWS), "copy.csv"))
    assert [r["id"] for r in again] == [r["id"] for r in runs]
    # Two identical rows are two runs.
    twice = runs_from_csv(_write(tmp_path, HEADER + ROWS[0] + ROWS[0], "twice.csv"))
    assert twice[0]["id"] != twice[1]["id"]


def test_csv_errors_name_the_row_and_column(tmp_path: Path) -> None:
    bad = [
        "churn,binary,1000,12,2,0.01,lightgbm,0.05,31,roc_auc,high,1,2.5,ok,\n",
        "churn,binary,-5,12,2,0.01,lightgbm,0.05,31,roc_auc,0.8,1.5,2.5,ok,\n",
        "churn,ranking,1000,12,2,0.01,lightgbm,0.05,31,roc_auc,0.8,1,2.5,maybe,\n",
    ]
    with pytest.raises(RunTableError) as caught:
        runs_from_csv(_write(tmp_path, HEADER + ROWS[0] + "".join(bad)))
    message = str(caught.value)
    assert "row 2 (line 3), column 'score': 'high'" in message
    assert "row 3 (line 4), column 'n_rows': '-5'" in message
    assert "row 3 (line 4), column 'fidelity': 1.5 must be in (0, 1]" in message
    assert "row 4 (line 5), column 'task': 'ranking': must be one of binary" in message
    assert "row 4 (line 5), column 'status'" in message
    assert len(caught.value.problems) == 5
    with pytest.raises(RunTableError, match="missing column.*score"):
        runs_from_csv(_write(tmp_path, "dataset,task,n_rows,n_features,family,metric,config\n"))
    with pytest.raises(RunTableError, match="no such file"):
        runs_from_csv(tmp_path / "absent.csv")


def test_import_csv_command(
    tmp_path: Path, db_url: str, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, HEADER + "".join(ROWS))
    assert main(["import", "csv", str(path), "--database-url", db_url]) == 0
    assert "4 new, 0 already stored" in capsys.readouterr().out
    assert main(["import", "csv", str(path), "--database-url", db_url, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["inserted"], summary["duplicates"]) == (0, 4)
    assert store.stats().by_source == {"import": 4}
    broken = _write(tmp_path, HEADER + ROWS[0].replace("0.81", "x"), "broken.csv")
    assert main(["import", "csv", str(broken), "--database-url", db_url]) == 2
    assert "row 1 (line 2), column 'score'" in capsys.readouterr().err


def _mlflow_store(root: Path) -> Path:
    """An mlruns directory as MLflow's file store writes it."""
    mlruns = root / "mlruns"
    experiment = mlruns / "123"
    experiment.mkdir(parents=True)
    (experiment / "meta.yaml").write_text(
        yaml.safe_dump({"experiment_id": "123", "name": "churn-rf", "lifecycle_stage": "active"})
    )
    (mlruns / "0").mkdir()
    (mlruns / "0" / "meta.yaml").write_text(
        yaml.safe_dump({"experiment_id": "0", "name": "Default", "lifecycle_stage": "active"})
    )
    runs = {
        "a" * 32: (3, {"n_estimators": "200", "max_depth": "None", "bootstrap": "True",
                       "criterion": "gini"}, "0.91"),
        "b" * 32: (4, {"n_estimators": "50"}, None),
        "c" * 32: (1, {"n_estimators": "10"}, None),
    }  # fmt: skip
    for run_id, (status, params, score) in runs.items():
        run = experiment / run_id
        (run / "params").mkdir(parents=True)
        (run / "metrics").mkdir()
        meta = {
            "run_id": run_id,
            "run_uuid": run_id,
            "experiment_id": "123",
            "status": status,
            "start_time": 1_700_000_000_000,
            "end_time": 1_700_000_012_500,
            "lifecycle_stage": "active",
        }
        (run / "meta.yaml").write_text(yaml.safe_dump(meta))
        for key, value in params.items():
            (run / "params" / key).write_text(value)
        if score is not None:
            (run / "metrics" / "val_auc").write_text(
                textwrap.dedent(
                    f"""\
                    1700000001000 0.70 0
                    1700000005000 {score} 2
                    1700000003000 0.80 1
                    """
                )
            )
    return mlruns


def test_mlflow_file_store(tmp_path: Path) -> None:
    mlruns = _mlflow_store(tmp_path)
    description = {
        "name": "churn",
        "task": "binary",
        "meta_features": {"n_rows": 900, "n_features": 7},
    }
    runs, skipped = runs_from_mlflow(
        mlruns, dataset=description, family="random_forest", metric="val_auc"
    )
    assert skipped == 1  # still running
    by_status = {r["status"]: r for r in runs}
    ok = by_status["ok"]
    assert ok["score"] == 0.91  # the last step's value
    assert ok["config"] == {"n_estimators": 200, "max_depth": None, "bootstrap": True}
    assert ok["direction"] == "maximize"
    assert ok["cost_seconds"] == 12.5
    assert by_status["failed"]["score"] is None
    again, _ = runs_from_mlflow(
        mlruns, dataset=description, family="random_forest", metric="val_auc"
    )
    assert [r["id"] for r in again] == [r["id"] for r in runs]
    with pytest.raises(FileNotFoundError, match="experiments: Default, churn-rf"):
        runs_from_mlflow(
            mlruns, dataset=description, family="random_forest", metric="val_auc", experiment="x"
        )


def test_import_mlflow_command(
    tmp_path: Path, db_url: str, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    mlruns = _mlflow_store(tmp_path)
    args = [
        "import", "mlflow", str(mlruns), "--experiment", "churn-rf", "--family", "random_forest",
        "--metric", "val_auc", "--dataset", "churn", "--task", "binary", "--n-rows", "900",
        "--n-features", "7", "--database-url", db_url,
    ]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "2 new, 0 already stored; 1 skipped" in out
    assert main(args) == 0
    assert "0 new, 2 already stored" in capsys.readouterr().out
    assert store.stats().by_status == {"failed": 1, "ok": 1}
