"""REST models of workers."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, Field


class WorkerResponse(BaseModel):
    """A worker, as created or heartbeated."""

    id: UUID
    last_heartbeat: datetime
    # Ours: only in the answer to a heartbeat that listed its tasks.
    cancelled: list[UUID] = Field(
        default_factory=list,
        description="Tasks the heartbeat listed that the worker should stop: "
        "cancelled, failed by their deadline, or no longer its.",
    )


MAX_HELD_TASKS = 1000
"""The most tasks one heartbeat may list."""


class WorkerHeartbeatRequest(BaseModel):
    """Ours: the optional body of `PATCH /workers/{worker_id}`."""

    tasks: list[UUID] | None = Field(
        default=None,
        max_length=MAX_HELD_TASKS,
        description="Every task the worker holds (claimed or running, not yet "
        "reported finished). Tasks the server has as this worker's that are not "
        "listed, and were claimed a while ago, are failed or requeued by their job's "
        "disconnect policy with `error_code` `not_held`. Absent: nothing is checked.",
    )


class WorkerSummary(BaseModel):
    """A worker as listed, with the number of jobs it serves."""

    id: UUID
    last_heartbeat: datetime
    job_count: int


class WorkerCleanupResponse(BaseModel):
    """Ours: what `DELETE /workers/{id}` did (with `Prefer: return=representation`)."""

    worker_id: UUID
    failed: list[UUID] = Field(default_factory=list)
    requeued: list[UUID] = Field(default_factory=list)
    jobs_removed: list[str] = Field(default_factory=list)
