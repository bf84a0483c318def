"""Concurrent writers against a real server: exactly N x M runs, no errors, idempotent.

A uvicorn subprocess (two worker processes) serves a fresh database, SQLite or
PostgreSQL; 16 writer processes post 200 runs each in batches of 25 over the same 40
datasets, each writer in its own random order (so concurrent batches create the same
datasets in different orders: a deadlock unless the store locks in one order), then
send every batch three more times. Exactly 3,200 runs, 0 errors, and the replays add
nothing. The 8 x 500 variant is marked slow.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hyperprior.db.engine import make_engine
from hyperprior.db.store import DatasetSpec, NewRun, Store
from hyperprior.service.auth import issue_key
from hyperprior.service.devserver import serve_subprocess

BATCH_SIZE = 50
RESENDS = 3
DATASETS = 40
WRITER_SCRIPT = Path(__file__).with_name("ingest_writer.py")


@pytest.fixture
def write_key(db_url: str) -> str:
    """An API key with scope write (ingest needs one)."""
    engine = make_engine(db_url)
    try:
        return issue_key(Store(engine), "write", name="writers")[1]
    finally:
        engine.dispose()


@pytest.fixture
def live_server(db_url: str, tmp_path: Path) -> Iterator[str]:
    """A real uvicorn server (two workers) on the test database."""
    with serve_subprocess(db_url, workers=2, log_path=tmp_path / "server.log") as base:
        yield base


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("writers", "runs_per_writer"),
    [
        pytest.param(16, 200, id="16x200"),  # issue 8
        pytest.param(8, 500, id="8x500"),  # issue 2
    ],
)
def test_concurrent_writers_store_every_run_exactly_once(
    live_server: str, db_url: str, write_key: str, writers: int, runs_per_writer: int
) -> None:
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                str(WRITER_SCRIPT),
                live_server,
                str(index),
                str(runs_per_writer),
                str(BATCH_SIZE),
                str(RESENDS),
                str(DATASETS),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "HYPERPRIOR_API_KEY": write_key},
        )
        for index in range(writers)
    ]
    reports = []
    for writer in processes:
        out, err = writer.communicate(timeout=150)
        assert writer.returncode == 0, err
        reports.append(json.loads(out))

    expected = writers * runs_per_writer
    assert [e for r in reports for e in r["errors"]] == []
    assert sum(r["inserted"] for r in reports) == expected
    assert sum(r["duplicates"] for r in reports) == 0
    assert sum(r["resent_inserted"] for r in reports) == 0
    assert sum(r["resent_duplicates"] for r in reports) == expected * RESENDS
    engine = make_engine(db_url)
    try:
        stats = Store(engine).stats()
    finally:
        engine.dispose()
    assert (stats.runs, stats.datasets) == (expected, DATASETS)


# -------------------------------------------- lock order alone, without the store's retry

ROUNDS = 6
THREADS = 8
DATASETS_PER_ROUND = 12


def _round_batch(round_: int, thread: int, rng: random.Random) -> list[NewRun]:
    """Runs over the round's datasets (new ones), in an order of this thread's own."""
    order = list(range(DATASETS_PER_ROUND))
    rng.shuffle(order)
    return [
        NewRun(
            id=uuid.UUID(int=rng.getrandbits(128), version=4),
            family="lightgbm",
            config={"num_leaves": 2 + k, "thread": thread},
            metric="roc_auc",
            direction="maximize",
            score=rng.random(),
            fidelity=1.0,
            cost_seconds=1.0,
            source="user",
            dataset=DatasetSpec(
                name=f"round{round_}-{k}",
                task="binary",
                meta_features={"n_rows": 1000 + k, "n_features": 5 + round_},
            ),
        )
        for k in order
    ]


@pytest.mark.timeout(120)
def test_batches_creating_the_same_datasets_in_different_orders_never_deadlock(
    db_url: str,
) -> None:
    # max_attempts=1: no retry to hide a deadlock. Each round, every thread creates
    # the same new datasets at the same moment, each in its own order; on PostgreSQL
    # that deadlocks unless the store inserts them in one order (by fingerprint).
    engine = make_engine(db_url, pool_size=THREADS)
    store = Store(engine, max_attempts=1)
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []
    inserted = [0] * THREADS

    def work(thread: int) -> None:
        rng = random.Random(thread)
        for round_ in range(ROUNDS):
            batch = _round_batch(round_, thread, rng)
            barrier.wait(timeout=30)
            try:
                inserted[thread] += store.ingest_runs(batch).inserted
            except Exception as error:  # noqa: BLE001 - collected and asserted below
                errors.append(error)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=100)
        stats = store.stats()
    finally:
        engine.dispose()
    assert errors == []
    assert sum(inserted) == ROUNDS * THREADS * DATASETS_PER_ROUND
    assert (stats.runs, stats.datasets) == (sum(inserted), ROUNDS * DATASETS_PER_ROUND)
