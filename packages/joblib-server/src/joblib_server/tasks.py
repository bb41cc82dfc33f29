"""Operations on tasks: submit, claim, update, read, and fail the stuck ones.

Queue positions come from per-job sequence numbers; see `queues`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, replace
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
    InternalJobNotConfigured,
    JobFullName,
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
from joblib_server.backends import PENDING, Backend, backend_of
from joblib_server.dispatch import Claim
from joblib_server.errors import (
    ProblemError,
    forbidden,
    invalid_transition,
    job_not_found,
    task_not_found,
)
from joblib_server.jobs import (
    check_room_id,
    find_job,
    internal_jobs_of,
    job_name_in_room,
    soft_delete_orphan_jobs,
)
from joblib_server.known_jobs import known_jobs
from joblib_server.outcome import Dispatch, Outcome, one_statement
from joblib_server.pages import bounded_count
from joblib_server.payloads import check_payload
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
    new_task_views,
    task_cancelled,
    task_emission,
    task_response,
)
from joblib_server.workers import mark_returned, touch_worker

INTERNAL_TASK_TIMED_OUT = "Internal task timed out"


@dataclass(frozen=True)
class TaskLimits:
    """A submit's own time limits; None takes the job's."""

    timeout_seconds: float | None = None
    pending_timeout_seconds: float | None = None


NO_LIMITS = TaskLimits()


_task, _job, _worker, _link = TASK_TABLE, JOB_TABLE, WORKER_TABLE, LINK_TABLE

# The hot paths (submit, claim, update, get) run these prebuilt Core statements:
# building a statement and its cache key on every request, and loading ORM
# objects, cost more than the database work itself (see bench/README.md).

_JOB_PARTS = (
    _job.c.room_id.label("job_room_id"),
    _job.c.category.label("job_category"),
    _job.c.name.label("job_name"),
)

_RESERVE_SEQS = (
    # Taking the next `b_count` numbers locks the job row until commit: no other
    # submit's number falls inside them, and a concurrent soft delete cannot hide
    # the job under a fresh pending task.
    sa.update(_job)
    .where(
        _job.c.room_id == sa.bindparam("b_room"),
        _job.c.category == sa.bindparam("b_category"),
        _job.c.name == sa.bindparam("b_name"),
        _job.c.deleted.is_(False),
    )
    .values(task_seq=_job.c.task_seq + sa.bindparam("b_count", type_=sa.Integer))
    .returning(
        _job.c.id,
        _job.c.task_seq,
        _job.c.schema,
        _job.c.timeout_seconds,
        _job.c.pending_timeout_seconds,
    )
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


async def submit_target(
    session: AsyncSession, room_id: str, full_name: str, internal_jobs: bool
) -> tuple[JobFullName, str | None]:
    """The job a submit in `room_id` names, and the executor that runs it here.

    The executor is None unless the job is `@internal` and this server runs it.
    An `@internal` job nothing runs is 503 `internal-job-not-configured` (404 when
    it is unknown), unless the host runs internal jobs itself (`internal_jobs`).
    """
    name = job_name_in_room(room_id, full_name)
    executor = internal_jobs_of(session).get(full_name)
    if name.room_id != INTERNAL_ROOM:
        return name, None
    if executor is None and not internal_jobs:
        await find_job(session, room_id, full_name)  # unknown jobs still get 404
        raise ProblemError(
            InternalJobNotConfigured,
            f"this server runs no internal jobs, so {full_name!r} cannot be run",
        )
    return name, executor


@dataclass(frozen=True)
class Queued:
    """What a submit stored: the tasks' answers, announcements and dispatches."""

    items: list[TaskResponse]
    emissions: set[Emission]
    dispatches: list[Dispatch]


