"""Verified API keys are remembered for HYPERPRIOR_AUTH_CACHE_S: blips pass, revocation holds.

Time is a fake monotonic clock handed to the `Guard`; the database "goes down" by a
store wrapper that raises `DatabaseUnavailableError`, as the real store does when
PostgreSQL restarts. Nothing sleeps.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from hyperprior.db.errors import DatabaseUnavailableError
from hyperprior.db.store import Store
from hyperprior.service.app import create_app
from hyperprior.service.auth import AuthError, Guard, issue_key
from hyperprior.service.settings import Settings

SQLITE = pytest.mark.parametrize("backend", ["sqlite"])
TTL = 10.0


class Ticks:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FlakyStore:
    """The store, with key lookups that count and can fail like a database that is down."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.down = False
        self.lookups = 0

    def find_api_key_by_hash(self, key_hash: str, *, include_revoked: bool = False) -> Any:
        self.lookups += 1
        if self.down:
            raise DatabaseUnavailableError("connection refused", retry_after=5)
        return self.store.find_api_key_by_hash(key_hash, include_revoked=include_revoked)

    def touch_api_key(self, key_id: int) -> None:
        if self.down:
            raise DatabaseUnavailableError("connection refused")
        self.store.touch_api_key(key_id)


def _guard(store: Store, ticks: Ticks, cache_s: float = TTL) -> tuple[Guard, FlakyStore]:
    flaky = FlakyStore(store)
    settings = Settings(database_url="sqlite://", auth_cache_s=cache_s)
    return Guard(flaky, settings, clock=ticks), flaky  # type: ignore[arg-type]


def _header(key: str) -> str:
    return f"Bearer {key}"


@SQLITE
def test_a_verified_key_is_not_looked_up_again_for_half_the_time(store: Store) -> None:
    record, key = issue_key(store, "read", name="cached")
    ticks = Ticks()
    guard, flaky = _guard(store, ticks)
    try:
        assert guard.check(_header(key), "read").key_id == record.id
        ticks.now += TTL / 2 - 0.01
        assert guard.check(_header(key), "read").key_id == record.id
        assert flaky.lookups == 1
        ticks.now += 0.01  # half the time is over: the next use asks the database
        guard.check(_header(key), "read")
        assert flaky.lookups == 2
        # ...and the new answer starts a new period.
        ticks.now += TTL / 2 - 0.01
        guard.check(_header(key), "read")
        assert flaky.lookups == 2
    finally:
        guard.close()


@SQLITE
def test_revocation_takes_effect_within_half_the_time_while_the_database_answers(
    store: Store,
) -> None:
    record, key = issue_key(store, "write", name="to revoke")
    ticks = Ticks()
    guard, _ = _guard(store, ticks)
    try:
        guard.check(_header(key), "write")
        store.revoke_api_key(record.id)
        ticks.now += TTL / 2 - 0.01
        guard.check(_header(key), "write")  # still remembered: the promised window
        ticks.now += 0.01
        with pytest.raises(AuthError, match=f"API key {record.id} was revoked"):
            guard.check(_header(key), "write")
        # Forgotten, not remembered as revoked: a later blip does not bring it back.
        ticks.now += 0.01
        with pytest.raises(AuthError, match="revoked"):
            guard.check(_header(key), "write")
    finally:
        guard.close()


@SQLITE
def test_a_database_blip_is_ridden_out_until_the_time_is_over(store: Store) -> None:
    record, key = issue_key(store, "read", name="rides out")
    ticks = Ticks()
    guard, flaky = _guard(store, ticks)
    try:
        guard.check(_header(key), "read")
        flaky.down = True
        for elapsed in (1.0, TTL / 2, TTL - 0.01):
            ticks.now = 1000.0 + elapsed
            assert guard.check(_header(key), "read").key_id == record.id
        ticks.now = 1000.0 + TTL  # verified too long ago: the 503 of a database that is down
        with pytest.raises(DatabaseUnavailableError, match="connection refused"):
            guard.check(_header(key), "read")
        flaky.down = False
        assert guard.check(_header(key), "read").key_id == record.id
    finally:
        guard.close()


