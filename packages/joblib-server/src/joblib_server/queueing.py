"""How a submit's tasks join their job's queue: one change, whatever their number.

`queue_tasks` checks every payload against the job's schema before anything is
stored, then stores the tasks at the end of the queue with consecutive sequence
numbers and one `created_at`. On PostgreSQL that is one statement
(`Backend.queue_statement`) against the job as this process remembers it
(`known_jobs`); on SQLite the reservation, the insert and the queue head are three
statements in the write transaction. A single submit is a batch of one.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from joblib_protocol import (
    INTERNAL_ROOM,
    Emission,
    InternalJobNotConfigured,
    JobFullName,
    TaskResponse,
    TaskStatus,
)
from joblib_server.auth import Identity
from joblib_server.backends import Backend, backend_of
from joblib_server.errors import ProblemError, job_not_found
from joblib_server.jobs import find_job, internal_jobs_of, job_name_in_room
from joblib_server.known_jobs import known_jobs
from joblib_server.outcome import Dispatch
from joblib_server.queues import pending_head, queue_position
from joblib_server.tables import JOB_TABLE, utcnow
from joblib_server.views import TaskRow, new_task_views

_job = JOB_TABLE


@dataclass(frozen=True)
class TaskLimits:
    """A submit's own time limits; None takes the job's."""

    timeout_seconds: float | None = None
    pending_timeout_seconds: float | None = None


NO_LIMITS = TaskLimits()


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
