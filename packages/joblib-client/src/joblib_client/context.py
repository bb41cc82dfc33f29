"""The task a job's code runs for: `current_task()` and its `TaskContext`."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from uuid import UUID

from joblib_client.exceptions import JobLibError, TaskCancelledError
from joblib_protocol import MAX_PROGRESS_MESSAGE, CancelReason, TaskProgress

ProgressSink = Callable[["TaskContext", TaskProgress], None]
"""Where a context's progress goes: the manager's background sender."""


class TaskContext:
    """The task `JobManager.run()` is running, as the job's code sees it.

    `cancelled` is set once the worker learns the task should stop: its submitter
    or an admin cancelled it, it ran past its deadline, or it is no longer this
    worker's. The job's code should look at it (or call `raise_if_cancelled()`)
    between steps of its work and stop soon after it is set; whatever it returns
    or raises then is not reported.
    """

    def __init__(
        self,
        id: UUID,
        job_name: str,
        *,
        room_id: str = "",
        attempt: int = 1,
        worker_id: UUID | None = None,
        sink: ProgressSink | None = None,
    ) -> None:
        self.id = id
        self.job_name = job_name
        self.room_id = room_id
        self.attempt = attempt
        self.worker_id = worker_id
        self.cancelled = threading.Event()
        self._reason: CancelReason | None = None
        self._sink = sink

    def __repr__(self) -> str:
        state = " cancelled" if self.cancelled.is_set() else ""
        return f"<TaskContext {self.id} {self.job_name} attempt {self.attempt}{state}>"

    @property
    def cancel_reason(self) -> CancelReason | None:
        """Why the task was told to stop, when the server said (None otherwise)."""
        return self._reason

    def cancel(self, reason: CancelReason | None = None) -> None:
        """Mark the task cancelled; the first known reason is kept."""
        if self._reason is None:
            self._reason = reason
        self.cancelled.set()

    def raise_if_cancelled(self) -> None:
        """Raise `TaskCancelledError` if the task was told to stop."""
        if self.cancelled.is_set():
            raise TaskCancelledError(self.id, self._reason)

    def progress(
        self, current: float, total: float | None = None, message: str | None = None
    ) -> None:
        """Tell the task's submitter how far the job has come; returns at once.

        `current` is the work done so far (>= 0), `total` the work in all when
        known (> 0), `message` what it is doing (cut to 1000 characters). A
        background thread sends the latest value; values superseded before it
        could send them are dropped. A value out of range raises ValueError.
        """
        if message is not None and len(message) > MAX_PROGRESS_MESSAGE:
            message = message[: MAX_PROGRESS_MESSAGE - 1] + "…"
        value = TaskProgress(current=current, total=total, message=message)
        if self._sink is not None:
            self._sink(self, value)


_current: ContextVar[TaskContext | None] = ContextVar(
    "joblib_current_task", default=None
)


def current_task() -> TaskContext:
    """Return the task `JobManager.run()` is running in this thread.

    Raises `JobLibError` outside a task. A thread the job's code starts does not
    inherit it: hand it the context, or run the thread in `contextvars.copy_context()`.
    """
    context = _current.get()
    if context is None:
        raise JobLibError(
            "current_task() was called outside a task: it only works in the code "
            "JobManager.run() runs (Extension.run() and what it calls)"
        )
    return context


@contextmanager
def running(context: TaskContext) -> Iterator[TaskContext]:
    """Make `context` the current task for the block."""
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)