@SQLITE
def test_a_key_revoked_before_an_outage_is_refused_within_the_time(store: Store) -> None:
    record, key = issue_key(store, "write", name="revoked, then the database went down")
    ticks = Ticks()
    guard, flaky = _guard(store, ticks)
    try:
        guard.check(_header(key), "write")  # verified at t=0
        ticks.now += 1.0
        store.revoke_api_key(record.id)  # revoked at t=1, before the check at t=5 sees it
        flaky.down = True
        ticks.now = 1000.0 + TTL - 0.01
        guard.check(_header(key), "write")  # the database cannot tell: still admitted
        ticks.now = 1000.0 + TTL
        with pytest.raises(DatabaseUnavailableError):
            guard.check(_header(key), "write")
        flaky.down = False
        with pytest.raises(AuthError, match="revoked"):
            guard.check(_header(key), "write")
    finally:
        guard.close()


@SQLITE
def test_unknown_keys_are_never_remembered(store: Store) -> None:
    ticks = Ticks()
    guard, flaky = _guard(store, ticks)
    unknown = "hp_" + "b" * 43
    try:
        for _ in range(2):
            with pytest.raises(AuthError, match="invalid API key"):
                guard.check(_header(unknown), "read")
        assert flaky.lookups == 2
        flaky.down = True
        with pytest.raises(DatabaseUnavailableError):
            guard.check(_header(unknown), "read")
        # A key created since works at once: nothing negative was remembered.
        flaky.down = False
        record, key = issue_key(store, "read", name="new")
        assert guard.check(_header(key), "read").key_id == record.id
    finally:
        guard.close()


@SQLITE
def test_a_cache_time_of_zero_asks_the_database_every_time(store: Store) -> None:
    _, key = issue_key(store, "read", name="uncached")
    ticks = Ticks()
    guard, flaky = _guard(store, ticks, cache_s=0)
    try:
        guard.check(_header(key), "read")
        guard.check(_header(key), "read")
        assert flaky.lookups == 2
        flaky.down = True
        with pytest.raises(DatabaseUnavailableError):
            guard.check(_header(key), "read")
    finally:
        guard.close()


@SQLITE
def test_keyed_reads_answer_while_the_database_is_down(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the app: a keyed suggestion is answered from memory, a keyed write is 503."""
    _, key = issue_key(store, "write", name="app")
    settings = Settings(
        database_url="sqlite://",
        retrain_in_process=False,
        surrogate_poll_s=3600,
        jobs_in_process=False,
        auth_reads="key",
        auth_cache_s=3600,
    )
    suggestion = {
        "family": "lightgbm",
        "task": "binary",
        "dataset": {"meta_features": {"n_rows": 500, "n_features": 9, "n_classes": 2}},
    }
    headers = {"Authorization": f"Bearer {key}"}

    def down(*args: Any, **kwargs: Any) -> None:
        raise DatabaseUnavailableError("connection refused", retry_after=7)

    with TestClient(create_app(settings, store=store)) as client:
        # The first answers build the policy and verify the key, with the database up.
        assert client.post("/v1/suggestions", json=suggestion, headers=headers).status_code == 200
        monkeypatch.setattr(store, "find_api_key_by_hash", down)
        answered = client.post("/v1/suggestions", json=suggestion, headers=headers)
        other = client.post(
            "/v1/suggestions", json=suggestion, headers={"Authorization": "Bearer hp_" + "c" * 43}
        )

    assert answered.status_code == 200, answered.text
    assert other.status_code == 503  # a key this process never verified cannot be checked
    assert other.headers["retry-after"] == "7"


@SQLITE
def test_the_event_loop_answers_remembered_keys_and_hands_the_rest_on(store: Store) -> None:
    from hyperprior.service.auth import NeedsStore

    record, key = issue_key(store, "read", name="loop")
    ticks = Ticks()
    guard, flaky = _guard(store, ticks)
    try:
        with pytest.raises(NeedsStore):  # never verified: the database must be asked
            guard.check(_header(key), "read", remembered_only=True)
        assert flaky.lookups == 0
        assert guard.check(_header(key), "read").key_id == record.id
        assert guard.check(_header(key), "read", remembered_only=True).key_id == record.id
        with pytest.raises(AuthError, match="needs scope 'write'"):  # remembered, refused
            guard.check(_header(key), "write", remembered_only=True)
        ticks.now += TTL / 2  # due for a fresh look: not from memory any more
        with pytest.raises(NeedsStore):
            guard.check(_header(key), "read", remembered_only=True)
        assert flaky.lookups == 1
        with pytest.raises(AuthError, match="invalid API key"):  # malformed: no lookup
            guard.check("Bearer nonsense", "read", remembered_only=True)
    finally:
        guard.close()
    uncached, flaky = _guard(store, Ticks(), cache_s=0)
    try:
        with pytest.raises(NeedsStore):
            uncached.check(_header(key), "read", remembered_only=True)
    finally:
        uncached.close()
