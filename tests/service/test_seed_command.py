"""``hyperprior db seed``: the shipped history and surrogates, loaded once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hyperprior.db.engine import make_engine
from hyperprior.db.store import Store
from hyperprior.service.cli import main
from hyperprior.training.seed import SEED_DIR

sqlite_only = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


@sqlite_only
def test_seed_loads_history_and_surrogates_once(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = json.loads((SEED_DIR / "manifest.json").read_text())
    shipped = sorted(p.stem for p in (SEED_DIR / "surrogates").glob("*.json"))
    assert shipped, "the package ships at least one surrogate"

    assert main(["db", "seed", "--database-url", db_url, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"{manifest['runs']} inserted" in out
    store = Store(make_engine(db_url))
    assert store.stats().runs == manifest["runs"]
    assert store.stats().datasets == manifest["datasets"]
    for family in shipped:
        active = store.find_active_surrogate(family)
        assert active is not None
        assert active.n_runs > 0

    assert main(["db", "seed", "--database-url", db_url, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "0 inserted" in out
    assert "active one kept" in out
    assert store.stats().runs == manifest["runs"]
    assert len(store.list_surrogates()) == len(shipped)


@sqlite_only
def test_seed_refuses_a_tampered_surrogate(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed = tmp_path / "seed"
    shutil.copytree(SEED_DIR, seed)
    model = sorted((seed / "surrogates").glob("*.txt"))[0]
    model.write_text(model.read_text().replace("\n", "\n\n", 1))

    assert main(["db", "seed", "--database-url", db_url, "--dir", str(seed), "--no-progress"]) == 2
    assert "sha256" in capsys.readouterr().err
    store = Store(make_engine(db_url))
    assert store.find_active_surrogate(model.stem) is None
