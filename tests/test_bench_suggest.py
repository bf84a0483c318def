"""benchmarks/suggest.py: its results, the README table made from them, the 3x history.

No timing here: the benchmark measures speed, these tests check what it writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import suggest as bench  # noqa: E402

sys.path.remove(str(ROOT / "benchmarks"))


def _report(history: str = "seed", fingerprint: str | None = "abc", **extra: Any) -> dict:
    quantiles = {"p50_ms": 5.04, "p90_ms": 6.0, "p99_ms": 9.96, "mean_ms": 5.5}
    return {
        "benchmark": "suggest",
        "created_at": "2026-12-06T09:00:00Z",
        "label": extra.get("label", ""),
        "commit": "0123456789ab",
        "load_average": [3.2, 3.0, 2.9],
        "setup": {
            "history": history,
            "history_fingerprint": fingerprint,
            "n_runs": 9616,
            "n_datasets": 247,
        },
        "in_process": {"warm": quantiles, "cold_pool": quantiles},
        "http": [
            {"clients": 4, "server_workers": 2, "requests_per_s": 251.4, **quantiles},
        ],
    }


def test_results_are_written_without_matplotlib(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    written = bench.write_results(_report(), tmp_path, "suggest")
    assert written == [tmp_path / "suggest.json"]
    assert json.loads((tmp_path / "suggest.json").read_text())["benchmark"] == "suggest"


def test_readme_table_rows_carry_date_fingerprint_and_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench, "seed_fingerprint", lambda: "abc")
    (tmp_path / "suggest.json").write_text(json.dumps(_report()))
    (tmp_path / "suggest.seed3x.json").write_text(json.dumps(_report("seed3x", "abcx3r19")))
    (tmp_path / "suggest.old.json").write_text(json.dumps(_report("seed", "fff", label="old")))
    table = bench.readme_table(tmp_path)
    rows = [line for line in table.splitlines()[2:]]
    assert len(rows) == 3 * 3  # in-process, new pool, one HTTP row per file
    assert all(row.startswith("| 2026-12-06 |") for row in rows)
    seed_rows = [r for r in rows if "`abc`" in r]
    assert seed_rows
    assert not any("another history" in r for r in seed_rows)
    assert all("seed x3" in r for r in rows if "`abcx3r19`" in r)
    # Measured on a seed that is no longer the shipped one: marked.
    assert all("another history" in r for r in rows if "`fff`" in r)
    assert "| 5.0 | 10.0 | 251 |" in table


def test_readme_block_is_rewritten_between_its_markers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench, "seed_fingerprint", lambda: "abc")
    (tmp_path / "suggest.json").write_text(json.dumps(_report()))
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{bench.README_BEGIN}\nold\n{bench.README_END}\n\nrest\n")
    assert bench.update_readme(readme, tmp_path)
    text = readme.read_text()
    assert "old" not in text
    assert text.endswith("\n\nrest\n")
    assert not bench.update_readme(readme, tmp_path)  # idempotent


def test_readme_table_is_the_one_the_results_make() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(bench.README_BEGIN) + len(bench.README_BEGIN) + 1
    block = text[start : text.index(bench.README_END)].strip()
    assert block == bench.readme_table(), "run: python benchmarks/suggest.py --readme"


def test_replicated_seed_is_new_data_of_the_same_shape(tmp_path: Path) -> None:
    source = tmp_path / "seed"
    source.mkdir()
    meta = {"n_rows": 1000, "n_features": 10, "log_n_rows": 6.9, "lm_1nn": 0.8}
    pd.DataFrame(
        {
            "name": ["a", "b"],
            "task": ["binary", "regression"],
            "meta_features": [json.dumps(meta)] * 2,
        }
    ).to_parquet(source / "datasets.parquet")
    runs = pd.DataFrame(
        {
            "id": [f"00000000-0000-0000-0000-00000000000{i}" for i in range(4)],
            "dataset": ["a", "a", "b", "b"],
            "metric": ["roc_auc", "roc_auc", "rmse", "rmse"],
            "score": [0.8, 0.9, 1.0, None],
        }
    )
    runs.to_parquet(source / "runs.parquet")
    bench.replicate_seed(source, tmp_path / "x1", 1)
    datasets = pd.read_parquet(tmp_path / "x1" / "datasets.parquet")
    copy = pd.read_parquet(tmp_path / "x1" / "runs.parquet")
    assert list(datasets["name"]) == ["a~x1", "b~x1"]
    assert set(copy["dataset"]) == {"a~x1", "b~x1"}
    assert not set(copy["id"]) & set(runs["id"])
    assert copy["score"].isna().tolist() == runs["score"].isna().tolist()
    perturbed = json.loads(datasets["meta_features"][0])
    assert "log_n_rows" not in perturbed  # derived again from the counts on ingest
    assert perturbed["n_rows"] != 1000
    assert 0.0 <= perturbed["lm_1nn"] <= 1.0
