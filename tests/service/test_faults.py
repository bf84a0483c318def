"""PostgreSQL stopped and started under a load of ingest requests: 503 while down, nothing lost.

A private PostgreSQL server (``pg_server.ThrowawayPostgres``; the shared one on port
5432 is never touched) serves a real uvicorn process with two workers. Client threads
post batches of new runs continuously, each resending a batch until it gets a 2xx (as
a client honouring 503 would). Mid-load the server is stopped (``pg_ctl stop -m fast``:
open transactions roll back, connections drop) for a few seconds and started again.

It must show: while the database is down the API answers 503 with ``Retry-After``
(never a 500, never a dropped connection); once the database is back every client
gets a 2xx within 10 s, without restarting the API; and every run acknowledged with a
2xx is in the database afterwards. A reader thread alongside shows the same for reads
of the database (listing, stats, readiness: 503 then 200), and that suggestions are
answered from memory throughout the outage: without a key (reads are open), and with a
key, which each API process verified before the outage and remembers for
``HYPERPRIOR_AUTH_CACHE_S`` (set far longer than the outage, so the outcome does not
depend on how long the server takes to stop and start).

Whether a stop catches a transaction in flight is luck, so the drop of a connection
in the middle of an ingest transaction (at its INSERT, and at its COMMIT) is also
forced, deterministically: the backend of the request's own connection is terminated
from another connection of the shared server (nothing else of that server is touched).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pg_server import ThrowawayPostgres, throwaway_postgres
from sqlalchemy import Connection, Engine, event, text

from hyperprior.db import migrate
from hyperprior.db.engine import make_engine
from hyperprior.db.errors import DatabaseUnavailableError
from hyperprior.db.store import Store
from hyperprior.service.app import create_app
from hyperprior.service.auth import issue_key
from hyperprior.service.devserver import serve_subprocess
from hyperprior.service.settings import Settings

pytestmark = pytest.mark.postgres

CLIENTS = 6
BATCH_SIZE = 20
OUTAGE_SECONDS = 3.0
# Keys are trusted from memory for half of this while the database is down: far more
# than the outage on any machine.
AUTH_CACHE_SECONDS = 240.0
RECOVERY_LIMIT_SECONDS = 10.0
# How long a client waits before resending after a 503: shorter than the server's
# Retry-After on purpose, so the test sees the moment the API recovers.
RESEND_DELAY_SECONDS = 0.1
SUGGESTION = {
    "family": "lightgbm",
    "task": "binary",
    "dataset": {"meta_features": {"n_rows": 500, "n_features": 9, "n_classes": 2}},
}


@dataclass
class Answer:
    """One request as a client saw it."""

    at: float
    status: int | None  # None: no HTTP answer (connection refused, reset, timeout)
    retry_after: str | None = None
    detail: str = ""


@dataclass
class LoadClient:
    """A thread posting batches of new runs until told to stop."""

    base: str
    key: str
    index: int
    stop: threading.Event
    answers: list[Answer] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)
    counted: int = 0  # inserted + duplicates over the acknowledged batches

    def batch(self, number: int) -> list[dict[str, Any]]:
        runs = []
        for i in range(BATCH_SIZE):
            dataset = (number + i) % 4
            runs.append(
                {
                    "id": str(uuid.uuid4()),
                    "dataset": {
                        "name": f"fault-{dataset}",
                        "task": "binary",
                        "meta_features": {"n_rows": 500 + dataset, "n_features": 9},
                    },
                    "family": "lightgbm",
                    "config": {"learning_rate": 0.01 * (1 + i), "num_leaves": 8 + number % 90},
                    "metric": "roc_auc",
                    "direction": "maximize",
                    "score": 0.5 + (i % 10) / 25,
                    "fidelity": 1.0,
                    "cost_seconds": 0.5,
                    "source": "user",
                }
            )
        return runs

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.Client(base_url=self.base, headers=headers, timeout=30) as client:
            number = 0
            batch = self.batch(number)
            while not self.stop.is_set():
                try:
                    response = client.post("/v1/runs", json={"runs": batch})
                except httpx.TransportError as error:
                    self.answers.append(Answer(time.monotonic(), None, detail=repr(error)))
                    time.sleep(RESEND_DELAY_SECONDS)
                    continue
                answer = Answer(
                    time.monotonic(),
                    response.status_code,
                    response.headers.get("retry-after"),
                    response.text[:300],
                )
                self.answers.append(answer)
                if response.is_success:
                    body = response.json()
                    self.counted += body["inserted"] + body["duplicates"]
                    self.acknowledged += [run["id"] for run in batch]
                    number += 1
                    batch = self.batch(number * CLIENTS + self.index)
                else:
                    # The same batch again: a retry must neither lose nor double runs.
                    time.sleep(RESEND_DELAY_SECONDS)


@dataclass
class ReadClient:
    """A thread reading (listing, stats, readiness, suggestions) until told to stop."""

    base: str
    key: str
    stop: threading.Event
    answers: list[Answer] = field(default_factory=list)

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.Client(base_url=self.base, timeout=30) as client:
            while not self.stop.is_set():
                for method, path, body, auth in (
                    ("GET", "/v1/runs?limit=5", None, headers),
                    ("GET", "/v1/stats", None, headers),
                    ("GET", "/readyz", None, headers),
                    ("POST", "/v1/suggestions", SUGGESTION, headers),
                    # Reads are open: without a key nothing asks the database, and
                    # the policy in memory answers even while the database is down.
                    ("POST", "/v1/suggestions#anonymous", SUGGESTION, {}),
                ):
                    try:
                        response = client.request(
                            method, path.split("#")[0], json=body, headers=auth
                        )
                    except httpx.TransportError as error:
                        self.answers.append(Answer(time.monotonic(), None, detail=repr(error)))
                        continue
                    self.answers.append(
                        Answer(
                            time.monotonic(),
                            response.status_code,
                            response.headers.get("retry-after"),
                            f"{method} {path}: {response.text[:200]}",
                        )
                    )
                time.sleep(RESEND_DELAY_SECONDS)


@pytest.fixture
def private_postgres() -> Iterator[ThrowawayPostgres]:
    """A PostgreSQL server of this test alone, migrated to head."""
    with throwaway_postgres() as server:
        migrate.upgrade(server.url)
        yield server


@contextlib.contextmanager
def serve(url: str, log_path: Path) -> Iterator[str]:
    """A uvicorn process with two workers on ``url``; yields its base URL."""
    env = {
        "HYPERPRIOR_JOBS_IN_PROCESS": "false",
        # The registry watcher polls through the outage too: it must survive it.
        "HYPERPRIOR_SURROGATE_POLL_S": "1",
        "HYPERPRIOR_AUTH_CACHE_S": str(AUTH_CACHE_SECONDS),
    }
    with serve_subprocess(url, workers=2, env=env, log_path=log_path) as base:
        yield base


def _wait(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def _first_success(client: LoadClient, after: float) -> float | None:
    """When the client first got a 2xx after ``after`` (None: not yet)."""
    return next(
        (a.at for a in list(client.answers) if a.at > after and a.status in (200, 201)), None
    )


@pytest.mark.timeout(180)
def test_postgres_restart_mid_ingest_gives_503_then_recovers_and_loses_nothing(
    private_postgres: ThrowawayPostgres, tmp_path: Path
) -> None:
    pg = private_postgres
    engine = make_engine(pg.url, pool_size=2)
    try:
        key = issue_key(Store(engine), "write", name="fault-test")[1]
    finally:
        engine.dispose()

    with serve(pg.url, tmp_path / "server.log") as base:
        # Each worker process builds its suggestion policy on first use (that asks the
        # database which surrogate is active): one new connection per request, so
        # that both workers surely have built theirs before the outage.
        for _ in range(24):
            assert httpx.post(f"{base}/v1/suggestions", json=SUGGESTION).status_code == 200
        stop = threading.Event()
        clients = [LoadClient(base, key, i, stop) for i in range(CLIENTS)]
        reader = ReadClient(base, key, stop)
        threads = [threading.Thread(target=c.run, name=f"client-{c.index}") for c in clients]
        threads.append(threading.Thread(target=reader.run, name="reader"))
        for thread in threads:
            thread.start()
        try:
            # Load first: every client has had a few batches acknowledged.
            assert _wait(lambda: all(len(c.acknowledged) >= 3 * BATCH_SIZE for c in clients), 30)
            down_at = time.monotonic()
            pg.stop("fast")
            stopped_at = time.monotonic()
            time.sleep(OUTAGE_SECONDS)
            pg.start()
            up_at = time.monotonic()  # pg_ctl -w returned: the server accepts connections
            _wait(
                lambda: all(_first_success(c, up_at) is not None for c in clients),
                RECOVERY_LIMIT_SECONDS + 5,
            )
            time.sleep(1.0)  # and a little more load after the recovery
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)

    answers = [a for c in clients for a in c.answers]
    by_status: dict[int | None, int] = {}
    for answer in answers:
        by_status[answer.status] = by_status.get(answer.status, 0) + 1
    recoveries = [_first_success(c, up_at) for c in clients]
    worst = max((r - up_at for r in recoveries if r is not None), default=float("inf"))
    first = min((r - up_at for r in recoveries if r is not None), default=float("inf"))
    acknowledged = [run_id for c in clients for run_id in c.acknowledged]
    print(
        f"\nanswers by status {by_status}; database down for {up_at - down_at:.1f} s "
        f"(stop took {stopped_at - down_at:.2f} s); after it returned, first 2xx in "
        f"{first:.2f} s, every client served within {worst:.2f} s; "
        f"{len(acknowledged)} runs acknowledged; reads by route and status "
        f"{Counter((a.detail.split(':')[0], a.status) for a in reader.answers)}"
    )

    unexpected = [a for a in answers + reader.answers if a.status not in (200, 201, 503)]
    assert unexpected == [], f"answers other than 2xx/503: {unexpected[:5]}"
    # Reads too are refused cleanly while the database is down, and answer after.
    assert any(a.status == 503 for a in reader.answers)
    assert reader.answers[-1].status == 200, reader.answers[-1]
    assert all(a.retry_after for a in reader.answers if a.status == 503)
    anonymous = [a for a in reader.answers if a.detail.startswith("POST /v1/suggestions#")]
    assert anonymous
    assert {a.status for a in anonymous} == {200}
    # Keyed suggestions ride out the restart: the key was verified before it.
    keyed = [a for a in reader.answers if a.detail.startswith("POST /v1/suggestions:")]
    assert [a for a in keyed if stopped_at <= a.at <= up_at], "no keyed suggestion in the outage"
    assert {a.status for a in keyed} == {200}, [a for a in keyed if a.status != 200][:3]
    unavailable = [a for a in answers if a.status == 503]
    during_outage = [a for a in unavailable if stopped_at <= a.at <= up_at]
    assert during_outage, "no request saw the database down"
    assert all(a.retry_after is not None and int(a.retry_after) > 0 for a in unavailable), [
        a for a in unavailable if not a.retry_after
    ][:3]
    assert None not in recoveries, "a client never got a 2xx after the database returned"
    assert worst < RECOVERY_LIMIT_SECONDS

    # Every acknowledged run is stored, once; every acknowledged batch was accounted for.
    assert len(set(acknowledged)) == len(acknowledged)
    assert sum(c.counted for c in clients) == len(acknowledged)
    engine = make_engine(pg.url, pool_size=2)
    try:
        store = Store(engine)
        stored = store.existing_run_ids(uuid.UUID(i) for i in acknowledged)
        total = store.stats().runs
    finally:
        engine.dispose()
    assert len(stored) == len(acknowledged)
    # Batches that failed were resent until acknowledged: nothing else is in there.
    assert total == len(acknowledged)


# --------------------------------------------- a connection dropped inside a transaction


class BackendKiller:
    """Terminates the server process of a connection when it reaches a given point.

    Args:
        engine: the engine whose connections to watch.
        admin: an engine on the same server, to call ``pg_terminate_backend`` from.
        phase: ``insert`` (before the INSERT of runs) or ``commit`` (before COMMIT).
    """

    def __init__(self, engine: Engine, admin: Engine, phase: str) -> None:
        self.admin = admin
        self.armed = False
        self.fired = 0

        # Only the transactions of ingest count: background threads of the app (the
        # registry watcher, the job runner) use the same engine.
        def before_execute(conn: Connection, _cursor: Any, statement: str, *_: Any) -> None:
            if statement.lstrip().startswith("INSERT INTO runs"):
                if phase == "insert":
                    self._kill(conn)
                else:
                    conn.info["ingesting"] = True

        def before_commit(conn: Connection) -> None:
            if conn.info.pop("ingesting", False):
                self._kill(conn)

        event.listen(engine, "before_cursor_execute", before_execute)
        event.listen(engine, "commit", before_commit)

    def _kill(self, conn: Connection) -> None:
        if not self.armed:
            return
        self.armed = False
        pid = conn.connection.dbapi_connection.info.backend_pid  # type: ignore[union-attr]
        with self.admin.connect() as admin:
            # With a timeout, it returns once the backend is gone.
            killed = admin.execute(text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": pid})
            assert killed.scalar() is True
        self.fired += 1


@pytest.mark.parametrize("backend", ["postgres"])
@pytest.mark.parametrize("phase", ["insert", "commit"])
def test_a_connection_dropped_mid_ingest_is_503_and_the_pool_recovers(
    db_url: str, postgres_admin: Engine, phase: str, make_run: Any
) -> None:
    engine = make_engine(db_url, pool_size=2)
    killer = BackendKiller(engine, postgres_admin, phase)
    store = Store(engine)
    app = create_app(
        Settings(database_url=db_url, retrain_in_process=False, surrogate_poll_s=3600),
        store=store,
    )
    _, key = issue_key(store, "write", name="faults")
    runs = [make_run(index=i) for i in range(5)]
    try:
        with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client:
            # The store alone: the driver error becomes DatabaseUnavailableError.
            killer.armed = True
            with pytest.raises(DatabaseUnavailableError, match="connection"):
                store.ingest_runs(store_runs(runs))
            assert killer.fired == 1
            assert store.stats().runs == 0  # rolled back; the pool reconnected

            # Over HTTP: 503 with Retry-After, then the same batch goes in.
            killer.armed = True
            refused = client.post("/v1/runs", json={"runs": runs})
            assert killer.fired == 2
            assert refused.status_code == 503, refused.text
            assert int(refused.headers["retry-after"]) > 0
            accepted = client.post("/v1/runs", json={"runs": runs})
            # The dataset id is the one stored (a rolled-back insert may use up a number).
            stored_id = store.list_datasets().data[0].id
            assert (accepted.status_code, accepted.json()) == (
                201,
                {"inserted": 5, "duplicates": 0, "dataset_ids": [stored_id]},
            )
    finally:
        engine.dispose()


def store_runs(payloads: list[dict[str, Any]]) -> list[Any]:
    """The store's NewRun objects for JSON runs (what the route builds)."""
    from hyperprior.service.schemas import RunCreate

    return [RunCreate.model_validate(p).to_new_run() for p in payloads]
