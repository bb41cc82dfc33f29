"""Operations on tasks: submit, claim, update, read, and fail the stuck ones.

Queue positions come from per-job sequence numbers; see `queues`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from joblib_protocol import (
    INTERNAL_ROOM,
    CancelReason,
    Emission,
    ErrorCode,
    PayloadTooLarge,
    TaskResponse,
    TaskStatus,
    TaskUpdateRequest,
    TaskWorkerMismatch,
    ValidationFailed,
    is_terminal,
    is_valid_transition,
)
from joblib_server.auth import Identity
from joblib_server.backends import PENDING, backend_of
from joblib_server.dispatch import Claim
from joblib_server.errors import (
    ProblemError,
    forbidden,
    invalid_transition,
    task_not_found,
)
from joblib_server.jobs import (
    check_room_id,
    find_job,
    soft_delete_orphan_jobs,
)
from joblib_server.outcome import Outcome, one_statement
from joblib_server.pages import bounded_count
from joblib_server.payloads import check_payload
from joblib_server.queueing import NO_LIMITS, TaskLimits, queue_tasks
from joblib_server.queues import pending_head, queue_position
from joblib_server.settings import settings_of
from joblib_server.tables import (
    JOB_TABLE,
    LINK_TABLE,
    TASK_TABLE,
    WORKER_TABLE,
    Job,
    Task,
    job_full_name,
    utcnow,
)
from joblib_server.views import (
    TaskRow,
    task_cancelled,
    task_emission,
    task_response,
)
from joblib_server.workers import mark_returned, touch_worker

INTERNAL_TASK_TIMED_OUT = "Internal task timed out"


_task, _job, _worker, _link = TASK_TABLE, JOB_TABLE, WORKER_TABLE, LINK_TABLE

# The hot paths (submit, claim, update, get) run these prebuilt Core statements:
# building a statement and its cache key on every request, and loading ORM
# objects, cost more than the database work itself (see bench/README.md).

_JOB_PARTS = (
    _job.c.room_id.label("job_room_id"),
    _job.c.category.label("job_category"),
    _job.c.name.label("job_name"),
)

_TASK_WITH_JOB = (
    sa.select(*_task.c, *_JOB_PARTS)
    .join(_job, _job.c.id == _task.c.job_id)
    .where(_task.c.id == sa.bindparam("b_task"))
)

_WORKER_QUEUES = (
    # Each of the worker's jobs with the creation time of its oldest pending task
    # (None when it has none): one index lookup per job, however long the queue.
    sa.select(
        _job.c.id,
        *_JOB_PARTS,
        sa.select(_task.c.created_at)
        .where(_task.c.job_id == _job.c.id, _task.c.status == PENDING)
        .order_by(_task.c.created_at, _task.c.seq, _task.c.id)
        .limit(1)
        .correlate(_job)
        .scalar_subquery()
        .label("oldest"),
    )
    .join(_link, _link.c.job_id == _job.c.id)
    .where(_link.c.worker_id == sa.bindparam("b_worker"))
)

_CLAIMED_UNDER = (
    # The task a claim with this request id already took, while the worker still
    # holds it: found among the worker's few in-flight tasks (ix_joblib_task_worker).
    sa.select(*_task.c, *_JOB_PARTS)
    .join(_job, _job.c.id == _task.c.job_id)
    .where(
        _task.c.worker_id == sa.bindparam("b_worker"),
        _task.c.status.in_([TaskStatus.CLAIMED.value, TaskStatus.RUNNING.value]),
        _task.c.claim_request_id == sa.bindparam("b_request"),
    )
    .limit(1)
)

_TASK_ROOM = sa.select(_task.c.room_id).where(_task.c.id == sa.bindparam("b_task"))

_TASK_TO_UPDATE = (
    sa.select(*_task.c, *_JOB_PARTS, _worker.c.owner_id.label("worker_owner"))
    .join(_job, _job.c.id == _task.c.job_id)
    .outerjoin(_worker, _worker.c.id == _task.c.worker_id)
    .where(_task.c.id == sa.bindparam("b_task"))
)

_START_TASK = (
    sa.update(_task)
    .where(_task.c.id == sa.bindparam("b_task"))
    .values(status=sa.bindparam("b_status"), started_at=sa.bindparam("b_now"))
)

_FINISH_TASK = (
    sa.update(_task)
    .where(_task.c.id == sa.bindparam("b_task"))
    .values(
        status=sa.bindparam("b_status"),
        completed_at=sa.bindparam("b_now"),
        error=sa.bindparam("b_error"),
        error_code=sa.bindparam("b_error_code"),
        result=sa.bindparam("b_result"),
    )
)

_SET_DEADLINE = (
    sa.update(_task)
    .where(_task.c.id == sa.bindparam("b_task"))
    .values(deadline_at=sa.bindparam("b_at"))
)

_SET_STATUS = (
    sa.update(_task)
    .where(_task.c.id == sa.bindparam("b_task"))
    .values(status=sa.bindparam("b_status"))
)


def _job_name(row: Any) -> str:
    return job_full_name(row.job_room_id, row.job_category, row.job_name)


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
        task_response(
            TaskRow.of(task, job.full_name),
            queue_position(task.status, task.seq, heads.get(job.id)),
        )
        for task, job in rows
    ]


@one_statement
async def submit_task(
    session: AsyncSession,
    identity: Identity,
    room_id: str,
    full_name: str,
    payload: dict[str, Any],
    *,
    internal_jobs: bool = False,
    task_id: uuid.UUID | None = None,
    limits: TaskLimits = NO_LIMITS,
) -> Outcome[TaskResponse]:
    """Queue a task for a job visible from `room_id` (with `task_id`, if given).

    The payload must match the job's JSON Schema (422 `invalid-payload`, nothing
    stored). `limits` override the job's own time limits.
    """
    queued = await queue_tasks(
        session,
        identity,
        room_id,
        full_name,
        [payload],
        lambda schema: check_payload(schema, payload),
        internal_jobs=internal_jobs,
        ids=[task_id] if task_id else None,
        limits=limits,
    )
    return Outcome(queued.items[0], queued.emissions, dispatches=queued.dispatches)


async def claim_task(
    session: AsyncSession,
    identity: Identity,
    worker_id: uuid.UUID,
    *,
    start: bool = False,
    request_id: str | None = None,
    skip_rooms: AbstractSet[str] = frozenset(),
) -> Outcome[Claim]:
    """Claim the worker's oldest pending task, atomically; none when there is none.

    With `request_id`, a claim sent again after its answer was lost gets back the
    task the first one took, as long as the worker still holds it. Jobs of
    `skip_rooms` (rooms the access policy no longer lets it serve) are left alone.
    """
    claim = backend_of(session).claim_statement(start=start)
    await touch_worker(session, worker_id, identity)  # a claim proves life
    connection = await session.connection()
    if request_id is not None:
        under = {"b_worker": worker_id, "b_request": request_id}
        again = (await connection.execute(_CLAIMED_UNDER, under)).first()
        if again is not None:
            # Nothing changes: the first claim already announced the task.
            return Outcome(
                Claim(task_response(TaskRow.of(again, _job_name(again)), None))
            )
    # Taken after the wait for the worker's row: `claimed_at` is when the claim
    # took the task, so a heartbeat's margin counts from then.
    now = utcnow()
    queues = (await connection.execute(_WORKER_QUEUES, {"b_worker": worker_id})).all()
    queues = [row for row in queues if row.job_room_id not in skip_rooms]
    waiting = sorted((row for row in queues if row.oldest is not None), key=_oldest)
    for job in waiting:
        params = {
            "b_job": job.id,
            "b_worker": worker_id,
            "b_now": now,
            "b_request": request_id,
        }
        row = (await connection.execute(claim, params)).first()
        if row is None:
            # Every pending task of this job is being claimed by someone else
            # right now (PostgreSQL skips locked rows): try the next job.
            continue
        task = TaskRow.of(row, _job_name(job))
        if start and task.timeout_seconds is not None:
            task = await _set_deadline(connection, task, now)
        emissions = {task_emission(task)}
        if start:
            # Observers still see the task pass through claimed.
            claimed = replace(task, status=TaskStatus.CLAIMED.value, started_at=None)
            emissions.add(task_emission(claimed))
        return Outcome(Claim(task_response(task, None)), emissions)
    return Outcome(Claim(None, jobs=tuple(_job_name(row) for row in queues)))


def _oldest(row: Any) -> Any:
    return row.oldest


async def _set_deadline(connection: Any, task: TaskRow, started: datetime) -> TaskRow:
    """Give a task that starts now its deadline, from its `timeout_seconds`."""
    assert task.timeout_seconds is not None
    deadline = started + timedelta(seconds=task.timeout_seconds)
    await connection.execute(_SET_DEADLINE, {"b_task": task.id, "b_at": deadline})
    return replace(task, deadline_at=deadline)


async def locked_report(
    session: AsyncSession,
    statement: Any,
    task_id: uuid.UUID,
    reporter: uuid.UUID | None,
    claim_id: str | None = None,
) -> Any:
    """The task's row, locked, for a worker's report: 404, or 409 when fenced off.

    `statement` reads the task (`b_task`) with its worker's `worker_owner` (None
    once the worker row is gone) and its `claim_request_id`. A report without a
    `reporter` or a `claim_id` is not fenced; one from a worker that no longer
    holds the task, or an executor's whose claim is not the task's any more,
    is 409 `task-worker-mismatch`.
    Only the task row is locked: locking the job row too would queue every report
    of a job behind the others.
    """
    connection = await session.connection()
    locked = backend_of(session).locked(statement, of=_task)
    row = (await connection.execute(locked, {"b_task": task_id})).first()
    if row is None:
        raise task_not_found(task_id)
    if claim_id is not None and claim_id != row.claim_request_id:
        raise ProblemError(
            TaskWorkerMismatch,
            f"task {task_id} is not held by this executor's claim any more",
        )
    if reporter is None:
        return row
    if reporter != row.worker_id or row.worker_owner is None:
        # A stale report: the task was requeued (and maybe claimed by another
        # worker), or this worker was removed (a failed task keeps its worker
        # id, but the worker row is gone). Nothing changes.
        raise ProblemError(
            TaskWorkerMismatch,
            f"task {task_id} is not held by worker {reporter} any more",
        )
    # A report is a sign of life: a worker in its grace time is back.
    await mark_returned(session, reporter)
    return row


async def update_task(
    session: AsyncSession,
    identity: Identity,
    task_id: uuid.UUID,
    request: TaskUpdateRequest,
) -> Outcome[TaskResponse]:
    """Move a task to a new state, as its worker's owner, an admin, or its submitter.

    An executor reports an `@internal` task with the `claim_id` of its dispatch.
    """
    row = await locked_report(
        session, _TASK_TO_UPDATE, task_id, request.worker_id, request.claim_id
    )
    connection = await session.connection()
    new = request.status
    allowed = (
        identity.is_admin
        or (row.worker_owner is not None and row.worker_owner == identity.id)
        or (new == TaskStatus.CANCELLED and row.submitted_by == identity.id)
    )
    if not allowed:
        raise forbidden(f"task {task_id} is not yours to update")
    if not is_valid_transition(row.status, new) or new == TaskStatus.CLAIMED:
        raise invalid_transition(row.status, new.value)
    if request.error is not None and not is_terminal(new):
        raise _invalid_error("an error may only be given with a terminal status")
    if request.error is not None and "\x00" in request.error:
        # PostgreSQL text cannot hold NUL; SQLite could, but both must answer alike.
        raise _invalid_error("an error must not contain NUL characters")
    if "result" in request.model_fields_set:
        check_result(request, settings_of(session).max_result_bytes)
    now = utcnow()
    task = TaskRow.of(row, _job_name(row))
    params: dict[str, Any] = {"b_task": task_id, "b_status": new.value, "b_now": now}
    if new == TaskStatus.RUNNING:
        await connection.execute(_START_TASK, params)
        task = replace(task, status=new.value, started_at=now)
        if task.timeout_seconds is not None:
            task = await _set_deadline(connection, task, now)
    elif is_terminal(new):
        code = ErrorCode.JOB_FAILED.value if new == TaskStatus.FAILED else None
        finish = {
            **params,
            "b_error": request.error,
            "b_error_code": code,
            "b_result": request.result,
        }
        await connection.execute(_FINISH_TASK, finish)
        task = replace(
            task,
            status=new.value,
            completed_at=now,
            error=request.error,
            error_code=code,
            result=request.result,
        )
    else:
        await connection.execute(_SET_STATUS, params)
        task = replace(task, status=new.value)
    emissions = {task_emission(task)}
    if new == TaskStatus.CANCELLED and row.status != TaskStatus.PENDING:
        # Its worker may be running it: tell it to stop.
        stop = task_cancelled(task, CancelReason.CANCELLED)
        if stop is not None:
            emissions.add(stop)
    if is_terminal(new):
        emissions |= await soft_delete_orphan_jobs(session, [row.job_id])
    return Outcome(task_response(task, None), emissions)


def _invalid_error(msg: str, field: str = "error") -> ProblemError:
    return ProblemError(
        ValidationFailed, msg, errors=[{"loc": ["body", field], "msg": msg}]
    )


def check_result(request: TaskUpdateRequest, limit: int) -> None:
    """A result comes only with `completed` (422), and within `limit` bytes (413)."""
    if request.status != TaskStatus.COMPLETED:
        raise _invalid_error(
            f"a result may only be given with status 'completed', "
            f"not {request.status.value!r}",
            "result",
        )
    size = len(
        json.dumps(request.result, ensure_ascii=False, separators=(",", ":")).encode()
    )
    if size > limit:
        raise ProblemError(
            PayloadTooLarge,
            f"the result is {size} bytes as JSON, over this server's limit of "
            f"{limit} bytes (max_result_bytes): store large outputs elsewhere and "
            "return a reference to them",
        )


async def task_room(session: AsyncSession, task_id: uuid.UUID) -> str:
    """The room a task was submitted in (which never changes), or 404."""
    connection = await session.connection()
    room_id = (await connection.execute(_TASK_ROOM, {"b_task": task_id})).scalar()
    if room_id is None:
        raise task_not_found(task_id)
    return str(room_id)


async def get_task(session: AsyncSession, task_id: uuid.UUID) -> TaskResponse:
    """A task by id."""
    connection = await session.connection()
    row = (await connection.execute(_TASK_WITH_JOB, {"b_task": task_id})).first()
    if row is None:
        raise task_not_found(task_id)
    position = None
    if row.status == TaskStatus.PENDING:
        head = await pending_head(connection, row.job_id)
        position = queue_position(row.status, row.seq, head)
    return task_response(TaskRow.of(row, _job_name(row)), position)


async def list_tasks(
    session: AsyncSession,
    room_id: str,
    limit: int,
    offset: int,
    *,
    full_name: str | None = None,
    status: TaskStatus | None = None,
    count_limit: int | None = None,
) -> tuple[list[TaskResponse], int]:
    """A page of the tasks submitted in a room (optionally of one job), newest first.

    The count stops at `count_limit` (see `pages`).
    """
    check_room_id(room_id)
    where: list[Any] = [Task.room_id == room_id]
    if full_name is not None:
        job = await find_job(session, room_id, full_name, include_deleted=True)
        where.append(Task.job_id == job.id)
    if status is not None:
        where.append(Task.status == status.value)
    total = await bounded_count(session, Task, where, count_limit)
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


async def _fail_internal_tasks(
    session: AsyncSession,
    where: sa.ColumnElement[bool],
    error: tuple[str, ErrorCode],
    now: datetime,
) -> tuple[list[uuid.UUID], set[Emission], set[uuid.UUID]]:
    """Fail the `@internal` tasks `where` selects; their ids, events and jobs."""
    rows = await session.execute(
        backend_of(session)
        .locked(
            select(Task, Job)
            .join(Job, col(Job.id) == Task.job_id)
            .where(Job.room_id == INTERNAL_ROOM, where),
            skip_locked=True,
            of=Task,
        )
        .execution_options(populate_existing=True)
    )
    message, code = error
    emissions: set[Emission] = set()
    jobs: set[uuid.UUID] = set()
    failed: list[uuid.UUID] = []
    for task, job in rows:
        task.fail(message, code.value, now)
        emissions.add(task_emission(TaskRow.of(task, job.full_name)))
        jobs.add(job.id)
        failed.append(task.id)
    await session.flush()
    return failed, emissions, jobs


async def cleanup_stuck_internal_tasks(
    session: AsyncSession, timeout_seconds: float, now: datetime | None = None
) -> Outcome[list[uuid.UUID]]:
    """Fail `@internal` tasks running, or claimed by an executor, too long."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=timeout_seconds)
    stuck = sa.or_(
        sa.and_(
            col(Task.status) == TaskStatus.RUNNING.value,
            col(Task.started_at) < cutoff,
        ),
        sa.and_(
            # Claimed by an executor; a worker's claim that never starts goes
            # back to pending (`stranded`).
            col(Task.status) == TaskStatus.CLAIMED.value,
            col(Task.worker_id).is_(None),
            sa.func.coalesce(col(Task.claimed_at), col(Task.created_at)) < cutoff,
        ),
    )
    failed, emissions, jobs = await _fail_internal_tasks(
        session, stuck, (INTERNAL_TASK_TIMED_OUT, ErrorCode.INTERNAL_TIMED_OUT), now
    )
    emissions |= await soft_delete_orphan_jobs(session, jobs)
    return Outcome(failed, emissions)


INTERNAL_INTERRUPTED = "The server running this internal task stopped"


async def fail_interrupted_internal_tasks(
    session: AsyncSession, prefix: str
) -> Outcome[list[uuid.UUID]]:
    """Fail the claimed and running tasks whose claims start with `prefix`.

    A server starting with an executor whose tasks die with their process calls
    it: what its predecessor was running will never be reported.
    """
    interrupted = sa.and_(
        col(Task.status).in_([TaskStatus.CLAIMED.value, TaskStatus.RUNNING.value]),
        col(Task.claim_request_id).startswith(prefix, autoescape=True),
        col(Task.worker_id).is_(None),
    )
    failed, emissions, _ = await _fail_internal_tasks(
        session,
        interrupted,
        (INTERNAL_INTERRUPTED, ErrorCode.INTERNAL_INTERRUPTED),
        utcnow(),
    )
    return Outcome(failed, emissions)
