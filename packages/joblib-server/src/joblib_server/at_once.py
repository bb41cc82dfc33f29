"""A claim and a worker's reports as one autocommitted statement (PostgreSQL).

The transactional operations (`tasks.claim_task`, `tasks.update_task`,
`progress.report_progress`) cost a claim-and-start six round trips (BEGIN, touch
the worker, a retried claim's lookup, the worker's queues, the claim, COMMIT), a
completion seven (BEGIN, the locked read, the grace time, the update, the orphan
check, `pg_notify`, COMMIT), a start or a progress report five. On a 2-core
machine shared with the server, those round trips were most of PostgreSQL's
cost per task (97.5 tasks/s against SQLite's 251). Here the common case of each
is one statement of data-modifying CTEs, run in autocommit: it changes nothing
unless every check holds, and PostgreSQL commits it as a whole.

Each function returns None when the statement did not apply (an unknown or
foreign worker, a stale report, a retried claim, a job that may become an
orphan, ...): `JobLib.execute_at_once` then runs the transactional operation,
which gives the same answer and the same problem it always gave. So errors keep
one source, and only the happy path is written twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Set as AbstractSet
from dataclasses import replace
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from joblib_protocol import (
    Emission,
    ErrorCode,
    TaskProgress,
    TaskProgressEvent,
    TaskProgressRequest,
    TaskResponse,
    TaskStatus,
    TaskUpdateRequest,
    is_terminal,
    is_valid_transition,
    room_channel,
)
from joblib_server.auth import Identity
from joblib_server.dispatch import Claim
from joblib_server.errors import ProblemError
from joblib_server.outcome import Outcome
from joblib_server.settings import settings_of
from joblib_server.tables import TASK_TABLE, UTCDateTime, job_full_name, utcnow
from joblib_server.tasks import check_result
from joblib_server.views import TaskRow, task_emission, task_response
from joblib_server.wakebus import Wake, notice_in_statement, sent_in_statement

_task = TASK_TABLE
_TASK_COLUMNS = tuple(column.name for column in _task.c)

# The deadline of a task that starts now, as `tasks._set_deadline` computes it.
_DEADLINE = (
    "CASE WHEN t.timeout_seconds IS NOT NULL "
    "THEN CAST(:b_now AS timestamptz) + make_interval(secs => t.timeout_seconds) END"
)


def _task_list(alias: str) -> str:
    return ", ".join(f"{alias}.{name}" for name in _TASK_COLUMNS)


def _task_result_columns() -> list[sa.ColumnClause[Any]]:
    return [sa.column(column.name, column.type) for column in _task.c]


@cache
def claim_statement(start: bool) -> sa.TextualSelect:
    """The claim as one statement; see `claim_task`."""
    status = (TaskStatus.RUNNING if start else TaskStatus.CLAIMED).value
    started = f", started_at = :b_now, deadline_at = {_DEADLINE}" if start else ""
    text = f"""
WITH touched AS (
    UPDATE joblib_worker SET last_heartbeat = :b_now, disconnected_at = NULL
    WHERE id = :b_worker AND owner_id = :b_owner
    RETURNING id
),
again AS (
    SELECT 1 FROM joblib_task
    WHERE CAST(:b_request AS varchar) IS NOT NULL AND worker_id = :b_worker
      AND status IN ('claimed', 'running') AND claim_request_id = :b_request
    LIMIT 1
),
queues AS (
    SELECT j.id, j.room_id, j.category, j.name,
        (SELECT p.created_at FROM joblib_task p
         WHERE p.job_id = j.id AND p.status = 'pending'
         ORDER BY p.created_at, p.seq, p.id LIMIT 1) AS oldest
    FROM joblib_job j JOIN joblib_worker_job l ON l.job_id = j.id
    WHERE l.worker_id = :b_worker AND j.room_id <> ALL(:b_skip)
),
claimed AS (
    UPDATE joblib_task t
    SET status = '{status}', worker_id = :b_worker, claimed_at = :b_now,
        claim_request_id = :b_request{started}
    WHERE t.id = (
        SELECT p.id FROM joblib_task p
        WHERE p.job_id = (
            SELECT q.id FROM queues q WHERE q.oldest IS NOT NULL
            ORDER BY q.oldest LIMIT 1
        ) AND p.status = 'pending'
        ORDER BY p.created_at, p.seq, p.id
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    )
      AND t.status = 'pending'
      AND EXISTS (SELECT 1 FROM touched)
      AND NOT EXISTS (SELECT 1 FROM again)
    RETURNING t.*
)
SELECT (SELECT count(*) FROM touched) AS touched,
       EXISTS (SELECT 1 FROM again) AS again,
       q.id AS queue_job, q.room_id AS job_room_id, q.category AS job_category,
       q.name AS job_name, q.oldest AS oldest,
       {_task_list("c")}
