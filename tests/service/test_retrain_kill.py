"""``kill -9`` of a retrain in progress: the active model serves on, the next retrain succeeds.

A real ``hyperprior retrain --family lightgbm --force`` process trains on a history
big enough to take a few seconds (its lease on the lock set by
``HYPERPRIOR_RETRAIN_LOCK_TTL_S``). As soon as its lock row exists it is killed with
SIGKILL: no ``finally``, no release of the lock. Then:

* the registry is unchanged (no candidate registered, the same model active) and an
  API process that served before serves the same model after;
* a retrain right away finds the lock held (the dead process's lease has not run out);
* once the lease has expired, a retrain takes the lock, trains and activates its model,
  which the API serves at its next poll.

Nothing depends on how fast the machine is: the lease is long enough that "right away"
always holds, and its expiry is reached by a store whose injected clock reads a second
past it, not by waiting.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from waiting import wait_until

from hyperprior.db.engine import make_engine
from hyperprior.db.models import SqlLock
from hyperprior.db.store import Store
from hyperprior.service.app import create_app
from hyperprior.service.settings import Settings
from hyperprior.training.retrain import retrain
from hyperprior.training.surrogate import SurrogateParams
from hyperprior.training.synthetic_history import SyntheticHistory, new_runs

FAMILY = "lightgbm"
FAST = SurrogateParams(n_members=2, n_rounds=25, num_leaves=7, min_data_in_leaf=10, cv_folds=3)
LOCK = f"retrain:{FAMILY}"
LOCK_TTL_SECONDS = 600.0
BODY = {
    "family": FAMILY,
    "task": "binary",
    "dataset": {"meta_features": {"n_rows": 5000, "n_features": 20, "n_classes": 2}},
    "n": 3,
}


@pytest.fixture
def real_store(db_url: str) -> Iterator[Store]:
    """A store on the test database with the real clock (the retrain process uses it too)."""
    engine = make_engine(db_url, pool_size=4)
    yield Store(engine)
    engine.dispose()


def lock_row(store: Store) -> tuple[str, dt.datetime] | None:
    """Owner and expiry of the retrain lock, if the row exists."""
    locks = SqlLock.__table__
    with store.engine.connect() as conn:
        row = conn.execute(
            select(locks.c.owner, locks.c.expires_at).where(locks.c.name == LOCK)
        ).first()
    return None if row is None else (row[0], row[1])


def served_id(client: TestClient) -> int | None:
    response = client.post("/v1/suggestions", json=BODY)
    assert response.status_code == 200, response.text
    surrogate = response.json()["surrogate"]
    return None if surrogate is None else int(surrogate["id"])


@pytest.mark.timeout(600)
def test_kill_9_of_a_retrain_leaves_the_active_model_serving_and_the_next_retrain_works(
    real_store: Store, db_url: str, tmp_path: Path
) -> None:
    store = real_store
    # ~6,000 runs: a retrain with the production recipe takes a few seconds here.
    frame = SyntheticHistory(FAMILY, seed=0).frame(120, 48, n_reduced=12)
    store.ingest_runs(new_runs(frame))
    active = retrain(store, FAMILY, params=FAST, force=True).candidate_id
    assert active is not None

    settings = Settings(database_url="sqlite://", retrain_in_process=False, surrogate_poll_s=3600)
    with TestClient(create_app(settings, store=store)) as client:
        watcher = client.app.state.suggestions.watcher  # type: ignore[attr-defined]
        assert served_id(client) == active

        log = (tmp_path / "retrain.log").open("w")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hyperprior.service.cli",
                "retrain",
                "--family",
                FAMILY,
                "--force",
                "--database-url",
                db_url,
            ],
            env={**os.environ, "HYPERPRIOR_RETRAIN_LOCK_TTL_S": str(LOCK_TTL_SECONDS)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )

        def locked() -> bool:
            assert proc.poll() is None, (tmp_path / "retrain.log").read_text()
            return lock_row(store) is not None

        try:
            wait_until(locked, "the retrain process to take its lock")
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=10) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()

        # Killed before it registered anything: the registry and the API are as before.
        assert [s.id for s in store.list_surrogates(FAMILY)] == [active]
        assert store.find_active_surrogate(FAMILY).id == active
        watcher.poll_once()
        assert served_id(client) == active

        # The dead process's lease still holds the lock for a while ...
        held = lock_row(store)
        assert held is not None
        assert f":{proc.pid}:" in held[0]  # the owner is the dead process
        assert retrain(store, FAMILY, params=FAST, lock_ttl_seconds=LOCK_TTL_SECONDS).outcome == (
            "locked"
        )
        # ... and expires on its own: once the clock passes the lease (a store whose clock
        # reads a second after it), the next retrain takes the lock and succeeds.
        expired = held[1] + dt.timedelta(seconds=1)
        later = Store(store.engine, clock=lambda: expired)
        assert lock_row(store) == held  # nobody released it: only its expiry frees it
        result = retrain(later, FAMILY, params=FAST, force=True, lock_ttl_seconds=LOCK_TTL_SECONDS)
        assert result.outcome == "activated", result.reason
        assert result.candidate_id not in (None, active)
        assert lock_row(store) is None  # released this time
        assert watcher.poll_once() == [FAMILY]
        assert served_id(client) == result.candidate_id
