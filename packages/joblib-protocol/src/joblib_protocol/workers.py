"""REST models of workers."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel


class WorkerResponse(BaseModel):
    """A worker, as created or heartbeated."""

    id: UUID
    last_heartbeat: datetime


class WorkerSummary(BaseModel):
    """A worker as listed, with the number of jobs it serves."""

    id: UUID
    last_heartbeat: datetime
    job_count: int
