"""Disconnects that lose nothing: attempts and reasons, policies, grace, epochs.

- `joblib_task.attempt` (1 for a first run) and `error_code` (why it failed).
- `joblib_job.disconnect_action`, `max_attempts`, `grace_seconds`: the job's
  disconnect policy, where its registration set one (NULL: the server default).
- `joblib_worker.disconnected_at` (its socket dropped; it has the grace time to
  come back) and `socket_epoch` (bumped by every join, so a socket that closes
  after its worker joined again elsewhere cleans nothing up).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None


def upgrade() -> None:
    """Add the columns; every existing row gets the value it would have had."""
    with op.batch_alter_table("joblib_task") as task:
        task.add_column(
            sa.Column("attempt", sa.Integer(), nullable=False, server_default="1")
        )
        task.add_column(sa.Column("error_code", sa.String(32), nullable=True))
    with op.batch_alter_table("joblib_job") as job:
        job.add_column(sa.Column("disconnect_action", sa.String(16), nullable=True))
        job.add_column(sa.Column("max_attempts", sa.Integer(), nullable=True))
        job.add_column(sa.Column("grace_seconds", sa.Float(), nullable=True))
    with op.batch_alter_table("joblib_worker") as worker:
        worker.add_column(
            sa.Column("disconnected_at", sa.DateTime(timezone=True), nullable=True)
        )
        worker.add_column(
            sa.Column(
                "socket_epoch", sa.BigInteger(), nullable=False, server_default="0"
            )
        )
        worker.create_index("ix_joblib_worker_disconnected_at", ["disconnected_at"])
