"""Security and reliability: job owners, claim bookkeeping, idempotent submits.

- `joblib_job.owner_id`: the identity that first registered the job; only it (or
  an admin) may link workers to it. NULL for jobs made before 0.2.0, which keep
  the old rule (anyone may link) until re-registered by their owner.
- `joblib_task.claimed_at` and `claim_request_id`: when and by which claim request
  a task was claimed, so a retried claim gets the same task back and a claimed
  task never started goes back to the queue.
- `joblib_idempotency_key`: the task each `Idempotency-Key` of a submitter made,
  kept for a day.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None


def upgrade() -> None:
    """Add the columns and the idempotency table."""
    with op.batch_alter_table("joblib_job") as job:
        job.add_column(sa.Column("owner_id", sa.String(255), nullable=True))
    with op.batch_alter_table("joblib_task") as task:
        task.add_column(
            sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True)
        )
        task.add_column(sa.Column("claim_request_id", sa.String(64), nullable=True))
    op.create_table(
        "joblib_idempotency_key",
        sa.Column("owner_id", sa.String(255), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("owner_id", "key"),
    )
    op.create_index(
        "ix_joblib_idempotency_key_created_at",
        "joblib_idempotency_key",
        ["created_at"],
    )
