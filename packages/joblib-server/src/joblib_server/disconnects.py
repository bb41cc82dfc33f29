"""When a worker goes away: its tasks are failed or requeued, and it is removed.

A worker leaves in one of four ways, each with its `error_code`:

- `DELETE /workers/{id}` (`worker_removed`): at once.
- its socket closes (`worker_disconnected`): at once when its jobs allow no grace;
  otherwise it is marked disconnected and keeps its tasks for the longest grace of
  its jobs. Any sign of life (a heartbeat, a claim, a report, a join) ends the
  grace; when it runs out, the timer the closing socket started, or failing that
  the sweeper, cleans up.
- its heartbeat goes stale (`worker_timed_out`): the sweeper.
- a host calls `cleanup_worker`.

Each lost task follows its job's disconnect policy: `requeue` puts it back at its
place in the queue with `attempt` + 1 until `max_attempts` runs are spent; `fail`,
or a task out of attempts, fails with the reason.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from joblib_protocol import (
    INTERNAL_ROOM,
    DisconnectPolicy,
    Emission,
    ErrorCode,
    TaskStatus,
)
from joblib_server.auth import Identity
from joblib_server.backends import backend_of
from joblib_server.jobs import hide_orphan_jobs, job_policy
from joblib_server.outcome import Outcome
from joblib_server.providers import remove_worker_providers, serves_providers
from joblib_server.queues import pending_head, queue_position
from joblib_server.settings import default_policy, settings_of
from joblib_server.tables import (
    JOB_TABLE,
    LINK_TABLE,
    TASK_TABLE,
    WORKER_TABLE,
    Worker,
    job_full_name,
    utcnow,
)
from joblib_server.views import TaskRow, jobs_invalidate, task_available, task_emission
from joblib_server.workers import locked_worker, owned_worker

WORKER_DISCONNECTED = "Worker disconnected"
"""The human `error` of every task lost with its worker (as zndraw-joblib says)."""

_task, _job, _worker, _link = TASK_TABLE, JOB_TABLE, WORKER_TABLE, LINK_TABLE
_IN_FLIGHT = [TaskStatus.CLAIMED.value, TaskStatus.RUNNING.value]

_JOB_POLICY = (
    _job.c.room_id.label("job_room_id"),
    _job.c.category.label("job_category"),
    _job.c.name.label("job_name"),
    _job.c.disconnect_action,
    _job.c.max_attempts,
    _job.c.grace_seconds,
)

_LOST_TASKS = (
    sa.select(*_task.c, *_JOB_POLICY)
    .join(_job, _job.c.id == _task.c.job_id)
    .where(
        _task.c.worker_id == sa.bindparam("b_worker"),
        _task.c.status.in_(_IN_FLIGHT),
    )
    .order_by(_task.c.created_at, _task.c.seq)
)

_SOME_LOST_TASKS = _LOST_TASKS.where(
    _task.c.id.in_(sa.bindparam("b_tasks", expanding=True))
)

_REQUEUE = (
    sa.update(_task)
    .where(
        _task.c.id.in_(sa.bindparam("b_tasks", expanding=True)),
        _task.c.status.in_(_IN_FLIGHT),
    )
    .values(
        status=TaskStatus.PENDING.value,
        worker_id=None,
        started_at=None,
        claimed_at=None,
        claim_request_id=None,
        attempt=_task.c.attempt + 1,
        # A new run: the next start sets a new deadline; the queue expiry is
        # for the first wait only, so a lost worker never makes a task expire.
        deadline_at=None,
        expires_at=None,
        progress=None,
    )
)

_FAIL = (
    sa.update(_task)
    .where(
        _task.c.id.in_(sa.bindparam("b_tasks", expanding=True)),
        _task.c.status.in_(_IN_FLIGHT),
    )
    .values(
        status=TaskStatus.FAILED.value,
        error=sa.bindparam("b_error"),
        error_code=sa.bindparam("b_error_code"),
        completed_at=sa.bindparam("b_now"),
    )
)

_UNLINK = (
    sa.delete(_link)
    .where(_link.c.worker_id == sa.bindparam("b_worker"))
    .returning(_link.c.job_id)
)

# The owner comes back for the cleanup's log line (`cleanups_of`).
_DELETE_WORKER = (
    sa.delete(_worker)
    .where(_worker.c.id == sa.bindparam("b_worker"))
    .returning(_worker.c.owner_id)
)

_JOB_NAMES = sa.select(_job.c.id, _job.c.room_id).where(
    _job.c.id.in_(sa.bindparam("b_jobs", expanding=True))
)

_WORKER_JOBS = (
    sa.select(_job.c.disconnect_action, _job.c.max_attempts, _job.c.grace_seconds)
    .join(_link, _link.c.job_id == _job.c.id)
    .where(_link.c.worker_id == sa.bindparam("b_worker"))
)


@dataclass(frozen=True, slots=True)
class CleanupReceipt:
    """What cleaning up one worker did."""

    worker_id: uuid.UUID
    failed: tuple[uuid.UUID, ...] = ()
    """Its claimed and running tasks that failed (no requeue, or out of attempts)."""
    requeued: tuple[uuid.UUID, ...] = ()
    """Its claimed and running tasks put back in their queues."""
    jobs_removed: tuple[str, ...] = ()
    """The jobs soft-deleted because nobody serves them any more."""


async def cleanup_worker(
    session: AsyncSession,
    worker: Worker,
    *,
    error: str = WORKER_DISCONNECTED,
    error_code: ErrorCode = ErrorCode.WORKER_DISCONNECTED,
) -> set[Emission]:
    """Fail or requeue the worker's in-flight tasks, remove it, hide orphaned jobs.

    A building block: it runs in the caller's transaction, does not commit, and
    returns the emissions. To clean up a worker as one change, with everything
    that follows the commit, run `JobLib.execute(cleanup_worker_by_id, worker_id)`.
    """
    _receipt, emissions = await _cleanup(session, worker.id, error, error_code)
    return emissions


async def cleanup_worker_by_id(
    session: AsyncSession,
    worker_id: uuid.UUID,
    error_code: ErrorCode = ErrorCode.WORKER_DISCONNECTED,
) -> Outcome[CleanupReceipt]:
    """Clean up a worker by id, as one change; a worker already gone is a no-op."""
    if await locked_worker(session, worker_id) is None:
        return Outcome(CleanupReceipt(worker_id))
    return await _removal(session, worker_id, error_code)


async def delete_worker(
    session: AsyncSession, worker_id: uuid.UUID, identity: Identity
) -> Outcome[CleanupReceipt]:
    """Remove a worker as its owner or an admin (`DELETE /workers/{id}`)."""
    await owned_worker(session, worker_id, identity, admin_may=True)
    return await _removal(session, worker_id, ErrorCode.WORKER_REMOVED)


async def socket_closed(
    session: AsyncSession, worker_id: uuid.UUID, epoch: int
) -> Outcome[float | None]:
    """The socket that joined for the worker at `epoch` closed.

    Returns None when there was nothing to do (the worker is gone, or joined again
    since from another socket), 0 when it was cleaned up at once, or the grace time
    in seconds after which `grace_expired` should be run.
    """
    worker = await locked_worker(session, worker_id)
    if worker is None or worker.socket_epoch != epoch:
        return Outcome(None)
    grace = await _grace(session, worker_id)
    if grace <= 0:
        removal = await _removal(session, worker_id, ErrorCode.WORKER_DISCONNECTED)
        return Outcome(0.0, removal.emissions, removal.removed_workers)
    worker.disconnected_at = utcnow()
    return Outcome(grace)


async def grace_expired(
    session: AsyncSession, worker_id: uuid.UUID, epoch: int
) -> Outcome[CleanupReceipt | None]:
    """Clean up a worker whose grace ran out, unless it came back meanwhile."""
    worker = await locked_worker(session, worker_id)
    if worker is None or worker.socket_epoch != epoch or worker.disconnected_at is None:
        return Outcome(None)
    removal = await _removal(session, worker_id, ErrorCode.WORKER_DISCONNECTED)
    return Outcome(removal.value, removal.emissions, removal.removed_workers)


async def cleanup_stale_workers(
    session: AsyncSession,
    timeout_seconds: float,
    now: datetime | None = None,
) -> Outcome[list[CleanupReceipt]]:
    """Clean up the workers whose heartbeat is stale or whose grace ran out."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=timeout_seconds)
    # SKIP LOCKED: another server process sweeping at the same moment takes
    # the rows we do not, instead of both cleaning up the same worker.
    backend = backend_of(session)
    stale = (
        await session.execute(
            backend.locked(
                select(Worker.id, Worker.last_heartbeat, Worker.disconnected_at)
                .where(
                    sa.or_(
                        col(Worker.last_heartbeat) < cutoff,
                        col(Worker.disconnected_at).is_not(None),
                    )
                )
                .order_by(col(Worker.last_heartbeat)),
                skip_locked=True,
            )
        )
    ).all()
    receipts: list[CleanupReceipt] = []
    emissions: set[Emission] = set()
    for worker_id, beat, disconnected_at in stale:
        if beat < cutoff:
            code = ErrorCode.WORKER_TIMED_OUT
        elif (
            disconnected_at + timedelta(seconds=await _grace(session, worker_id)) <= now
        ):
            # Its process, whose timer would have cleaned up, stopped meanwhile.
            code = ErrorCode.WORKER_DISCONNECTED
        else:
            continue
        removal = await _removal(session, worker_id, code)
        receipts.append(removal.value)
        emissions |= removal.emissions
    return Outcome(receipts, emissions, frozenset(r.worker_id for r in receipts))


