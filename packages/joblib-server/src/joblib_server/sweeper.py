"""The sweeper: cleans up workers that stopped heartbeating and stuck tasks."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

from joblib_server.disconnects import CleanupReceipt, cleanup_stale_workers
from joblib_server.idempotency import forget_expired_keys
from joblib_server.retention import delete_finished_tasks
from joblib_server.stranded import requeue_unstarted_claims
from joblib_server.tasks import cleanup_stuck_internal_tasks

if TYPE_CHECKING:
    from joblib_server.runtime import JobLib

logger = logging.getLogger("joblib_server.sweeper")

_KEY_BATCH = 500
_KEY_BATCHES = 20
"""At most this many batches of expired idempotency keys per sweep."""

_TASK_BATCH = 500
_TASK_BATCHES = 20
"""At most this many batches of finished tasks past their retention per sweep:
10,000 tasks, the rest at the next sweep."""


@dataclass(frozen=True, slots=True)
class Sweep:
    """What one sweep did."""

    workers: list[CleanupReceipt] = field(default_factory=list)
    """The workers removed for a stale heartbeat."""
    internal_tasks: list[uuid.UUID] = field(default_factory=list)
    """The ids of the `@internal` tasks failed for running too long."""
    unstarted: list[uuid.UUID] = field(default_factory=list)
    """The ids of the claimed tasks put back to pending for not starting in time."""
    idempotency_keys: int = 0
    """How many idempotency keys older than their time to live were deleted."""
    tasks_deleted: int = 0
    """How many finished tasks older than `task_retention_seconds` were deleted."""

    def __bool__(self) -> bool:
        """Whether the sweep changed anything."""
        return bool(
            self.workers or self.internal_tasks or self.unstarted or self.tasks_deleted
        )


async def sweep_once(joblib: JobLib) -> Sweep:
    """Run one sweep: each part a change of its own, through `JobLib.execute`."""
    settings = joblib.settings
    workers = await joblib.execute(
        cleanup_stale_workers, settings.worker_timeout_seconds
    )
    tasks = await joblib.execute(
        cleanup_stuck_internal_tasks, settings.internal_task_timeout_seconds
    )
    unstarted = await joblib.execute(
        requeue_unstarted_claims, settings.claim_start_timeout_seconds
    )
    keys = 0
    for _ in range(_KEY_BATCHES):
        # Small batches, each its own transaction: no long write lock.
        forgotten = await joblib.execute(
            forget_expired_keys, settings.idempotency_key_ttl_seconds, _KEY_BATCH
        )
        keys += forgotten
        if forgotten < _KEY_BATCH:
            break
    deleted = 0
    for _ in range(_TASK_BATCHES):
        gone = await joblib.execute(
            delete_finished_tasks, settings.task_retention_seconds, _TASK_BATCH
        )
        deleted += gone
        if gone < _TASK_BATCH:
            break
    return Sweep(workers, list(tasks), unstarted, keys, deleted)


async def run_sweeper(joblib: JobLib) -> None:
    """Sweep every interval until cancelled; a failed sweep is logged, not fatal."""
    while True:
        try:
            # A sweep cut off mid-transaction by shutdown can leave its pooled
            # connection half-closed and shutdown hanging: finish it first.
            with anyio.CancelScope(shield=True):
                sweep = await sweep_once(joblib)
            if sweep:
                logger.info(
                    "sweeper removed %d workers, failed %d internal tasks, "
                    "put %d claimed tasks nobody started back to pending and "
                    "deleted %d finished tasks past their retention",
                    len(sweep.workers),
                    len(sweep.internal_tasks),
                    len(sweep.unstarted),
                    sweep.tasks_deleted,
                )
        except Exception:
            logger.exception("sweep failed; trying again next interval")
        await anyio.sleep(joblib.settings.sweeper_interval_seconds)
