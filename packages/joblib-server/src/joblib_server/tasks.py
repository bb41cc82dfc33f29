"""Operations on tasks: submit, claim, update, read, and fail the stuck ones.

Queue positions: each job hands its tasks increasing sequence numbers at submit
time, and claims take a job's pending tasks oldest first. A pending task's position
is therefore its sequence number minus that of its job's oldest pending task, plus
one: two index lookups, however long the queue. The trade-off: a pending task
cancelled ahead of yours still counts until every task before it has left the
queue, so a position may be too large by the number of such cancellations, never
too small.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from joblib_protocol import (
    INTERNAL_ROOM,
    Emission,
    InternalJobNotConfigured,
    TaskAvailable,
    TaskResponse,
    TaskStatus,
    TaskUpdateRequest,
    ValidationFailed,
    is_terminal,
    is_valid_transition,
    job_channel,
)
from joblib_server._dialects import PENDING, dialect_of
from joblib_server.auth import Identity
from joblib_server.errors import (
    ProblemError,
    forbidden,
    invalid_transition,
    job_not_found,
    task_not_found,
)
from joblib_server.jobs import check_room_id, find_job, soft_delete_orphan_jobs
from joblib_server.tables import Job, Task, Worker, WorkerJobLink, utcnow
from joblib_server.views import task_emission, task_response
from joblib_server.workers import touch_worker

INTERNAL_TASK_TIMED_OUT = "Internal task timed out"


@dataclass
class TaskChange:
    """A task as it is after an operation, and what to tell the world about it."""

    task: TaskResponse | None
    emissions: set[Emission] = field(default_factory=set)


async def _pending_heads(
    session: AsyncSession, job_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, int]:
    """Each job's lowest pending sequence number, in one grouped query."""
    ids = set(job_ids)
    if not ids:
        return {}
    rows = await session.execute(
        select(Task.job_id, sa.func.min(Task.seq))
        .where(col(Task.job_id).in_(ids), Task.status == TaskStatus.PENDING.value)
        .group_by(col(Task.job_id))
    )
    return {job_id: head for job_id, head in rows}


async def with_positions(
    session: AsyncSession, rows: Iterable[tuple[Task, Job]]
) -> list[TaskResponse]:
    """Answer rows as `TaskResponse`s, with queue positions for the pending ones."""
    rows = list(rows)
    pending_jobs = [job.id for task, job in rows if task.status == TaskStatus.PENDING]
    heads = await _pending_heads(session, pending_jobs)
    return [
        task_response(task, job, _position(task, heads.get(job.id)))
        for task, job in rows
    ]


def _position(task: Task, head: int | None) -> int | None:
    if task.status != TaskStatus.PENDING or head is None:
        return None
    return max(task.seq - head + 1, 1)


async def submit_task(
    session: AsyncSession,
    identity: Identity,
    room_id: str,
    full_name: str,
    payload: dict[str, Any],
    *,
    internal_jobs: bool = False,
) -> TaskChange:
    """Queue a task for a job visible from `room_id`."""
    job = await find_job(session, room_id, full_name)
    if job.room_id == INTERNAL_ROOM and not internal_jobs:
        raise ProblemError(
            InternalJobNotConfigured,
            f"this server runs no internal jobs, so {full_name!r} cannot be run",
        )
    # Taking the next number locks the job row until commit, which also keeps a
    # concurrent soft delete from hiding the job under a fresh pending task.
    seq = (
        await session.execute(
            sa.update(Job)
            .where(col(Job.id) == job.id, col(Job.deleted).is_(False))
            .values(task_seq=Job.task_seq + 1)
            .returning(col(Job.task_seq))
        )
    ).scalar_one_or_none()
    if seq is None:
        raise job_not_found(full_name, room_id)
    task = Task(
        job_id=job.id,
        room_id=room_id,
        submitted_by=identity.id,
        payload=payload,
        seq=seq,
        created_at=utcnow(),
    )
    session.add(task)
    await session.flush()
    heads = await _pending_heads(session, [job.id])
    position = _position(task, heads.get(job.id))
    emissions = {task_emission(task, job, position)}
    if job.room_id != INTERNAL_ROOM:
        emissions.add(
            Emission(
                TaskAvailable(
                    job_name=job.full_name, room_id=room_id, task_id=str(task.id)
                ),
                job_channel(job.full_name),
            )
        )
    return TaskChange(task_response(task, job, position), emissions)


async def claim_task(
    session: AsyncSession,
    identity: Identity,
    worker_id: uuid.UUID,
    *,
    start: bool = False,
) -> TaskChange:
    """Claim the worker's oldest pending task, atomically; None when there is none."""
    dialect = dialect_of(session)
    now = utcnow()
    await touch_worker(session, worker_id, identity, now)  # a claim proves life
    for job in await _jobs_by_oldest_pending(session, worker_id):
        claim = dialect.claim_in_job(job.id, worker_id, now, start=start)
        row = (await session.execute(claim)).first()
        if row is None:
            # Every pending task of this job is being claimed by someone else
            # right now (PostgreSQL skips locked rows): try the next job.
            continue
        task = Task(**row._mapping)
        emissions = {task_emission(task, job)}
        if start:
            # Observers still see the task pass through claimed.
            claimed = Task(**{**row._mapping, "status": TaskStatus.CLAIMED.value})
            claimed.started_at = None
            emissions.add(task_emission(claimed, job))
        return TaskChange(task_response(task, job, None), emissions)
    return TaskChange(None)