async def queue_tasks(
    session: AsyncSession,
    identity: Identity,
    room_id: str,
    full_name: str,
    payloads: list[dict[str, Any]],
    check: Callable[[dict[str, Any]], None],
    *,
    internal_jobs: bool = False,
    ids: list[uuid.UUID] | None = None,
    limits: TaskLimits = NO_LIMITS,
) -> Queued:
    """Store one task per payload at the end of the job's queue, in order.

    `check(schema)` refuses the payloads before anything is stored. The numbers
    are reserved, every task stored and the queue head read in as many
    statements whatever the number of payloads: one on PostgreSQL
    (`Backend.queue_statement`), three on SQLite. Tasks of an `@internal` job
    this server runs are claimed for its executor at once and dispatched after
    commit.
    """
    name, executor = await submit_target(session, room_id, full_name, internal_jobs)
    new = _NewTasks(identity, room_id, full_name, payloads, executor, ids, limits)
    backend = backend_of(session)
    if backend.queue_statement() is None:
        job_id, first_seq, head = await _queue_in_steps(session, name, new, check)
    else:
        job_id, first_seq, head = await _queue_at_once(session, name, new, check)
    positions: list[int | None] = [None] * len(payloads)
    if executor is None:
        # Claimed tasks (an executor's) have no position and nothing to offer.
        if head is None:
            head = await pending_head(await session.connection(), job_id)
        positions = [
            queue_position(new.status, first_seq + offset, head)
            for offset in range(len(payloads))
        ]
    items, emissions = new_task_views(
        new.first(),
        new.ids,
        payloads,
        positions,
        available=executor is None and name.room_id != INTERNAL_ROOM,
    )
    return Queued(items, emissions, new.dispatches)


class _NewTasks:
    """The tasks a submit makes, before they are stored: ids, claims, parameters."""

    def __init__(
        self,
        identity: Identity,
        room_id: str,
        full_name: str,
        payloads: list[dict[str, Any]],
        executor: str | None,
        ids: list[uuid.UUID] | None,
        limits: TaskLimits,
    ) -> None:
        self.identity = identity
        self.room_id = room_id
        self.full_name = full_name
        self.payloads = payloads
        self.limits = limits
        self.ids = ids or [uuid.uuid4() for _ in payloads]
        self.created_at = utcnow()
        self.status = (
            TaskStatus.PENDING if executor is None else TaskStatus.CLAIMED
        ).value
        self.claim_prefix = None if executor is None else f"{executor}:"
        self.claim_keys: list[str] = []
        self.dispatches: list[Dispatch] = []
        if self.claim_prefix is not None:
            for task_id, payload in zip(self.ids, payloads, strict=True):
                key = uuid.uuid4().hex
                self.claim_keys.append(key)
                claim_id = self.claim_prefix + key
                self.dispatches.append(
                    Dispatch(task_id, full_name, room_id, payload, 1, claim_id)
                )
        self.timeout: float | None = None
        self.pending: float | None = None
        self.expires_at: datetime | None = None

    def limit(self, job_timeout: float | None, job_pending: float | None) -> None:
        """Take the submit's time limits, or else the job's."""
        self.timeout = self.limits.timeout_seconds or job_timeout
        self.pending = self.limits.pending_timeout_seconds or job_pending
        self.stamp(self.created_at, None)

    def stamp(self, created_at: datetime, expires_at: datetime | None) -> None:
        """Set the creation time (and expiry, if given; else from `pending`)."""
        self.created_at = created_at
        self.expires_at = expires_at
        if expires_at is None and self.pending:
            self.expires_at = created_at + timedelta(seconds=self.pending)

    def params(self, backend: Backend) -> dict[str, Any]:
        """The parameters `insert_tasks_statement` and `queue_statement` share."""
        return {
            **backend.insert_tasks_params(self.payloads, self.ids, self.claim_keys),
            "b_room": self.room_id,
            "b_by": self.identity.id,
            "b_status": self.status,
            "b_timeout": self.timeout,
            "b_claim_prefix": self.claim_prefix,
        }

    def stamps(self) -> dict[str, Any]:
        """The times `insert_tasks_statement` takes as parameters."""
        return {
            "b_created": self.created_at,
            "b_expires": self.expires_at,
            "b_claimed": None if self.claim_prefix is None else self.created_at,
        }

    def first(self) -> TaskRow:
        """The first task as the wire shapes show it (the others differ in id,
        payload and position)."""
        return TaskRow(
            id=self.ids[0],
            job_name=self.full_name,
            room_id=self.room_id,
            status=self.status,
            created_at=self.created_at,
            started_at=None,
            completed_at=None,
            worker_id=None,
            error=None,
            payload=self.payloads[0],
            attempt=1,
            error_code=None,
            timeout_seconds=self.timeout,
            expires_at=self.expires_at,
        )


