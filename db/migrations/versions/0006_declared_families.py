"""Declared families: a user's own model family, stored by its search space.

``POST /v1/families`` stores the declaration (typed parameters and defaults per task,
as JSON) so that every API process, the retrainer and the job worker know it.

Revision ID: 0006_declared_families
Revises: 0005_dataset_identity
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006_declared_families"
down_revision: str | None = "0005_dataset_identity"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "families",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("params", _json(), nullable=False),
        sa.Column("defaults", _json(), nullable=False),
        sa.Column("spec_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_families")),
    )


def downgrade() -> None:
    # Runs of declared families stay; only the declarations go (their runs become the
    # runs of an undeclared family, as before this revision).
    op.drop_table("families")