async def _grace_of(session: AsyncSession, worker_id: uuid.UUID) -> timedelta:
    return timedelta(seconds=await _grace(session, worker_id))


async def _grace(session: AsyncSession, worker_id: uuid.UUID) -> float:
    """The longest grace time among the policies of the worker's jobs."""
    defaults = default_policy(settings_of(session))
    connection = await session.connection()
    jobs = (await connection.execute(_WORKER_JOBS, {"b_worker": worker_id})).all()
    graces = [job_policy(job, defaults).grace_seconds for job in jobs]
    if await serves_providers(connection, worker_id):
        # A provider has no policy of its own: the server's grace, as for a job
        # registered without one.
        graces.append(defaults.grace_seconds)
    return max(graces, default=0.0)


async def _removal(
    session: AsyncSession, worker_id: uuid.UUID, error_code: ErrorCode
) -> Outcome[CleanupReceipt]:
    receipt, emissions = await _cleanup(
        session, worker_id, WORKER_DISCONNECTED, error_code
    )
    return Outcome(receipt, emissions, frozenset({worker_id}))


async def release_tasks(
    session: AsyncSession,
    worker_id: uuid.UUID,
    task_ids: Collection[uuid.UUID],
    *,
    error: str,
    error_code: ErrorCode,
) -> Outcome[CleanupReceipt]:
    """Fail or requeue some of a worker's in-flight tasks, each by its job's policy.

    The worker stays. Tasks that are no longer its own, or no longer claimed or
    running, are left alone.
    """
    connection = await session.connection()
    params = {"b_worker": worker_id, "b_tasks": sorted(set(task_ids))}
    # Locked as PATCH /tasks locks them: a racing report waits, then sees the change.
    lost = (
        await connection.execute(
            backend_of(session).locked(_SOME_LOST_TASKS, of=_task), params
        )
    ).all()
    failed, requeued, emissions = await _release(session, lost, error, error_code)
    receipt = CleanupReceipt(worker_id, tuple(failed), tuple(requeued))
    return Outcome(receipt, emissions)


