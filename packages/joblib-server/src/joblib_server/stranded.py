"""Tasks that would stay stuck while their worker lives, and how they come back.

A worker that goes away loses its tasks through `disconnects`. Two ways a task
strands while its worker stays alive and heartbeats:

- A claim's answer is lost (the client gave up while the claim waited for a
  lock): the task is the worker's, and the worker never learns of it. A claim
  sent again under the same `request_id` gets that task back (`tasks.claim_task`).
  Otherwise a heartbeat that lists the tasks its worker holds
  (`PATCH /workers/{id} {"tasks": [...]}`) releases the worker's claimed and
  running tasks it does not list, each by its job's disconnect policy, with
  `error_code` `not_held`. Tasks claimed within the last
  `heartbeat_task_margin_seconds` are kept: their answer may still be on its way
  to the worker.
- A claimed task is never started: the sweeper puts it back to pending once it
  has been claimed for `claim_start_timeout_seconds`, at its place in the queue
  and with the same `attempt` (it never ran). Its worker is cleared, so a report
  from the old claimer that names itself (`worker_id`) is refused with 409.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import replace
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from joblib_protocol import (
    INTERNAL_ROOM,
    Emission,
    ErrorCode,
    TaskStatus,
    WorkerResponse,
)
from joblib_server.auth import Identity
from joblib_server.backends import backend_of
from joblib_server.disconnects import release_tasks
from joblib_server.outcome import Outcome
from joblib_server.queues import pending_head, queue_position
from joblib_server.settings import settings_of
from joblib_server.tables import (
    JOB_TABLE,
    TASK_TABLE,
    UTCDateTime,
    job_full_name,
    utcnow,
)
from joblib_server.views import TaskRow, task_available, task_emission
from joblib_server.workers import touch_worker

NOT_HELD = "Worker does not hold the task"
"""The human `error` of a task failed because its worker's heartbeat left it out."""

_task, _job = TASK_TABLE, JOB_TABLE
_CLAIMED = TaskStatus.CLAIMED.value

_IN_FLIGHT_OF = sa.select(_task.c.id, _task.c.claimed_at).where(
    # The worker's few claimed and running tasks (ix_joblib_task_worker).
    _task.c.worker_id == sa.bindparam("b_worker"),
    _task.c.status.in_([_CLAIMED, TaskStatus.RUNNING.value]),
)

_UNSTARTED = (
    sa.select(*_task.c)
    .where(
        # Per job through ix_joblib_task_job_seq (job_id, status, seq): written as
        # IN, not as a join, so SQLite too walks the jobs rather than every task.
        _task.c.job_id.in_(sa.select(_job.c.id)),
        _task.c.status == _CLAIMED,
        # An executor's claim of an `@internal` task (no worker) waits for a free
        # slot as long as it takes; the sweeper fails it past its time limit.
        _task.c.worker_id.is_not(None),
        # A task claimed before joblib 0.2.0 has no claim time: its submission
        # time stands in, which is never later.
        sa.func.coalesce(_task.c.claimed_at, _task.c.created_at)
        < sa.bindparam("b_cutoff", type_=UTCDateTime()),
    )
    .order_by(_task.c.created_at, _task.c.seq)
)

_JOB_NAMES = sa.select(_job.c.id, _job.c.room_id, _job.c.category, _job.c.name).where(
    _job.c.id.in_(sa.bindparam("b_jobs", expanding=True))
)

_UNCLAIM = (
    sa.update(_task)
    .where(
        _task.c.id.in_(sa.bindparam("b_tasks", expanding=True)),
        _task.c.status == _CLAIMED,
    )
    .values(
        status=TaskStatus.PENDING.value,
        worker_id=None,
        claimed_at=None,
        claim_request_id=None,
        # It was claimed within its queue time; it must not expire for a
        # worker that never started it.
        expires_at=None,
    )
)


async def heartbeat(
    session: AsyncSession,
    worker_id: uuid.UUID,
    identity: Identity,
    held: Collection[uuid.UUID] | None = None,
) -> Outcome[WorkerResponse]:
    """Record that the worker is alive; with `held`, release the tasks it lost.

    `held` lists every task the worker holds. Its claimed and running tasks not
    listed, claimed longer than `heartbeat_task_margin_seconds` ago, are failed
    or requeued by their jobs' policies with `error_code` `not_held`. The answer's
    `cancelled` lists the held tasks that are no longer the worker's to run.
    """
    now = utcnow()
    beat = await touch_worker(session, worker_id, identity, now)
    answer = WorkerResponse(id=worker_id, last_heartbeat=beat)
    if held is None:
        return Outcome(answer)
    margin = settings_of(session).heartbeat_task_margin_seconds
    cutoff = now - timedelta(seconds=margin)
    connection = await session.connection()
    rows = (await connection.execute(_IN_FLIGHT_OF, {"b_worker": worker_id})).all()
    listed = set(held)
    # Listed but no longer its to run: cancelled, failed by a deadline, requeued.
    in_flight = {row.id for row in rows}
    stop = sorted(task for task in listed if task not in in_flight)
    answer = answer.model_copy(update={"cancelled": stop})
    lost = [
        row.id
        for row in rows
        if row.id not in listed and (row.claimed_at is None or row.claimed_at < cutoff)
    ]
    if not lost:
        return Outcome(answer)
    released = await release_tasks(
        session, worker_id, lost, error=NOT_HELD, error_code=ErrorCode.NOT_HELD
    )
    return Outcome(answer, released.emissions)


async def requeue_unstarted_claims(
    session: AsyncSession, timeout_seconds: float, now: datetime | None = None
) -> Outcome[list[uuid.UUID]]:
    """Put tasks claimed over `timeout_seconds` ago and never started back to pending.

    Each keeps its place in its job's queue and its `attempt`, loses its worker,
    and is announced again (`task_available`, `task_status_event`).
    """
    cutoff = (now or utcnow()) - timedelta(seconds=timeout_seconds)
    connection = await session.connection()
    # SKIP LOCKED: a claimed task being started right now (PATCH locks it) is
    # left for the next sweep, as is one another server process is sweeping.
    statement = backend_of(session).locked(_UNSTARTED, skip_locked=True)
    rows = (await connection.execute(statement, {"b_cutoff": cutoff})).all()
    if not rows:
        return Outcome([])
    await connection.execute(_UNCLAIM, {"b_tasks": [row.id for row in rows]})
    job_ids = sorted({row.job_id for row in rows})
    jobs = {
        job.id: job for job in await connection.execute(_JOB_NAMES, {"b_jobs": job_ids})
    }
    heads = {job_id: await pending_head(connection, job_id) for job_id in job_ids}
    emissions: set[Emission] = set()
    for row in rows:
        job = jobs[row.job_id]
        name = job_full_name(job.room_id, job.category, job.name)
        task = replace(
            TaskRow.of(row, name),
            status=TaskStatus.PENDING.value,
            worker_id=None,
            expires_at=None,
        )
        position = queue_position(task.status, row.seq, heads[row.job_id])
        emissions.add(task_emission(task, position))
        if job.room_id != INTERNAL_ROOM:
            emissions.add(task_available(task))
    return Outcome([row.id for row in rows], emissions)
