"""Operations on workers: create, heartbeat, list, and clean up when one goes away."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from joblib_protocol import Emission, TaskStatus, WorkerResponse, WorkerSummary
from joblib_server._dialects import dialect_of
from joblib_server.auth import Identity
from joblib_server.errors import forbidden, worker_not_found
from joblib_server.jobs import check_room_id, soft_delete_orphan_jobs, visible_rooms
from joblib_server.tables import (
    JOB_TABLE,
    LINK_TABLE,
    TASK_TABLE,
    WORKER_TABLE,
    Job,
    Worker,
    WorkerJobLink,
    job_full_name,
    utcnow,
)
from joblib_server.views import TaskRow, jobs_invalidate, task_emission

WORKER_DISCONNECTED = "Worker disconnected"

_task, _job, _worker, _link = TASK_TABLE, JOB_TABLE, WORKER_TABLE, LINK_TABLE

_FAIL_IN_FLIGHT = (
    sa.update(_task)
    .where(
        _task.c.worker_id == sa.bindparam("b_worker"),
        _task.c.status.in_([TaskStatus.CLAIMED.value, TaskStatus.RUNNING.value]),
    )
    .values(
        status=TaskStatus.FAILED.value,
        error=sa.bindparam("b_error"),
        completed_at=sa.bindparam("b_now"),
    )
    .returning(*_task.c)
)

_UNLINK = (
    sa.delete(_link)
    .where(_link.c.worker_id == sa.bindparam("b_worker"))
    .returning(_link.c.job_id)
)

_DELETE_WORKER = sa.delete(_worker).where(_worker.c.id == sa.bindparam("b_worker"))

_JOB_NAMES = sa.select(_job.c.id, _job.c.room_id, _job.c.category, _job.c.name).where(
    _job.c.id.in_(sa.bindparam("b_jobs", expanding=True))
)

_TOUCH = (
    sa.update(_worker)
    .where(
        _worker.c.id == sa.bindparam("b_worker"),
        _worker.c.owner_id == sa.bindparam("b_owner"),
    )
    .values(last_heartbeat=sa.bindparam("b_now"))
    .returning(_worker.c.last_heartbeat)
)


async def create_worker(session: AsyncSession, identity: Identity) -> Worker:
    """Create a worker owned by `identity`."""
    worker = Worker(owner_id=identity.id)
    session.add(worker)
    await session.flush()
    return worker


async def _locked_worker(session: AsyncSession, worker_id: uuid.UUID) -> Worker | None:
    # Locked so that concurrent cleanups of one worker run one after the other:
    # the second then finds the row gone and does nothing.
    statement = dialect_of(session).locked(select(Worker).where(Worker.id == worker_id))
    return (await session.execute(statement)).scalar_one_or_none()


async def owned_worker(
    session: AsyncSession,
    worker_id: uuid.UUID,
    identity: Identity,
    *,
    admin_may: bool = False,
) -> Worker:
    """Load and lock a worker the caller owns (or, with `admin_may`, any as admin)."""
    worker = await _locked_worker(session, worker_id)
    if worker is None:
        raise worker_not_found(worker_id)
    if worker.owner_id != identity.id and not (admin_may and identity.is_admin):
        raise forbidden(f"worker {worker_id} belongs to another identity")
    return worker


async def touch_worker(
    session: AsyncSession,
    worker_id: uuid.UUID,
    identity: Identity,
    now: datetime | None = None,
) -> datetime:
    """Record a sign of life of the caller's own worker, in one statement."""
    connection = await session.connection()
    params = {"b_worker": worker_id, "b_owner": identity.id, "b_now": now or utcnow()}
    beat = (await connection.execute(_TOUCH, params)).scalar_one_or_none()
    if beat is None:
        # Only on the error path: tell an unknown worker from another's.
        owner = await session.execute(
            select(Worker.owner_id).where(Worker.id == worker_id)
        )
        if owner.first() is None:
            raise worker_not_found(worker_id)
        raise forbidden(f"worker {worker_id} belongs to another identity")
    return beat


async def heartbeat(
    session: AsyncSession, worker_id: uuid.UUID, identity: Identity
) -> WorkerResponse:
    """Record that the worker is alive."""
    beat = await touch_worker(session, worker_id, identity)
    return WorkerResponse(id=worker_id, last_heartbeat=beat)


