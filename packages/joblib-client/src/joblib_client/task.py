"""A task this worker claimed, with the extension built from its payload."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from joblib_client.extension import Extension
from joblib_protocol import TaskStatus


@dataclass
class ClaimedTask:
    """A claimed task: `status` follows what the manager reported to the server.

    `worker_id` is the worker that claimed it: reports are sent as that worker, so
    the server refuses them once the task has been given to another. `attempt` is
    1 for a first run, more for a task requeued after its worker went away.
    """

    id: UUID
    job_name: str
    room_id: str
    extension: Extension
    status: TaskStatus
    worker_id: UUID | None = None
    attempt: int = 1