async def _jobs_by_oldest_pending(
    session: AsyncSession, worker_id: uuid.UUID
) -> list[Job]:
    """The worker's jobs that have pending tasks, oldest waiting task first.

    One index lookup per job (its oldest pending task), however long the queues:
    the worker's jobs are few, their backlogs may be long.
    """
    head = (
        select(Task.created_at)
        .where(Task.job_id == Job.id, Task.status == PENDING)
        .order_by(col(Task.created_at), col(Task.seq), col(Task.id))
        .limit(1)
        .correlate(Job)
        .scalar_subquery()
    )
    rows = await session.execute(
        select(Job, head)
        .join(WorkerJobLink, col(WorkerJobLink.job_id) == Job.id)
        .where(WorkerJobLink.worker_id == worker_id)
    )
    waiting = [(oldest, job) for job, oldest in rows if oldest is not None]
    return [job for _oldest, job in sorted(waiting, key=lambda pair: pair[0])]


async def _locked_task(session: AsyncSession, task_id: uuid.UUID) -> tuple[Task, Job]:
    dialect = dialect_of(session)
    row = (
        await session.execute(
            dialect.locked(
                select(Task, Job)
                .join(Job, col(Job.id) == Task.job_id)
                .where(Task.id == task_id),
                # Only the task: locking the job row too would queue every
                # update of a job behind the others.
                of=Task,
            ).execution_options(populate_existing=True)
        )
    ).first()
    if row is None:
        raise task_not_found(task_id)
    return row[0], row[1]


async def update_task(
    session: AsyncSession,
    identity: Identity,
    task_id: uuid.UUID,
    request: TaskUpdateRequest,
) -> TaskChange:
    """Move a task to a new state, as its worker's owner, an admin, or its submitter."""
    task, job = await _locked_task(session, task_id)
    new = request.status
    worker_owner: str | None = None
    if task.worker_id is not None:
        worker_owner = (
            await session.execute(
                select(Worker.owner_id).where(Worker.id == task.worker_id)
            )
        ).scalar_one_or_none()
    allowed = (
        identity.is_admin
        or (worker_owner is not None and worker_owner == identity.id)
        or (new == TaskStatus.CANCELLED and task.submitted_by == identity.id)
    )
    if not allowed:
        raise forbidden(f"task {task_id} is not yours to update")
    if not is_valid_transition(task.status, new) or new == TaskStatus.CLAIMED:
        raise invalid_transition(task.status, new.value)
    if request.error is not None and not is_terminal(new):
        raise _invalid_error("an error may only be given with a terminal status")
    if request.error is not None and "\x00" in request.error:
        # PostgreSQL text cannot hold NUL; SQLite could, but both must answer alike.
        raise _invalid_error("an error must not contain NUL characters")
    now = utcnow()
    task.status = new.value
    if new == TaskStatus.RUNNING:
        task.started_at = now
    if is_terminal(new):
        task.completed_at = now
        task.error = request.error
    await session.flush()
    emissions = {task_emission(task, job)}
    if is_terminal(new):
        emissions |= await soft_delete_orphan_jobs(session, [job.id])
    return TaskChange(task_response(task, job, None), emissions)


def _invalid_error(msg: str) -> ProblemError:
    return ProblemError(
        ValidationFailed, msg, errors=[{"loc": ["body", "error"], "msg": msg}]
    )


async def get_task(session: AsyncSession, task_id: uuid.UUID) -> TaskResponse:
    """A task by id."""
    row = (
        await session.execute(
            select(Task, Job)
            .join(Job, col(Job.id) == Task.job_id)
            .where(Task.id == task_id)
        )
    ).first()
    if row is None:
        raise task_not_found(task_id)
    return (await with_positions(session, [(row[0], row[1])]))[0]


async def list_tasks(
    session: AsyncSession,
    room_id: str,
    limit: int,
    offset: int,
    *,
    full_name: str | None = None,
    status: TaskStatus | None = None,
) -> tuple[list[TaskResponse], int]:
    """A page of the tasks submitted in a room (optionally of one job), newest first."""
    check_room_id(room_id)
    where: list[Any] = [Task.room_id == room_id]
    if full_name is not None:
        job = await find_job(session, room_id, full_name, include_deleted=True)
        where.append(Task.job_id == job.id)
    if status is not None:
        where.append(Task.status == status.value)
    total = (
        await session.execute(select(sa.func.count()).select_from(Task).where(*where))
    ).scalar_one()
    rows = await session.execute(
        select(Task, Job)
        .join(Job, col(Job.id) == Task.job_id)
        .where(*where)
        .order_by(col(Task.created_at).desc(), col(Task.seq).desc())
        .limit(limit)
        .offset(offset)
    )
    items = await with_positions(session, [(t, j) for t, j in rows])
    return items, total


async def cleanup_stuck_internal_tasks(
    session: AsyncSession, timeout_seconds: float, now: datetime | None = None
) -> set[Emission]:
    """Fail `@internal` tasks that have been running longer than the timeout."""
    dialect = dialect_of(session)
    now = now or utcnow()
    cutoff = now - timedelta(seconds=timeout_seconds)
    rows = await session.execute(
        dialect.locked(
            select(Task, Job)
            .join(Job, col(Job.id) == Task.job_id)
            .where(
                Job.room_id == INTERNAL_ROOM,
                Task.status == TaskStatus.RUNNING.value,
                col(Task.started_at) < cutoff,
            ),
            skip_locked=True,
            of=Task,
        ).execution_options(populate_existing=True)
    )
    emissions: set[Emission] = set()
    jobs: set[uuid.UUID] = set()
    for task, job in rows:
        task.fail(INTERNAL_TASK_TIMED_OUT, now)
        emissions.add(task_emission(task, job))
        jobs.add(job.id)
    await session.flush()
    emissions |= await soft_delete_orphan_jobs(session, jobs)
    return emissions
