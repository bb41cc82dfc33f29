"""Providers: server-dispatched reads from workers.

- `joblib_provider`: one row per provider, unique by (room, category, name);
  `worker_id` is the worker serving it (deleted with it), `owner_id` the
  identity that may upload its results, `content_type` what its results are.
  The results themselves are never stored here (see `provider_results`).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None


def upgrade() -> None:
    """Create the providers table."""
    op.create_table(
        "joblib_provider",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("room_id", sa.String(255), nullable=False),
        sa.Column("category", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("schema", sa.JSON(), nullable=False),
        sa.Column("content_type", sa.String(255), nullable=False),
        sa.Column("worker_id", sa.Uuid(), nullable=False),
        sa.Column("owner_id", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["worker_id"], ["joblib_worker.id"], ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "room_id", "category", "name", name="uq_joblib_provider_name"
        ),
    )
    op.create_index("ix_joblib_provider_worker_id", "joblib_provider", ["worker_id"])
