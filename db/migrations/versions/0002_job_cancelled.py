"""Jobs can be cancelled: 'cancelled' joins the job statuses.

Revision ID: 0002_job_cancelled
Revises: 0001_initial
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002_job_cancelled"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BEFORE = "status IN ('queued', 'running', 'succeeded', 'failed')"
_AFTER = "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')"


def _replace_status_check(condition: str) -> None:
    # SQLite cannot alter a constraint: batch mode copies the table (rows, indexes, keys).
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(op.f("ck_jobs_status"), type_="check")
        batch.create_check_constraint(op.f("ck_jobs_status"), condition)


def upgrade() -> None:
    _replace_status_check(_AFTER)


def downgrade() -> None:
    # The old schema has no word for a cancelled job; it failed, as far as it can tell.
    op.execute("UPDATE jobs SET status = 'failed' WHERE status = 'cancelled'")
    _replace_status_check(_BEFORE)
