"""Batch submit: many tasks of one job in one change, all or none of them.

A batch is one write transaction with a fixed number of statements whatever its
size: the job's sequence numbers are reserved in one UPDATE, every payload is
checked against the schema compiled once, the tasks go in as one executemany
INSERT, and the queue head is read once. The batch lands at the end of the job's
queue, in the order of its payloads (consecutive sequence numbers, one
`created_at`). Its announcements are those of as many single submits: a
`task_status_event` per task, and a `task_available` per claimable task, so each
wakes one held claim.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from joblib_protocol import (
    INTERNAL_ROOM,
    Emission,
    TaskBatchResponse,
    TaskStatus,
    ValidationFailed,
)
from joblib_server.auth import Identity
from joblib_server.errors import ProblemError, job_not_found
from joblib_server.outcome import Dispatch, Outcome
from joblib_server.payloads import check_payloads
from joblib_server.queues import pending_head, queue_position
from joblib_server.tables import JOB_TABLE, TASK_TABLE, utcnow
from joblib_server.tasks import NO_LIMITS, TaskLimits, submit_target
from joblib_server.views import TaskRow, task_available, task_emission, task_response

BODY_FACTOR = 16
"""A batch's body may be this many times `max_body_bytes` (16 MiB by default):
1,000 payloads of a few KiB each do not fit the single submit's 1 MiB."""

_job = JOB_TABLE

_RESERVE_SEQS = (
    # As a submit's `_NEXT_SEQ`, for `b_count` numbers at once: the job row stays
    # locked until commit, so no other submit's number falls inside the batch.
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

_INSERT_TASKS = sa.insert(TASK_TABLE)


def check_batch_size(count: int, limit: int) -> None:
    """422 `validation-error` when a batch holds more than `limit` payloads."""
    if count <= limit:
        return
    msg = (
        f"holds {count} payloads, over this server's limit of {limit} "
        "(max_batch_size): split it into several batches"
    )
    raise ProblemError(
        ValidationFailed,
        f"payloads: {msg}",
        errors=[{"loc": ["body", "payloads"], "msg": msg}],
    )


async def submit_batch(
    session: AsyncSession,
    identity: Identity,
    room_id: str,
    full_name: str,
    payloads: list[dict[str, Any]],
    *,
    internal_jobs: bool = False,
    limits: TaskLimits = NO_LIMITS,
) -> Outcome[TaskBatchResponse]:
    """Queue one task per payload, in order, for a job visible from `room_id`.

    Every payload must match the job's JSON Schema, or none is stored (422
    `invalid-payload`, each error's `loc` naming the payload's index). Tasks of
    an `@internal` job this server runs are claimed for its executor at once,
    each dispatched as a single submit's would be.
    """
    name, executor = await submit_target(session, room_id, full_name, internal_jobs)
    connection = await session.connection()
    reserved = (
        await connection.execute(
            _RESERVE_SEQS,
            {
                "b_room": name.room_id,
                "b_category": name.category,
                "b_name": name.name,
                "b_count": len(payloads),
            },
        )
    ).first()
    if reserved is None:
        raise job_not_found(full_name, room_id)
    job_id, last_seq, schema, job_timeout, job_pending_timeout = reserved
    check_payloads(schema, payloads)
    first_seq = last_seq - len(payloads) + 1
    created_at = utcnow()
    timeout = limits.timeout_seconds or job_timeout
    pending_timeout = limits.pending_timeout_seconds or job_pending_timeout
    expires_at = (
        created_at + timedelta(seconds=pending_timeout) if pending_timeout else None
    )
    status = (TaskStatus.PENDING if executor is None else TaskStatus.CLAIMED).value
    tasks: list[TaskRow] = []
    rows: list[dict[str, Any]] = []
    claims: list[str | None] = []
    for offset, payload in enumerate(payloads):
        claim_id = None if executor is None else f"{executor}:{uuid.uuid4().hex}"
        task = TaskRow(
            id=uuid.uuid4(),
            job_name=full_name,
            room_id=room_id,
            status=status,
            created_at=created_at,
            started_at=None,
            completed_at=None,
            worker_id=None,
            error=None,
            payload=payload,
            attempt=1,
            error_code=None,
            timeout_seconds=timeout,
            expires_at=expires_at,
        )
        tasks.append(task)
        claims.append(claim_id)
        rows.append(
            {
                "id": task.id,
                "job_id": job_id,
                "room_id": room_id,
                "submitted_by": identity.id,
                "status": status,
                "payload": payload,
                "seq": first_seq + offset,
                "created_at": created_at,
                "timeout_seconds": timeout,
                "expires_at": expires_at,
                "claimed_at": created_at if claim_id else None,
                "claim_request_id": claim_id,
            }
        )
    await connection.execute(_INSERT_TASKS, rows)
    emissions: set[Emission] = set()
    if executor is not None:
        dispatches = [
            Dispatch(task.id, full_name, room_id, task.payload, 1, claim_id)
            for task, claim_id in zip(tasks, claims, strict=True)
            if claim_id is not None
        ]
        emissions.update(task_emission(task) for task in tasks)
        items = [task_response(task, None) for task in tasks]
        return Outcome(TaskBatchResponse(items=items), emissions, dispatches=dispatches)
    head = await pending_head(connection, job_id)
    items = []
    for offset, task in enumerate(tasks):
        position = queue_position(status, first_seq + offset, head)
        emissions.add(task_emission(task, position))
        if name.room_id != INTERNAL_ROOM:
            emissions.add(task_available(task))
        items.append(task_response(task, position))
    return Outcome(TaskBatchResponse(items=items), emissions)
