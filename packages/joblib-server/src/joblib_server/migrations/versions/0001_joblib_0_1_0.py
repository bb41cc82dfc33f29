"""The tables of joblib 0.1.0: jobs, workers, the links between them, and tasks.

0.1.0 made these with `create_all` and kept no version; `joblib_server.schema`
adopts such a database by recording this revision without running it.

Revision ID: 0001
Revises: none
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None

_PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    """Create the four tables and their indexes."""
    op.create_table(
        "joblib_job",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("room_id", sa.String(255), nullable=False),
        sa.Column("category", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("schema", sa.JSON(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("task_seq", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("room_id", "category", "name", name="uq_joblib_job_name"),
    )
    op.create_table(
        "joblib_worker",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("owner_id", sa.String(255), nullable=False),
        sa.Column("last_heartbeat", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_joblib_worker_owner_id", "joblib_worker", ["owner_id"])
    op.create_index(
        "ix_joblib_worker_last_heartbeat", "joblib_worker", ["last_heartbeat"]
    )
    op.create_table(
        "joblib_worker_job",
        sa.Column("worker_id", sa.Uuid(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.PrimaryKeyConstraint("worker_id", "job_id"),
        sa.ForeignKeyConstraint(
            ["worker_id"], ["joblib_worker.id"], ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["job_id"], ["joblib_job.id"], ondelete="CASCADE"),
    )
    op.create_index("ix_joblib_worker_job_job_id", "joblib_worker_job", ["job_id"])
    op.create_table(
        "joblib_task",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("room_id", sa.String(255), nullable=False),
        sa.Column("submitted_by", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        # No foreign key: a failed task keeps the id of a worker deleted since.
        sa.Column("worker_id", sa.Uuid(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.ForeignKeyConstraint(["job_id"], ["joblib_job.id"]),
    )
    # Partial on both databases: claims and queue positions read pending rows only.
    op.create_index(
        "ix_joblib_task_pending",
        "joblib_task",
        ["job_id", "created_at", "seq", "id"],
        postgresql_where=_PENDING,
        sqlite_where=_PENDING,
    )
    op.create_index("ix_joblib_task_worker", "joblib_task", ["worker_id", "status"])
    op.create_index(
        "ix_joblib_task_job_seq", "joblib_task", ["job_id", "status", "seq"]
    )
    op.create_index("ix_joblib_task_room", "joblib_task", ["room_id", "created_at"])