FROM (SELECT 1) AS one
LEFT JOIN queues q ON true
LEFT JOIN claimed c ON c.job_id = q.id
"""
    return (
        sa.text(text)
        .bindparams(
            sa.bindparam("b_now", type_=UTCDateTime()),
            sa.bindparam("b_worker", type_=sa.Uuid()),
            sa.bindparam("b_owner", type_=sa.String()),
            sa.bindparam("b_request", type_=sa.String()),
            sa.bindparam("b_skip", type_=postgresql.ARRAY(sa.String())),
        )
        .columns(
            sa.column("touched", sa.Integer()),
            sa.column("again", sa.Boolean()),
            sa.column("queue_job", sa.Uuid()),
            sa.column("job_room_id", sa.String()),
            sa.column("job_category", sa.String()),
            sa.column("job_name", sa.String()),
            sa.column("oldest", UTCDateTime()),
            *_task_result_columns(),
        )
    )


async def claim_task(
    session: AsyncSession,
    identity: Identity,
    worker_id: uuid.UUID,
    *,
    start: bool = False,
    request_id: str | None = None,
    skip_rooms: AbstractSet[str] = frozenset(),
) -> Outcome[Claim] | None:
    """`tasks.claim_task` in one statement; None where that one must answer.

    The worker's row is touched first and its lock held to the end, so a cleanup
    of the worker either waits for the claim (and then finds the task) or has
    removed the worker (and nothing is claimed). Declines: an unknown or foreign
    worker, a claim sent again under its `request_id`, and the rare claim whose
    oldest job's pending tasks were all being taken while another job had some.
    """
    now = utcnow()
    params = {
        "b_now": now,
        "b_worker": worker_id,
        "b_owner": identity.id,
        "b_request": request_id,
        "b_skip": sorted(skip_rooms),
    }
    connection = await session.connection()
    rows = (await connection.execute(claim_statement(start), params)).all()
    first = rows[0]
    if not first.touched or first.again:
        return None
    queues = [row for row in rows if row.queue_job is not None]
    for row in queues:
        if row.id is None:
            continue
        task = TaskRow.of(row, _job_name(row))
        emissions = {task_emission(task)}
        if start:
            # Observers still see the task pass through claimed.
            claimed = replace(task, status=TaskStatus.CLAIMED.value, started_at=None)
            emissions.add(task_emission(claimed))
        return Outcome(Claim(task_response(task, None)), emissions)
    if sum(row.oldest is not None for row in queues) > 1:
        # Every pending task of the oldest job was being claimed by someone else
        # (skipped as locked) and another job has some: `tasks.claim_task` tries
        # the jobs one by one.
        return None
    return Outcome(Claim(None, jobs=tuple(_job_name(row) for row in queues)))


def _job_name(row: Any) -> str:
    return job_full_name(row.job_room_id, row.job_category, row.job_name)


_REPORTED = frozenset({TaskStatus.RUNNING, TaskStatus.COMPLETED, TaskStatus.FAILED})
"""The reports a worker's owner makes about its task; a cancel, an executor's
report and anything an admin sends for someone else's worker go the
transactional way."""


@cache
def report_statement(new: TaskStatus) -> sa.TextualSelect:
    """A worker's report on its task as one statement; see `update_task`."""
    sources = ", ".join(
        f"'{status.value}'" for status in TaskStatus if is_valid_transition(status, new)
    )
    if new == TaskStatus.RUNNING:
        changes = f"started_at = :b_now, deadline_at = {_DEADLINE}"
        served = ""
    else:
        changes = (
            "completed_at = :b_now, error = :b_error, error_code = :b_error_code, "
            "result = :b_result"
        )
        # A job nobody serves any more may have to be hidden with its last open
        # task: `tasks.update_task` checks that under the job's lock.
        served = (
            "AND EXISTS (SELECT 1 FROM joblib_worker_job l WHERE l.job_id = t.job_id)"
        )
    text = f"""
WITH updated AS (
    UPDATE joblib_task t SET status = '{new.value}', {changes}
    FROM joblib_worker w
    WHERE t.id = :b_task AND w.id = t.worker_id AND w.owner_id = :b_owner
      AND (CAST(:b_worker AS uuid) IS NULL OR t.worker_id = :b_worker)
      AND t.status IN ({sources})
      {served}
    RETURNING t.*
),
returned AS (
    UPDATE joblib_worker SET disconnected_at = NULL
    WHERE id = :b_worker AND disconnected_at IS NOT NULL
      AND EXISTS (SELECT 1 FROM updated)
),
notified AS (
    SELECT pg_notify(CAST(:b_channel AS text), CAST(:b_message AS text))
    FROM updated WHERE CAST(:b_channel AS text) IS NOT NULL
)
SELECT (SELECT count(*) FROM notified) AS notified,
       j.room_id AS job_room_id, j.category AS job_category, j.name AS job_name,
       {_task_list("u")}
FROM updated u JOIN joblib_job j ON j.id = u.job_id
"""
    binds: list[sa.BindParameter[Any]] = [
        sa.bindparam("b_now", type_=UTCDateTime()),
        sa.bindparam("b_task", type_=sa.Uuid()),
        sa.bindparam("b_worker", type_=sa.Uuid()),
        sa.bindparam("b_owner", type_=sa.String()),
        sa.bindparam("b_channel", type_=sa.String()),
        sa.bindparam("b_message", type_=sa.String()),
    ]
    if new != TaskStatus.RUNNING:
        binds += [
            sa.bindparam("b_error", type_=sa.Text()),
            sa.bindparam("b_error_code", type_=sa.String()),
            sa.bindparam("b_result", type_=_task.c.result.type),
        ]
    return (
        sa.text(text)
        .bindparams(*binds)
        .columns(
            sa.column("notified", sa.Integer()),
            sa.column("job_room_id", sa.String()),
            sa.column("job_category", sa.String()),
            sa.column("job_name", sa.String()),
            *_task_result_columns(),
        )
    )