async def _cleanup(
    session: AsyncSession, worker_id: uuid.UUID, error: str, error_code: ErrorCode
) -> tuple[CleanupReceipt, set[Emission]]:
    """The worker row is locked by the caller (or being deleted in its transaction)."""
    connection = await session.connection()
    backend = backend_of(session)
    # On PostgreSQL the lost tasks are locked as PATCH /tasks locks them, so a
    # report racing the cleanup waits and then sees the new state.
    lost = (
        await connection.execute(
            backend.locked(_LOST_TASKS, of=_task), {"b_worker": worker_id}
        )
    ).all()
    failed, requeued, emissions = await _release(session, lost, error, error_code)
    unlinked = (
        (await connection.execute(_UNLINK, {"b_worker": worker_id})).scalars().all()
    )
    # Its providers go with it, in the same transaction as its jobs' links.
    emissions |= await remove_worker_providers(connection, worker_id)
    owner = (
        await connection.execute(_DELETE_WORKER, {"b_worker": worker_id})
    ).scalar_one_or_none()
    if unlinked:
        rooms = await connection.execute(_JOB_NAMES, {"b_jobs": sorted(set(unlinked))})
        emissions |= {jobs_invalidate(room) for _job_id, room in rooms}
    affected = {row.job_id for row in lost} | set(unlinked)
    hidden, more = await hide_orphan_jobs(session, affected)
    emissions |= more
    receipt = CleanupReceipt(
        worker_id=worker_id,
        failed=tuple(failed),
        requeued=tuple(requeued),
        jobs_removed=tuple(sorted(job.full_name for job in hidden)),
    )
    session.info.setdefault(_CLEANUPS, []).append(Cleanup(receipt, owner, error_code))
    return receipt, emissions


