"""Tasks as calls: results, progress, deadlines and expiry.

- `joblib_job.timeout_seconds` and `pending_timeout_seconds`: the limits every
  task of the job gets unless its submit says otherwise (NULL: none).
- `joblib_task.result`: what the job returned; `progress`: the latest progress
  its worker reported; `timeout_seconds`: its running time limit; `deadline_at`:
  when a running task is failed (`deadline_exceeded`); `expires_at`: when a
  pending one is failed (`expired`). Two partial indexes find the due ones.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None


def upgrade() -> None:
    """Add the columns and the two indexes of due tasks."""
    with op.batch_alter_table("joblib_job") as job:
        job.add_column(sa.Column("timeout_seconds", sa.Float(), nullable=True))
        job.add_column(sa.Column("pending_timeout_seconds", sa.Float(), nullable=True))
    with op.batch_alter_table("joblib_task") as task:
        task.add_column(sa.Column("result", sa.JSON(), nullable=True))
        task.add_column(sa.Column("progress", sa.JSON(), nullable=True))
        task.add_column(sa.Column("timeout_seconds", sa.Float(), nullable=True))
        task.add_column(
            sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True)
        )
        task.add_column(
            sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True)
        )
    op.create_index(
        "ix_joblib_task_deadline",
        "joblib_task",
        ["deadline_at"],
        postgresql_where=sa.text("status = 'running'"),
        sqlite_where=sa.text("status = 'running'"),
    )
    op.create_index(
        "ix_joblib_task_expiry",
        "joblib_task",
        ["expires_at"],
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )
