"""Retention: finished tasks are deleted once `Settings.task_retention_seconds` old.

Only completed, failed and cancelled tasks go, counted from `completed_at`;
pending, claimed and running ones stay whatever their age. The sweeper deletes
them in small batches, each its own transaction through `JobLib.execute`, so no
sweep holds the write lock for long. An `Idempotency-Key` whose task was deleted
makes a new task when it is sent again (see `idempotency`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from joblib_protocol import TERMINAL_STATUSES
from joblib_server.backends import backend_of
from joblib_server.outcome import Outcome
from joblib_server.tables import TASK_TABLE, utcnow

_tasks = TASK_TABLE
_FINISHED = sorted(status.value for status in TERMINAL_STATUSES)


def _past_retention(cutoff: datetime) -> list[sa.ColumnElement[bool]]:
    # `completed_at < cutoff` alone walks ix_joblib_task_completed; the status
    # keeps a task that somehow carries a `completed_at` while open.
    return [_tasks.c.completed_at < cutoff, _tasks.c.status.in_(_FINISHED)]


async def delete_finished_tasks(
    session: AsyncSession,
    retention_seconds: float,
    batch: int = 500,
    *,
    now: datetime | None = None,
) -> Outcome[int]:
    """Delete up to `batch` tasks finished over `retention_seconds` ago; how many.

    Nobody is told: a task this old has long been announced finished, and
    reading it now answers 404 `task-not-found`.
    """
    cutoff = (now or utcnow()) - timedelta(seconds=retention_seconds)
    connection = await session.connection()
    # Rows another server process is deleting right now are skipped (PostgreSQL).
    select = backend_of(session).locked(
        sa.select(_tasks.c.id)
        .where(*_past_retention(cutoff))
        .order_by(_tasks.c.completed_at)
        .limit(batch),
        skip_locked=True,
    )
    ids = (await connection.execute(select)).scalars().all()
    if not ids:
        return Outcome(0)
    deleted = await connection.execute(
        sa.delete(_tasks).where(_tasks.c.id.in_(ids), *_past_retention(cutoff))
    )
    return Outcome(deleted.rowcount)
