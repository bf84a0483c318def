"""Runs carry every metric of their task: a nullable JSON map beside the primary score.

Revision ID: 0003_run_metrics
Revises: 0002_job_cancelled
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003_run_metrics"
down_revision: str | None = "0002_job_cancelled"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL means "not measured": runs stored before this revision, or ingested
    # without a metrics map. Adding a nullable column rewrites no rows.
    json_type = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    op.add_column("runs", sa.Column("metrics", json_type, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("metrics")
