"""The quickstart example runs end to end: CSV, describe, suggest, refine, final model."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from hyperprior.db import migrate
from hyperprior.db.engine import make_engine
from hyperprior.db.store import Store
from hyperprior.training.retrain import install_shipped
from hyperprior.training.seed import SEED_DIR, load_seed

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "quickstart.py"


def test_quickstart_goes_from_a_csv_to_a_tuned_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # What `hyperprior db upgrade && hyperprior db seed` makes: a history and surrogates.
    url = f"sqlite:///{tmp_path / 'hyperprior.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    store = Store(engine)
    load_seed(store)
    install_shipped(store, SEED_DIR / "surrogates")
    monkeypatch.delenv("HYPERPRIOR_URL", raising=False)
    monkeypatch.setenv("HYPERPRIOR_DATABASE_URL", url)
    monkeypatch.setenv("HYPERPRIOR_EXAMPLE_DIR", str(tmp_path))
    monkeypatch.setenv("HYPERPRIOR_EXAMPLE_BUDGET", "6")

    namespace = runpy.run_path(str(EXAMPLE), run_name="__main__")

    out = capsys.readouterr().out
    assert "binary: 569 rows, 30 features" in out
    assert "#1 " in out
    suggestions = namespace["suggestions"]
    assert suggestions.surrogate is not None  # ranked by the shipped surrogate
    refined = namespace["refined"]
    assert refined.score >= refined.default_score
    model = namespace["model"]
    X, y = namespace["X"], namespace["y"]
    assert (model.predict(X) == y).mean() > 0.9
    # The verification runs went back into the history.
    assert store.list_runs(source="verification", limit=1).count >= 1
    engine.dispose()