async def update_task(
    session: AsyncSession,
    identity: Identity,
    task_id: uuid.UUID,
    request: TaskUpdateRequest,
) -> Outcome[TaskResponse] | None:
    """A report on a task (running, completed, failed) by its worker's owner, at once.

    The task changes only if its worker belongs to `identity` (and is
    `request.worker_id`, when the report names one), and it may move to the new
    status; a terminal report also wakes
    the task's long-polls in other processes by a `pg_notify` in the same
    statement. Declines everything else, and every report that would be refused,
    to `tasks.update_task`.
    """
    new = request.status
    if new not in _REPORTED or request.claim_id:
        return None
    if request.error is not None and (not is_terminal(new) or "\x00" in request.error):
        return None
    if "result" in request.model_fields_set:
        try:
            check_result(request, settings_of(session).max_result_bytes)
        except ProblemError:
            return None
    wake = Wake(tasks=(str(task_id),)) if is_terminal(new) else Wake()
    channel, message = notice_in_statement(session, wake)
    params: dict[str, Any] = {
        "b_now": utcnow(),
        "b_task": task_id,
        "b_worker": request.worker_id,
        "b_owner": identity.id,
        "b_channel": channel,
        "b_message": message,
    }
    if new != TaskStatus.RUNNING:
        params.update(
            b_error=request.error,
            b_error_code=ErrorCode.JOB_FAILED.value
            if new == TaskStatus.FAILED
            else None,
            b_result=request.result,
        )
    connection = await session.connection()
    row = (await connection.execute(report_statement(new), params)).first()
    if row is None:
        return None
    if row.notified:
        sent_in_statement(session, wake)
    task = TaskRow.of(row, _job_name(row))
    return Outcome(task_response(task, None), {task_emission(task)})


_PROGRESS_STATEMENT = (
    sa.text(
        """
WITH updated AS (
    UPDATE joblib_task t SET progress = :b_progress
    FROM joblib_worker w
    WHERE t.id = :b_task AND w.id = t.worker_id AND w.owner_id = :b_owner
      AND (CAST(:b_worker AS uuid) IS NULL OR t.worker_id = :b_worker)
      AND t.status = 'running'
    RETURNING t.room_id
),
returned AS (
    UPDATE joblib_worker SET disconnected_at = NULL
    WHERE id = :b_worker AND disconnected_at IS NOT NULL
      AND EXISTS (SELECT 1 FROM updated)
)
SELECT room_id FROM updated
"""
    )
    .bindparams(
        sa.bindparam("b_task", type_=sa.Uuid()),
        sa.bindparam("b_worker", type_=sa.Uuid()),
        sa.bindparam("b_owner", type_=sa.String()),
        sa.bindparam("b_progress", type_=_task.c.progress.type),
    )
    .columns(sa.column("room_id", sa.String()))
)


async def report_progress(
    session: AsyncSession,
    identity: Identity,
    task_id: uuid.UUID,
    request: TaskProgressRequest,
) -> Outcome[None] | None:
    """`progress.report_progress` in one statement, for the worker's owner.

    Declines an executor's report, an admin's for another's worker, and every
    report that would be refused (not running, stale), to that operation.
    """
    if request.claim_id:
        return None
    progress = TaskProgress(**request.model_dump(exclude={"worker_id"}))
    params = {
        "b_task": task_id,
        "b_worker": request.worker_id,
        "b_owner": identity.id,
        "b_progress": progress.model_dump(),
    }
    connection = await session.connection()
    room_id = (await connection.execute(_PROGRESS_STATEMENT, params)).scalar()
    if room_id is None:
        return None
    event = TaskProgressEvent(id=str(task_id), room_id=room_id, progress=progress)
    return Outcome(None, {Emission(event, room_channel(room_id))})
