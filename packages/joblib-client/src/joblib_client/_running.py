"""The tasks `run()` is running: their contexts, progress, and stop notices."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any
from uuid import UUID

from pydantic import ValidationError

from joblib_client._http import Rest
from joblib_client._progress import ProgressSender
from joblib_client.context import TaskContext
from joblib_client.exceptions import JobLibError
from joblib_client.task import ClaimedTask
from joblib_protocol import (
    CancelReason,
    TaskCancelled,
    TaskProgress,
    TaskProgressRequest,
)

logger = logging.getLogger("joblib_client")

FLUSH_SECONDS = 2.0
"""Longest a finished task's report waits for its last progress to go out."""

REMEMBERED_NOTICES = 1000
"""Stop notices kept for tasks not running yet (claimed, `run()` not called)."""


class RunningTasks:
    """The contexts of the tasks a manager runs, by task id.

    A task is told to stop (its context's `cancelled` set) by the socket's
    `task_cancelled`, by a heartbeat answer listing it, or by a progress report
    the server refuses because the task is not running here any more. A socket
    notice for a task not running yet (claimed, between `claim()` and `run()`)
    is kept for when it starts. Progress goes out through one `ProgressSender`, made
    when first needed.
    """

    def __init__(self, rest: Rest) -> None:
        self._rest = rest
        self._lock = threading.Lock()
        self._contexts: dict[UUID, TaskContext] = {}
        self._early: OrderedDict[UUID, CancelReason | None] = OrderedDict()
        self._sender: ProgressSender | None = None
        self._stopped = False

    def begin(self, task: ClaimedTask) -> TaskContext:
        """Make and track the context of a task about to run."""
        context = TaskContext(
            task.id,
            task.job_name,
            room_id=task.room_id,
            attempt=task.attempt,
            worker_id=task.worker_id,
            sink=self._progress,
        )
        with self._lock:
            self._contexts[task.id] = context
            early = task.id in self._early
            reason = self._early.pop(task.id, None)
        if early:
            context.cancel(reason)
        return context

    def end(self, context: TaskContext) -> None:
        """Stop tracking a task the manager is done with; drop its unsent progress."""
        with self._lock:
            if self._contexts.get(context.id) is context:
                del self._contexts[context.id]
            sender = self._sender
        if sender is not None:
            sender.discard(context.id)

    def flush(self, context: TaskContext) -> None:
        """Give the task's last progress a moment to go out before its final report."""
        with self._lock:
            sender = self._sender
        if sender is not None:
            sender.flush(context.id, FLUSH_SECONDS)

    def cancel(self, task_id: UUID, reason: CancelReason | None = None) -> bool:
        """Tell a running task to stop; False when this manager does not run it.

        A notice with a reason (the task was cancelled or failed: it never runs
        again) is kept for a while in case the task is about to run. One without
        (a heartbeat answer) is not: the task may come back to this worker.
        """
        with self._lock:
            context = self._contexts.get(task_id)
            if context is None and reason is not None:
                self._early[task_id] = reason
                while len(self._early) > REMEMBERED_NOTICES:
                    self._early.popitem(last=False)
        if context is None:
            return False
        if not context.cancelled.is_set():
            logger.info(
                "task %s (%s) is told to stop: %s",
                task_id,
                context.job_name,
                reason.value if reason is not None else "no longer running here",
            )
        context.cancel(reason)
        return True

    def cancel_listed(self, task_ids: Iterable[UUID]) -> None:
        """Tell the tasks a heartbeat answer listed in `cancelled` to stop."""
        for task_id in task_ids:
            self.cancel(task_id)

    def on_task_cancelled(self, data: Any = None) -> None:
        """The socket's `task_cancelled`: stop the task if it runs here."""
        try:
            event = TaskCancelled.model_validate(data)
            task_id = UUID(event.task_id)
        except (ValidationError, ValueError):
            logger.debug("ignoring a malformed task_cancelled: %r", data)
            return
        self.cancel(task_id, event.reason)

    def stop(self, *, wait: bool = True) -> None:
        """Stop the progress sender for good (the manager disconnects)."""
        with self._lock:
            self._stopped = True
            sender = self._sender
        if sender is not None:
            sender.stop(wait=wait)

    def _progress(self, context: TaskContext, progress: TaskProgress) -> None:
        with self._lock:
            if self._stopped or self._contexts.get(context.id) is not context:
                return  # the task ended, or the manager: nobody wants it now
            if context.cancelled.is_set():
                return  # the server would refuse it
            if self._sender is None:
                self._sender = ProgressSender(self._send, self._refused)
            sender = self._sender
        # Checked once already, as a `TaskProgress`.
        request = TaskProgressRequest.model_construct(
            current=progress.current,
            total=progress.total,
            message=progress.message,
            worker_id=context.worker_id,
        )
        sender.put(context.id, request)

    def _send(self, task_id: UUID, progress: TaskProgressRequest) -> None:
        self._rest.put_progress(task_id, progress)

    def _refused(self, task_id: UUID, exc: JobLibError) -> None:
        logger.debug("progress of task %s refused: %s", task_id, exc)
        self.cancel(task_id)
