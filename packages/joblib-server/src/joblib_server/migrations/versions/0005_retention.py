"""Retention: an index of finished tasks by when they finished.

- `ix_joblib_task_completed`: the sweeper finds the finished tasks past
  `Settings.task_retention_seconds` through it, oldest first, without reading
  the pending, claimed and running ones (their `completed_at` is NULL).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None


def upgrade() -> None:
    """Add the index of finished tasks."""
    op.create_index(
        "ix_joblib_task_completed",
        "joblib_task",
        ["completed_at"],
        postgresql_where=sa.text("completed_at IS NOT NULL"),
        sqlite_where=sa.text("completed_at IS NOT NULL"),
    )
