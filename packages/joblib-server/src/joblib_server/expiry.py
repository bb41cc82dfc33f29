"""Time limits of tasks: a running task past its deadline, a pending one past expiry.

A task gets `timeout_seconds` (running time) and `pending_timeout_seconds` (time
in the queue) from its submit or its job. Its `expires_at` is set when it is
submitted, its `deadline_at` when it starts. Past either, `expire_due_tasks`
fails it, with `error_code` `expired` or `deadline_exceeded`; the worker running
a task past its deadline is told to stop (`task_cancelled`), as for a cancel.

The database says what is due; `TimeLimits` only decides when to look. It keeps
the earliest due time it knows of: read from the database when it starts and after
every pass, and lowered by each committed change that gives a task a deadline or
an expiry (`notice`). So a task is failed within milliseconds of its time, not at
the next sweep, and a server that restarts finds the limits its predecessor set.
Several server processes each fail what is due; a row already failed by one is
skipped by the others.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from joblib_protocol import (
    CancelReason,
    Emission,
    ErrorCode,
    TaskStatus,
    TaskStatusEvent,
)
from joblib_server.backends import backend_of
from joblib_server.jobs import soft_delete_orphan_jobs
from joblib_server.outcome import Outcome
from joblib_server.tables import JOB_TABLE, TASK_TABLE, job_full_name, utcnow
from joblib_server.views import TaskRow, task_cancelled, task_emission

if TYPE_CHECKING:
    from joblib_server.runtime import JobLib

logger = logging.getLogger("joblib_server.expiry")

RECHECK_SECONDS = 30.0
"""Longest the timer sleeps without reading the database: limits set by another
server process that died are found within this."""

BATCH = 500
"""Most tasks failed in one transaction; a longer backlog takes several."""

_task, _job = TASK_TABLE, JOB_TABLE
_RUNNING, _PENDING = TaskStatus.RUNNING.value, TaskStatus.PENDING.value

_DUE = (
    # The two partial indexes (ix_joblib_task_deadline, ix_joblib_task_expiry)
    # find the due rows without reading any other.
    sa.select(
        *_task.c,
        _job.c.room_id.label("job_room_id"),
        _job.c.category.label("job_category"),
        _job.c.name.label("job_name"),
    )
    .join(_job, _job.c.id == _task.c.job_id)
    .where(
        sa.or_(
            sa.and_(
                _task.c.status == _RUNNING,
                _task.c.deadline_at <= sa.bindparam("b_now"),
            ),
            sa.and_(
                _task.c.status == _PENDING,
                _task.c.expires_at <= sa.bindparam("b_now"),
            ),
        )
    )
    .limit(BATCH)
)

_FAIL = (
    sa.update(_task)
    .where(_task.c.id == sa.bindparam("b_task"))
    .values(
        status=TaskStatus.FAILED.value,
        error=sa.bindparam("b_error"),
        error_code=sa.bindparam("b_error_code"),
        completed_at=sa.bindparam("b_now"),
    )
)

_NEXT_DEADLINE = sa.select(sa.func.min(_task.c.deadline_at)).where(
    _task.c.status == _RUNNING, _task.c.deadline_at.is_not(None)
)
_NEXT_EXPIRY = sa.select(sa.func.min(_task.c.expires_at)).where(
    _task.c.status == _PENDING, _task.c.expires_at.is_not(None)
)


def deadline_error(timeout_seconds: float | None) -> str:
    """The human `error` of a task failed for running too long."""
    limit = f" of {timeout_seconds:g} s" if timeout_seconds is not None else ""
    return f"Task ran past its time limit{limit}"


EXPIRED_ERROR = "Task waited in the queue past its time limit"
"""The human `error` of a task failed for waiting too long to be claimed."""


async def expire_due_tasks(
    session: AsyncSession, now: datetime | None = None
) -> Outcome[list[uuid.UUID]]:
    """Fail the tasks past their deadline or expiry (up to `BATCH`); their ids."""
    now = now or utcnow()
    connection = await session.connection()
    # SKIP LOCKED: a task being finished right now (its PATCH holds the row) is
    # left alone; if it is still due, the next pass fails it.
    due = backend_of(session).locked(_DUE, skip_locked=True, of=_task)
    rows = (await connection.execute(due, {"b_now": now})).all()
    emissions: set[Emission] = set()
    for row in rows:
        running = row.status == _RUNNING
        if running:
            error, code = (
                deadline_error(row.timeout_seconds),
                ErrorCode.DEADLINE_EXCEEDED,
            )
        else:
            error, code = EXPIRED_ERROR, ErrorCode.EXPIRED
        params = {"b_task": row.id, "b_error": error, "b_error_code": code.value}
        await connection.execute(_FAIL, {**params, "b_now": now})
        name = job_full_name(row.job_room_id, row.job_category, row.job_name)
        task = replace(
            TaskRow.of(row, name),
            status=TaskStatus.FAILED.value,
            error=error,
            error_code=code.value,
            completed_at=now,
        )
        emissions.add(task_emission(task))
        if running:
            stop = task_cancelled(task, CancelReason.DEADLINE_EXCEEDED)
            if stop is not None:
                emissions.add(stop)
    if rows:
        emissions |= await soft_delete_orphan_jobs(
            session, sorted({row.job_id for row in rows})
        )
    return Outcome([row.id for row in rows], emissions)


async def next_due(session: AsyncSession) -> datetime | None:
    """The earliest deadline of a running task or expiry of a pending one."""
    connection = await session.connection()
    times = [
        await connection.scalar(_NEXT_DEADLINE),
        await connection.scalar(_NEXT_EXPIRY),
    ]
    known = [time for time in times if time is not None]
    return min(known) if known else None


def _due_time(event: Any) -> datetime | None:
    if not isinstance(event, TaskStatusEvent):
        return None
    if event.status == TaskStatus.RUNNING:
        return event.deadline_at
    if event.status == TaskStatus.PENDING:
        return event.expires_at
    return None


class TimeLimits:
    """Fails tasks on time: `run()` in the lifespan, `notice()` after each commit."""

    def __init__(self, joblib: JobLib) -> None:
        self._joblib = joblib
        self._next: datetime | None = None
        self._wake = anyio.Event()

    def notice(self, emissions: Iterable[Emission]) -> None:
        """Learn of the deadlines and expiries a committed change set."""
        for emission in emissions:
            due = _due_time(emission.event)
            if due is not None and (self._next is None or due < self._next):
                self._next = due
                self._wake.set()

    async def run(self) -> None:
        """Fail tasks as they fall due, until cancelled; a failed pass is logged."""
        while True:
            try:
                await self._pass()
            except Exception:
                logger.exception("failing tasks past their time limits failed")
                await anyio.sleep(1.0)

    async def _pass(self) -> None:
        # A fresh event before the read: a change noticed from now on wakes us.
        self._wake = anyio.Event()
        async with self._joblib.database.read() as session:
            stored = await next_due(session)
        if stored is not None and (self._next is None or stored < self._next):
            self._next = stored
        now = utcnow()
        if self._next is None or self._next > now:
            wait = RECHECK_SECONDS
            if self._next is not None:
                wait = min(wait, (self._next - now).total_seconds())
            with anyio.move_on_after(wait):
                await self._wake.wait()
            if self._next is None or self._next > utcnow():
                return  # woken for a sooner time, or only rechecking
        self._next = None
        # Shielded like the sweeper: a pass cut off mid-transaction at shutdown
        # could leave its pooled connection half-closed.
        with anyio.CancelScope(shield=True):
            failed = await self._joblib.execute(expire_due_tasks)
        if failed:
            logger.info("failed %d tasks past their time limits", len(failed))
        else:
            # What was due is being finished right now (its row is locked):
            # look again shortly rather than at once.
            await anyio.sleep(0.05)
