"""Queue positions: each job numbers its tasks, so a position is two index lookups.

Each job hands its tasks increasing sequence numbers at submit time, and claims
take a job's pending tasks oldest first. A pending task's position is therefore
its sequence number minus that of its job's oldest pending task, plus one. The
trade-off: a pending task cancelled ahead of yours still counts until every task
before it has left the queue, so a position may be too large by the number of such
cancellations, never too small.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from joblib_protocol import TaskStatus
from joblib_server.tables import JOB_TABLE, TASK_TABLE, job_full_name

_task, _job = TASK_TABLE, JOB_TABLE

_PENDING_HEAD = sa.select(sa.func.min(_task.c.seq)).where(
    # A parameter, not PENDING: SQLite then takes (job_id, status, seq) and reads
    # one index entry, instead of every entry of the partial pending index.
    _task.c.job_id == sa.bindparam("b_job"),
    _task.c.status == TaskStatus.PENDING.value,
)


_JOBS_WITH_PENDING = sa.select(_job.c.room_id, _job.c.category, _job.c.name).where(
    sa.exists()
    .where(
        _task.c.job_id == _job.c.id,
        # A parameter, as in _PENDING_HEAD: the (job_id, status, seq) index.
        _task.c.status == sa.bindparam("b_pending"),
    )
    .correlate(_job)
)


async def jobs_with_pending(connection: AsyncConnection) -> set[str]:
    """The full names of the jobs that have a pending task (one index probe each)."""
    rows = await connection.execute(
        _JOBS_WITH_PENDING, {"b_pending": TaskStatus.PENDING.value}
    )
    return {job_full_name(room, category, name) for room, category, name in rows}


async def pending_head(connection: AsyncConnection, job_id: uuid.UUID) -> int | None:
    """One job's lowest pending sequence number."""
    head = await connection.execute(_PENDING_HEAD, {"b_job": job_id})
    return head.scalar_one_or_none()


def queue_position(status: str, seq: int, head: int | None) -> int | None:
    """The queue position of a task, given its job's pending head."""
    if status != TaskStatus.PENDING or head is None:
        return None
    return max(seq - head + 1, 1)
