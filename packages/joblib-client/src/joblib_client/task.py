"""A task this worker claimed, with the extension built from its payload."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from uuid import UUID

from joblib_client.extension import Extension
from joblib_protocol import TaskStatus

ExtensionT = TypeVar("ExtensionT", bound=Extension)


@dataclass
class ClaimedTask(Generic[ExtensionT]):
    """A claimed task: `status` follows what the manager reported to the server.

    `worker_id` is the worker that claimed it: reports are sent as that worker, so
    the server refuses them once the task has been given to another. `attempt` is
    1 for a first run, more for a task requeued after its worker went away.
    `run_kwargs` are the keyword arguments its job was registered with
    (`register(cls, run_kwargs=...)`), which `JobManager.run()` passes to
    `Extension.run()`.
    """

    id: UUID
    job_name: str
    room_id: str
    extension: ExtensionT
    status: TaskStatus
    worker_id: UUID | None = None
    attempt: int = 1
    run_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def task_id(self) -> str:
        """The task's id as a string (zndraw-joblib's name for it)."""
        return str(self.id)
