"""Declared families in the store, on every backend, and their migration."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import inspect

from hyperprior.db import migrate
from hyperprior.db.engine import make_engine
from hyperprior.db.errors import AlreadyExistsError
from hyperprior.db.store import Store

PARAMS = [{"name": "max_depth", "type": "int", "low": 2, "high": 10, "default": 6}]


def test_declare_find_list_and_conflict(store: Store) -> None:
    record, created = store.declare_family(
        "my_xgboost", params=PARAMS, defaults={}, spec_sha256="a" * 64, description="mine"
    )
    again, created_again = store.declare_family(
        "my_xgboost", params=PARAMS, defaults={}, spec_sha256="a" * 64
    )

    assert created
    assert not created_again
    assert again == record
    assert record.params == PARAMS
    assert record.description == "mine"
    assert record.created_at.tzinfo is not None
    with pytest.raises(AlreadyExistsError, match="another space"):
        store.declare_family("my_xgboost", params=[], defaults={}, spec_sha256="b" * 64)
    assert store.find_family("my_xgboost") == record
    assert store.find_family("nope") is None
    assert [f.name for f in store.list_families()] == ["my_xgboost"]
    # A copy: changing it changes nothing stored.
    record.params.clear()
    assert store.find_family("my_xgboost").params == PARAMS  # type: ignore[union-attr]


def test_the_families_migration_round_trips(blank_db_url: str) -> None:
    engine = make_engine(blank_db_url)
    try:
        with engine.begin() as conn:
            command.upgrade(migrate.alembic_config(conn), "0005_dataset_identity")
        assert "families" not in inspect(engine).get_table_names()

        migrate.upgrade(engine)
        Store(engine).declare_family("my_model", params=PARAMS, defaults={}, spec_sha256="c" * 64)
        with engine.begin() as conn:
            command.downgrade(migrate.alembic_config(conn), "0005_dataset_identity")

        assert "families" not in inspect(engine).get_table_names()
        assert "runs" in inspect(engine).get_table_names()
        migrate.upgrade(engine)
        assert Store(engine).list_families() == []
    finally:
        engine.dispose()
