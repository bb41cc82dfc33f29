"""Operations on workers: create, heartbeat, list, and clean up when one goes away."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from joblib_protocol import (
    JobFullName,
    WorkerResponse,
    WorkerSummary,
)
from joblib_server.auth import Identity
from joblib_server.backends import backend_of
from joblib_server.errors import forbidden, worker_not_found
from joblib_server.jobs import check_room_id, visible_rooms
from joblib_server.outcome import Outcome
from joblib_server.pages import bounded_count
from joblib_server.tables import (
    JOB_TABLE,
    LINK_TABLE,
    TASK_TABLE,
    WORKER_TABLE,
    Job,
    Worker,
    WorkerJobLink,
    utcnow,
)

_task, _job, _worker, _link = TASK_TABLE, JOB_TABLE, WORKER_TABLE, LINK_TABLE

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

_SERVED_ROOMS = (
    sa.select(_job.c.room_id)
    .distinct()
    .join(_link, _link.c.job_id == _job.c.id)
    .where(_link.c.worker_id == sa.bindparam("b_worker"))
)

_TOUCH = (
    sa.update(_worker)
    .where(
        _worker.c.id == sa.bindparam("b_worker"),
        _worker.c.owner_id == sa.bindparam("b_owner"),
    )
    # Any sign of life also ends a grace time: the worker is back.
    .values(last_heartbeat=sa.bindparam("b_now"), disconnected_at=None)
    .returning(_worker.c.last_heartbeat)
)

_JOIN = (
    sa.update(_worker)
    .where(
        _worker.c.id == sa.bindparam("b_worker"),
        _worker.c.owner_id == sa.bindparam("b_owner"),
    )
    .values(
        last_heartbeat=sa.bindparam("b_now"),
        disconnected_at=None,
        socket_epoch=_worker.c.socket_epoch + 1,
    )
    .returning(_worker.c.socket_epoch)
)

_KEEP_ALIVE = (
    sa.update(_worker)
    .where(_worker.c.id.in_(sa.bindparam("b_workers", expanding=True)))
    .values(last_heartbeat=sa.bindparam("b_now"))
)

_KEEP_ALIVE_BATCH = 10_000
"""Workers per statement: far below both databases' limits on parameters."""

_RETURNED = (
    sa.update(_worker)
    .where(
        _worker.c.id == sa.bindparam("b_worker"),
        _worker.c.disconnected_at.is_not(None),
    )
    .values(disconnected_at=None)
)


async def create_worker(
    session: AsyncSession, identity: Identity
) -> Outcome[WorkerResponse]:
    """Create a worker owned by `identity`."""
    worker = Worker(owner_id=identity.id)
    session.add(worker)
    await session.flush()
    return Outcome(WorkerResponse(id=worker.id, last_heartbeat=worker.last_heartbeat))


async def locked_worker(session: AsyncSession, worker_id: uuid.UUID) -> Worker | None:
    """The worker row, locked until commit; None when there is none."""
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
    worker = await locked_worker(session, worker_id)
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


async def keep_alive(
    session: AsyncSession,
    worker_ids: Collection[uuid.UUID],
    now: datetime | None = None,
) -> Outcome[int]:
    """Record a heartbeat for every worker given, in one statement; how many exist.

    For the workers whose sockets a server process holds: the socket is their
    sign of life. Ids in order, so two processes never lock rows crosswise.
    """
    connection = await session.connection()
    ordered, beat, touched = sorted(worker_ids), now or utcnow(), 0
    for start in range(0, len(ordered), _KEEP_ALIVE_BATCH):
        batch = ordered[start : start + _KEEP_ALIVE_BATCH]
        result = await connection.execute(
            _KEEP_ALIVE, {"b_workers": batch, "b_now": beat}
        )
        touched += result.rowcount
    return Outcome(touched)


async def mark_returned(session: AsyncSession, worker_id: uuid.UUID) -> None:
    """End the worker's grace time, if it is in one: it has shown it is back."""
    connection = await session.connection()
    await connection.execute(_RETURNED, {"b_worker": worker_id})


async def new_socket_epoch(
    session: AsyncSession, identity: Identity, worker_id: uuid.UUID
) -> int:
    """A join of the caller's own worker: a sign of life and its next socket epoch."""
    connection = await session.connection()
    params = {"b_worker": worker_id, "b_owner": identity.id, "b_now": utcnow()}
    epoch = (await connection.execute(_JOIN, params)).scalar_one_or_none()
    if epoch is None:
        await refuse_foreign_worker(session, worker_id, identity)
        raise worker_not_found(worker_id)  # deleted between the two statements
    return int(epoch)


async def join_job(
    session: AsyncSession, identity: Identity, worker_id: uuid.UUID, job_name: str
) -> Outcome[int]:
    """Check that the caller's worker serves `job_name` (Socket.IO `join_job_room`).

    Joining is a sign of life, like a heartbeat, and follows the same ownership
    rule. It returns the worker's new socket epoch: only a socket whose epoch is
    still the newest cleans the worker up when it closes.
    """
    epoch = await new_socket_epoch(session, identity, worker_id)
    connection = await session.connection()
    try:
        name = JobFullName.parse(job_name)
    except ValueError:
        name = None
    linked = None
    if name is not None:
        serves = {
            "b_worker": worker_id,
            "b_room": name.room_id,
            "b_category": name.category,
            "b_name": name.name,
        }
        linked = (await connection.execute(_SERVES, serves)).first()
    if linked is None:
        raise forbidden(f"worker {worker_id} does not serve {job_name}")
    return Outcome(int(epoch))


async def served_rooms(session: AsyncSession, worker_id: uuid.UUID) -> set[str]:
    """The rooms of the jobs the worker is linked to (none for an unknown worker)."""
    connection = await session.connection()
    rows = await connection.execute(_SERVED_ROOMS, {"b_worker": worker_id})
    return set(rows.scalars())


async def list_workers(
    session: AsyncSession,
    limit: int,
    offset: int,
    room_id: str | None = None,
    count_limit: int | None = None,
) -> tuple[list[WorkerSummary], int]:
    """A page of workers, newest first; with `room_id`, those serving its jobs.

    The count stops at `count_limit` (see `pages`).
    """
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
    total = await bounded_count(session, Worker, where, count_limit)
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
