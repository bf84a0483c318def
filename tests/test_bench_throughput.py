"""benchmarks/bootstrap_throughput.py: the same trials on local workers and on a Dask
cluster of separate processes (a scheduler and 2 workers, as docker-compose starts them)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bootstrap_throughput  # noqa: E402


def test_dask_processes_record_what_local_workers_record(tmp_path: Path) -> None:
    status = bootstrap_throughput.main(
        [
            "--datasets",
            "sklearn/iris",
            "--families",
            "linear",
            "--configs",
            "3",
            "--workers",
            "2",
            "--output-dir",
            str(tmp_path),
        ]
    )

    report = json.loads((tmp_path / "bootstrap_throughput.json").read_text())
    assert status == 0
    assert report["same_run_ids"] is True
    assert report["max_score_difference"] < 1e-9
    for engine in ("local", "dask"):
        assert report["results"][engine]["trials"] == 3
        assert report["results"][engine]["failed"] == 0
        assert report["results"][engine]["trials_per_hour"] > 0
