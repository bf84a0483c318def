"""Migrations: after ``upgrade head`` the schema is exactly what the models say."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from hyperprior.db import migrate
from hyperprior.db.engine import make_engine
from hyperprior.db.errors import SchemaOutOfDateError
from hyperprior.db.models import metadata


def test_upgrade_head_matches_the_models(blank_db_url: str) -> None:
    engine = make_engine(blank_db_url)
    try:
        assert migrate.current_revision(engine) is None
        assert not migrate.is_at_head(engine)

        migrate.upgrade(engine)

        assert migrate.current_revision(engine) == migrate.head_revision()
        assert migrate.is_at_head(engine)
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
    finally:
        engine.dispose()


def test_upgrade_is_idempotent_and_downgrade_round_trips(blank_db_url: str) -> None:
    engine = make_engine(blank_db_url)
    try:
        migrate.upgrade(engine)
        migrate.upgrade(engine)
        with engine.begin() as conn:
            command.downgrade(migrate.alembic_config(conn), "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}

        migrate.upgrade(blank_db_url)  # by URL this time

        assert migrate.is_at_head(blank_db_url)
        assert {"datasets", "runs", "surrogates", "jobs", "api_keys", "locks"} <= set(
            inspect(engine).get_table_names()
        )
    finally:
        engine.dispose()


def test_verify_schema_names_the_upgrade_command(blank_db_url: str) -> None:
    with pytest.raises(SchemaOutOfDateError, match="hyperprior db upgrade"):
        migrate.verify_schema(blank_db_url)

    migrate.upgrade(blank_db_url)
    migrate.verify_schema(blank_db_url)


def test_verify_schema_rejects_an_unknown_newer_revision(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = 'ffffffff'"))

        with pytest.raises(SchemaOutOfDateError, match="does not know"):
            migrate.verify_schema(engine)
        assert not migrate.is_at_head(engine)
    finally:
        engine.dispose()


def test_offline_sql_can_be_generated(capsys: pytest.CaptureFixture[str]) -> None:
    config = migrate.alembic_config(url="postgresql+psycopg://u@h/db")

    command.upgrade(config, "head", sql=True)

    out = capsys.readouterr().out
    assert "CREATE TABLE runs" in out
    assert "JSONB" in out


def test_cancelled_status_migration_keeps_jobs_and_the_check(blank_db_url: str) -> None:
    from sqlalchemy.exc import IntegrityError

    engine = make_engine(blank_db_url)
    insert = text(
        "INSERT INTO jobs (id, kind, status, progress, request, created_at) "
        "VALUES (:id, 'refine', :status, '{}', '{\"family\": \"linear\"}', CURRENT_TIMESTAMP)"
    )
    try:
        with engine.begin() as conn:
            command.upgrade(migrate.alembic_config(conn), "0001_initial")
        with engine.begin() as conn:
            conn.execute(insert, {"id": "a" * 36, "status": "running"})
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(insert, {"id": "b" * 36, "status": "cancelled"})

        migrate.upgrade(engine)

        with engine.begin() as conn:
            conn.execute(insert, {"id": "b" * 36, "status": "cancelled"})
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(insert, {"id": "c" * 36, "status": "paused"})
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, status, request FROM jobs ORDER BY id")).all()
        assert [(r[0], r[1]) for r in rows] == [("a" * 36, "running"), ("b" * 36, "cancelled")]
        assert "linear" in str(rows[0][2])

        with engine.begin() as conn:
            command.downgrade(migrate.alembic_config(conn), "0001_initial")
        with engine.connect() as conn:
            statuses = conn.execute(text("SELECT status FROM jobs ORDER BY id")).scalars().all()
        assert statuses == ["running", "failed"]
    finally:
        engine.dispose()
