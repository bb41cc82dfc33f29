"""Operations on workers: create, heartbeat, list, and clean up when one goes away."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from joblib_protocol import (
    Emission,
    JobFullName,
    TaskStatus,
    WorkerResponse,
    WorkerSummary,
)
from joblib_server.auth import Identity
from joblib_server.backends import backend_of
from joblib_server.errors import forbidden, worker_not_found
from joblib_server.jobs import check_room_id, hide_orphan_jobs, visible_rooms
from joblib_server.outcome import Outcome
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

_SERVES = (
    sa.select(_link.c.job_id)
    .join(_job, _job.c.id == _link.c.job_id)
    .where(
        _link.c.worker_id == sa.bindparam("b_worker"),
        _job.c.room_id == sa.bindparam("b_room"),
        _job.c.category == sa.bindparam("b_category"),
        _job.c.name == sa.bindparam("b_name"),
    )
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


@dataclass(frozen=True, slots=True)
class CleanupReceipt:
    """What cleaning up one worker did."""

    worker_id: uuid.UUID
    failed: tuple[uuid.UUID, ...] = ()
    """The worker's claimed and running tasks, now failed."""
    jobs_removed: tuple[str, ...] = ()
    """The jobs soft-deleted because nobody serves them any more."""


async def create_worker(
    session: AsyncSession, identity: Identity
) -> Outcome[WorkerResponse]:
    """Create a worker owned by `identity`."""
    worker = Worker(owner_id=identity.id)
    session.add(worker)
    await session.flush()
    return Outcome(WorkerResponse(id=worker.id, last_heartbeat=worker.last_heartbeat))


async def _locked_worker(session: AsyncSession, worker_id: uuid.UUID) -> Worker | None:
    # Locked so that concurrent cleanups of one worker run one after the other:
    # the second then finds the row gone and does nothing.
    statement = backend_of(session).locked(select(Worker).where(Worker.id == worker_id))
    return (await session.execute(statement)).scalar_one_or_none()


async def refuse_foreign_worker(
    session: AsyncSession, worker_id: uuid.UUID, identity: Identity
) -> None:
    """The one rule for a worker the caller may not act as: 404 unknown, 403 another's.

    Returns when the worker exists and is the caller's.
    """
    owner = (
        await session.execute(select(Worker.owner_id).where(Worker.id == worker_id))
    ).scalar_one_or_none()
    if owner is None:
        raise worker_not_found(worker_id)
    if owner != identity.id:
        raise forbidden(f"worker {worker_id} belongs to another identity")


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
    if not (admin_may and identity.is_admin):
        await refuse_foreign_worker(session, worker_id, identity)
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
        await refuse_foreign_worker(session, worker_id, identity)
        raise worker_not_found(worker_id)  # deleted between the two statements
    return beat


async def heartbeat(
    session: AsyncSession, worker_id: uuid.UUID, identity: Identity
) -> Outcome[WorkerResponse]:
    """Record that the worker is alive."""
    beat = await touch_worker(session, worker_id, identity)
    return Outcome(WorkerResponse(id=worker_id, last_heartbeat=beat))


async def join_job(
    session: AsyncSession, identity: Identity, worker_id: uuid.UUID, job_name: str
) -> Outcome[None]:
    """Check that the caller's worker serves `job_name` (Socket.IO `join_job_room`).

    Joining is a sign of life, like a heartbeat, and follows the same ownership rule.
    """
    await touch_worker(session, worker_id, identity)
    try:
        name = JobFullName.parse(job_name)
    except ValueError:
        name = None
    linked = None
    if name is not None:
        connection = await session.connection()
        params = {
            "b_worker": worker_id,
            "b_room": name.room_id,
            "b_category": name.category,
            "b_name": name.name,
        }
        linked = (await connection.execute(_SERVES, params)).first()
    if linked is None:
        raise forbidden(f"worker {worker_id} does not serve {job_name}")
    return Outcome(None)


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
) -> Outcome[CleanupReceipt]:
    """Remove a worker as its owner or an admin (`DELETE /workers/{id}`)."""
    worker = await owned_worker(session, worker_id, identity, admin_may=True)
    receipt, emissions = await _cleanup(session, worker, WORKER_DISCONNECTED)
    return Outcome(receipt, emissions, frozenset({worker.id}))


async def cleanup_worker(
    session: AsyncSession,
    worker: Worker,
    *,
    error: str = WORKER_DISCONNECTED,
) -> set[Emission]:
    """Fail the worker's in-flight tasks, remove it, and hide the jobs left orphaned.

    A building block: it runs in the caller's transaction, does not commit, and
    returns the emissions. To clean up a worker as one change, with everything
    that follows the commit, run `JobLib.execute(cleanup_worker_by_id, worker_id)`.
    """
    _receipt, emissions = await _cleanup(session, worker, error)
    return emissions


async def _cleanup(
    session: AsyncSession, worker: Worker, error: str
) -> tuple[CleanupReceipt, set[Emission]]:
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
    hidden, more = await hide_orphan_jobs(session, affected)
    emissions |= more
    receipt = CleanupReceipt(
        worker_id=worker.id,
        failed=tuple(row.id for row in failed),
        jobs_removed=tuple(sorted(job.full_name for job in hidden)),
    )
    return receipt, emissions


async def cleanup_worker_by_id(
    session: AsyncSession, worker_id: uuid.UUID
) -> Outcome[CleanupReceipt]:
    """Clean up a worker by id, as one change; a worker already gone is a no-op."""
    worker = await _locked_worker(session, worker_id)
    if worker is None:
        return Outcome(CleanupReceipt(worker_id))
    receipt, emissions = await _cleanup(session, worker, WORKER_DISCONNECTED)
    return Outcome(receipt, emissions, frozenset({worker_id}))


async def cleanup_stale_workers(
    session: AsyncSession,
    timeout_seconds: float,
    now: datetime | None = None,
) -> Outcome[list[CleanupReceipt]]:
    """Clean up every worker whose last heartbeat is older than the timeout."""
    cutoff = (now or utcnow()) - timedelta(seconds=timeout_seconds)
    # SKIP LOCKED: another server process sweeping at the same moment takes
    # the rows we do not, instead of both cleaning up the same worker.
    stale = (
        (
            await session.execute(
                backend_of(session).locked(
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
    receipts: list[CleanupReceipt] = []
    emissions: set[Emission] = set()
    for worker in stale:
        receipt, more = await _cleanup(session, worker, WORKER_DISCONNECTED)
        receipts.append(receipt)
        emissions |= more
    return Outcome(receipts, emissions, frozenset(r.worker_id for r in receipts))
