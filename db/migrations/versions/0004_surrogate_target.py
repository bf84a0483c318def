"""A surrogate predicts one target: its family's primary metric ('') or a named metric.

One active surrogate per (family, target) instead of per family, so that requests
judged by log-loss, F1 or RMSE are ranked by a model of that metric.

Revision ID: 0004_surrogate_target
Revises: 0003_run_metrics
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_surrogate_target"
down_revision: str | None = "0003_run_metrics"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ACTIVE = sa.text("status = 'active'")


def upgrade() -> None:
    with op.batch_alter_table("surrogates") as batch:
        batch.add_column(
            sa.Column("target", sa.String(length=64), nullable=False, server_default="")
        )
    op.drop_index("uq_surrogates_family_active", table_name="surrogates")
    op.create_index(
        "uq_surrogates_family_target_active",
        "surrogates",
        ["family", "target"],
        unique=True,
        sqlite_where=_ACTIVE,
        postgresql_where=_ACTIVE,
    )


def downgrade() -> None:
    # The old schema allows one active surrogate per family: keep the primary ones.
    op.execute("UPDATE surrogates SET status = 'retired' WHERE target <> '' AND status = 'active'")
    op.execute("DELETE FROM surrogates WHERE target <> ''")
    op.drop_index("uq_surrogates_family_target_active", table_name="surrogates")
    with op.batch_alter_table("surrogates") as batch:
        batch.drop_column("target")
    op.create_index(
        "uq_surrogates_family_active",
        "surrogates",
        ["family"],
        unique=True,
        sqlite_where=_ACTIVE,
        postgresql_where=_ACTIVE,
    )