_CLEANUPS = "joblib_cleanups"


@dataclass(frozen=True)
class Cleanup:
    """One worker cleaned up in a transaction, for the line logged once it commits."""

    receipt: CleanupReceipt
    identity: str | None
    reason: ErrorCode


def cleanups_of(session: AsyncSession) -> list[Cleanup]:
    """The workers cleaned up in `session` so far (`JobLib.execute` logs them)."""
    return list(session.info.get(_CLEANUPS, ()))


async def _release(
    session: AsyncSession, lost: Sequence[Any], error: str, error_code: ErrorCode
) -> tuple[list[uuid.UUID], list[uuid.UUID], set[Emission]]:
    """Fail or requeue locked rows of `_LOST_TASKS`: (failed, requeued, emissions).

    One statement for the failed and one for the requeued, however many there are.
    """
    defaults = default_policy(settings_of(session))
    connection = await session.connection()
    back: list[Any] = []
    gone: list[Any] = []
    for row in lost:
        (back if _requeues(row, job_policy(row, defaults)) else gone).append(row)
    now = utcnow()
    emissions: set[Emission] = set()
    if back:
        await connection.execute(_REQUEUE, {"b_tasks": [row.id for row in back]})
        heads = {
            job_id: await pending_head(connection, job_id)
            for job_id in {row.job_id for row in back}
        }
        for row in back:
            task = replace(
                _task_row(row),
                status=TaskStatus.PENDING.value,
                worker_id=None,
                started_at=None,
                attempt=row.attempt + 1,
                deadline_at=None,
                expires_at=None,
                progress=None,
            )
            position = queue_position(task.status, row.seq, heads[row.job_id])
            emissions.add(task_emission(task, position))
            if row.job_room_id != INTERNAL_ROOM:
                emissions.add(task_available(task))
    if gone:
        params = {
            "b_tasks": [row.id for row in gone],
            "b_error": error,
            "b_error_code": error_code.value,
            "b_now": now,
        }
        await connection.execute(_FAIL, params)
        for row in gone:
            task = replace(
                _task_row(row),
                status=TaskStatus.FAILED.value,
                error=error,
                error_code=error_code.value,
                completed_at=now,
            )
            emissions.add(task_emission(task))
    return [row.id for row in gone], [row.id for row in back], emissions


def _task_row(row: Any) -> TaskRow:
    return TaskRow.of(
        row, job_full_name(row.job_room_id, row.job_category, row.job_name)
    )


def _requeues(row: Any, policy: DisconnectPolicy) -> bool:
    return policy.action == "requeue" and row.attempt < policy.max_attempts
