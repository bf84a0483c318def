"""Initial schema: datasets, runs, surrogates, jobs, api keys, locks.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("key_hash", sa.String(length=128), nullable=False),
        sa.Column("scopes", _json(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("revoked_at", _ts(), nullable=True),
        sa.Column("last_used_at", _ts(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("task", sa.String(length=16), nullable=False),
        sa.Column("n_rows", sa.BigInteger(), nullable=False),
        sa.Column("n_features", sa.Integer(), nullable=False),
        sa.Column("n_classes", sa.Integer(), nullable=True),
        sa.Column("meta_features", _json(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.CheckConstraint(
            "task IN ('binary', 'multiclass', 'regression')", name=op.f("ck_datasets_task")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_datasets")),
        sa.UniqueConstraint("fingerprint", name=op.f("uq_datasets_fingerprint")),
    )
    op.create_table(
        "locks",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("expires_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_locks")),
    )
    op.create_table(
        "surrogates",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("family", sa.String(length=64), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("n_runs", sa.BigInteger(), nullable=False),
        sa.Column("metrics", _json(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("model_text", sa.Text(), nullable=False),
        sa.Column("meta", _json(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.CheckConstraint(
            "status IN ('candidate', 'active', 'retired')", name=op.f("ck_surrogates_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_surrogates")),
    )
    op.create_index("ix_surrogates_family_status", "surrogates", ["family", "status"])
    op.create_index(
        "uq_surrogates_family_active",
        "surrogates",
        ["family"],
        unique=True,
        sqlite_where=sa.text("status = 'active'"),
        postgresql_where=sa.text("status = 'active'"),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("progress", _json(), nullable=False),
        sa.Column("request", _json(), nullable=False),
        sa.Column("result", _json(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("owner_key_id", sa.Integer(), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("started_at", _ts(), nullable=True),
        sa.Column("finished_at", _ts(), nullable=True),
        sa.Column("heartbeat_at", _ts(), nullable=True),
        sa.CheckConstraint(
            "kind IN ('refine', 'retrain', 'bootstrap')", name=op.f("ck_jobs_kind")
        ),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed')", name=op.f("ck_jobs_status")
        ),
        sa.ForeignKeyConstraint(
            ["owner_key_id"],
            ["api_keys.id"],
            name=op.f("fk_jobs_owner_key_id_api_keys"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    op.create_index(op.f("ix_jobs_created_at"), "jobs", ["created_at"])
    op.create_index(op.f("ix_jobs_owner_key_id"), "jobs", ["owner_key_id"])
    op.create_index("ix_jobs_status_heartbeat_at", "jobs", ["status", "heartbeat_at"])
    op.create_table(
        "runs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("family", sa.String(length=64), nullable=False),
        sa.Column("config", _json(), nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("score", sa.Double(), nullable=True),
        sa.Column("fidelity", sa.Double(), nullable=False),
        sa.Column("cost_seconds", sa.Double(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("content_sha", sa.String(length=64), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.CheckConstraint(
            "direction IN ('maximize', 'minimize')", name=op.f("ck_runs_direction")
        ),
        sa.CheckConstraint(
            "score IS NOT NULL OR status = 'failed'", name=op.f("ck_runs_score")
        ),
        sa.CheckConstraint(
            "source IN ('user', 'bootstrap', 'verification', 'import')",
            name=op.f("ck_runs_source"),
        ),
        sa.CheckConstraint("status IN ('ok', 'failed')", name=op.f("ck_runs_status")),
        sa.CheckConstraint("cost_seconds >= 0", name=op.f("ck_runs_cost_seconds")),
        sa.CheckConstraint("fidelity > 0 AND fidelity <= 1", name=op.f("ck_runs_fidelity")),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name=op.f("fk_runs_dataset_id_datasets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_index("ix_runs_created_at_id", "runs", ["created_at", "id"])
    op.create_index(
        "ix_runs_dataset_id_created_at_id", "runs", ["dataset_id", "created_at", "id"]
    )
    op.create_index("ix_runs_family_created_at_id", "runs", ["family", "created_at", "id"])
    op.create_index("ix_runs_family_dataset_id", "runs", ["family", "dataset_id"])
    op.create_index("ix_runs_source_created_at_id", "runs", ["source", "created_at", "id"])


def downgrade() -> None:
    op.drop_table("runs")
    op.drop_table("jobs")
    op.drop_table("surrogates")
    op.drop_table("locks")
    op.drop_table("datasets")
    op.drop_table("api_keys")
