"""Batch submit: many tasks of one job in one change, all or none of them.

A batch is one change with a fixed number of statements whatever its size
(`queueing.queue_tasks`, which a single submit uses too): every payload is checked
against the schema compiled once, the tasks go in as one `INSERT … SELECT` over
the payloads sent as one JSON array (`Backend.insert_tasks_statement`); on
PostgreSQL the reservation of the job's sequence numbers, the insert and the
read of the queue head are one statement in autocommit
(`Backend.queue_statement`), on SQLite three in one transaction. The batch
lands at the end of the job's queue, in the order of its payloads (consecutive
sequence numbers, one `created_at`). Its announcements are those of as many
single submits: a `task_status_event` per task, and a `task_available` per
claimable task, so each wakes one held claim.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from joblib_protocol import TaskBatchResponse, ValidationFailed
from joblib_server.auth import Identity
from joblib_server.errors import ProblemError
from joblib_server.outcome import Outcome, one_statement
from joblib_server.payloads import check_payloads
from joblib_server.queueing import NO_LIMITS, TaskLimits, queue_tasks

BODY_FACTOR = 16
"""A batch's body may be this many times `max_body_bytes` (16 MiB by default):
1,000 payloads of a few KiB each do not fit the single submit's 1 MiB."""


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


@one_statement
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
    queued = await queue_tasks(
        session,
        identity,
        room_id,
        full_name,
        payloads,
        lambda schema: check_payloads(schema, payloads),
        internal_jobs=internal_jobs,
        limits=limits,
    )
    return Outcome(
        TaskBatchResponse(items=queued.items),
        queued.emissions,
        dispatches=queued.dispatches,
    )
