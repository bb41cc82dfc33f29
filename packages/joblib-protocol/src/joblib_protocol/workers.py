"""REST models of workers."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, Field


class WorkerResponse(BaseModel):
    """A worker, as created or heartbeated."""

    id: UUID
    last_heartbeat: datetime


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