async def _queue_in_steps(
    session: AsyncSession,
    name: JobFullName,
    new: _NewTasks,
    check: Callable[[dict[str, Any]], None],
) -> tuple[uuid.UUID, int, int | None]:
    """Reserve, check, insert: (the job's id, the first number, None for the head)."""
    connection = await session.connection()
    count = len(new.payloads)
    reserved = (
        await connection.execute(
            _RESERVE_SEQS,
            {
                "b_room": name.room_id,
                "b_category": name.category,
                "b_name": name.name,
                "b_count": count,
            },
        )
    ).first()
    if reserved is None:
        raise job_not_found(new.full_name, new.room_id)
    job_id, last_seq, schema, job_timeout, job_pending = reserved
    check(schema)
    # Taken with the job's row locked: a later number never gets an earlier time.
    new.created_at = utcnow()
    new.limit(job_timeout, job_pending)
    first_seq = last_seq - count + 1
    backend = backend_of(session)
    await connection.execute(
        backend.insert_tasks_statement(),
        {
            **new.params(backend),
            **new.stamps(),
            "b_job": job_id,
            "b_first_seq": first_seq,
        },
    )
    return job_id, first_seq, None


_QUEUE_TRIES = 5
"""How often a one-statement submit reads its job again after the statement found
it changed; each time another change came between the read and the statement."""


async def _queue_at_once(
    session: AsyncSession,
    name: JobFullName,
    new: _NewTasks,
    check: Callable[[dict[str, Any]], None],
) -> tuple[uuid.UUID, int, int | None]:
    """Check against the job as remembered, then one statement: (id, first, head).

    The head is None when the statement could not tell it (see
    `Backend.queue_statement`).
    """
    backend = backend_of(session)
    connection = await session.connection()
    known = known_jobs(backend)
    count = len(new.payloads)
    job = known.get(name)
    for _ in range(_QUEUE_TRIES):
        fresh = job is None
        if job is None:
            job = await known.read(connection, name)
            if job is None:
                raise job_not_found(new.full_name, new.room_id)
        try:
            check(job.schema)
        except ProblemError:
            if fresh:
                raise
            job = None  # checked against a schema that may have changed since
            continue
        new.limit(job.timeout_seconds, job.pending_timeout_seconds)
        params = {
            **new.params(backend),
            "b_count": count,
            "b_job": job.id,
            "b_schema": job.schema_text,
            "b_job_timeout": job.timeout_seconds,
            "b_job_pending": job.pending_timeout_seconds,
            "b_pending": new.pending,
        }
        row = (await connection.execute(backend.queue_statement(), params)).first()
        if row is None:
            job = None  # changed or deleted since it was read: read it again
            continue
        first_seq = row.last_seq - count + 1
        new.stamp(row.created_at, row.expires_at)
        if row.seen_seq != row.last_seq - count:
            # Another submit committed while this one waited for the job's row:
            # its tasks are ahead in the queue, but not in this statement's view.
            return job.id, first_seq, None
        return job.id, first_seq, first_seq if row.head is None else row.head
    raise RuntimeError(f"job {new.full_name} kept changing during a submit")


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
        _check_result(request, settings_of(session).max_result_bytes)
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


def _check_result(request: TaskUpdateRequest, limit: int) -> None:
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