async def list_workers(
    session: AsyncSession, limit: int, offset: int, room_id: str | None = None
) -> tuple[list[WorkerSummary], int]:
    """A page of workers, newest first; with `room_id`, those serving its jobs."""
    job_count = (
        select(sa.func.count())
        .select_from(WorkerJobLink)
        .where(WorkerJobLink.worker_id == Worker.id)
        .scalar_subquery()
    )
    where = []
    if room_id is not None:
        check_room_id(room_id)
        serving = (
            select(WorkerJobLink.worker_id)
            .join(Job, col(Job.id) == WorkerJobLink.job_id)
            .where(
                col(Job.room_id).in_(visible_rooms(room_id)),
                col(Job.deleted).is_(False),
            )
        )
        where.append(col(Worker.id).in_(serving))
    total = (
        await session.execute(select(sa.func.count()).select_from(Worker).where(*where))
    ).scalar_one()
    rows = await session.execute(
        select(Worker.id, Worker.last_heartbeat, job_count)
        .where(*where)
        .order_by(col(Worker.created_at).desc(), col(Worker.id).desc())
        .limit(limit)
        .offset(offset)
    )
    items = [
        WorkerSummary(id=wid, last_heartbeat=beat, job_count=count)
        for wid, beat, count in rows
    ]
    return items, total


async def delete_worker(
    session: AsyncSession, worker_id: uuid.UUID, identity: Identity
) -> set[Emission]:
    """Remove a worker as its owner or an admin (`DELETE /workers/{id}`)."""
    worker = await owned_worker(session, worker_id, identity, admin_may=True)
    return await cleanup_worker(session, worker)


async def cleanup_worker(
    session: AsyncSession,
    worker: Worker,
    *,
    error: str = WORKER_DISCONNECTED,
) -> set[Emission]:
    """Fail the worker's in-flight tasks, remove it, and hide the jobs left orphaned.

    Runs in the caller's transaction and does not commit: the caller commits and
    then emits the returned emissions.
    """
    connection = await session.connection()
    params = {"b_worker": worker.id, "b_error": error, "b_now": utcnow()}
    # On PostgreSQL the UPDATE locks the failed tasks (the same row locks a
    # PATCH /tasks takes); the worker row is already locked by the caller.
    failed = (await connection.execute(_FAIL_IN_FLIGHT, params)).all()
    unlinked = (await connection.execute(_UNLINK, params)).scalars().all()
    await connection.execute(_DELETE_WORKER, params)
    affected = {row.job_id for row in failed} | set(unlinked)
    jobs: dict[uuid.UUID, Any] = {}
    if affected:
        named = await connection.execute(_JOB_NAMES, {"b_jobs": sorted(affected)})
        jobs = {row.id: row for row in named}
    emissions: set[Emission] = set()
    for row in failed:
        job = jobs[row.job_id]
        name = job_full_name(job.room_id, job.category, job.name)
        emissions.add(task_emission(TaskRow.of(row, name)))
    for job_id in unlinked:
        emissions.add(jobs_invalidate(jobs[job_id].room_id))
    emissions |= await soft_delete_orphan_jobs(session, affected)
    return emissions


async def cleanup_worker_by_id(
    session: AsyncSession, worker_id: uuid.UUID
) -> set[Emission]:
    """Clean up a worker by id; a worker already gone is a no-op."""
    worker = await _locked_worker(session, worker_id)
    if worker is None:
        return set()
    return await cleanup_worker(session, worker)


async def cleanup_stale_workers(
    session: AsyncSession,
    timeout_seconds: float,
    now: datetime | None = None,
) -> set[Emission]:
    """Clean up every worker whose last heartbeat is older than the timeout."""
    dialect = dialect_of(session)
    cutoff = (now or utcnow()) - timedelta(seconds=timeout_seconds)
    # SKIP LOCKED: another server process sweeping at the same moment takes
    # the rows we do not, instead of both cleaning up the same worker.
    stale = (
        (
            await session.execute(
                dialect.locked(
                    select(Worker)
                    .where(col(Worker.last_heartbeat) < cutoff)
                    .order_by(col(Worker.last_heartbeat)),
                    skip_locked=True,
                )
            )
        )
        .scalars()
        .all()
    )
    emissions: set[Emission] = set()
    for worker in stale:
        emissions |= await cleanup_worker(session, worker)
    return emissions
