"""Status reports of tasks that get through an outage, and those that cannot land."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any
from uuid import UUID

from joblib_client._http import Rest
from joblib_client._retry import Backoff, is_refusal, is_transient
from joblib_client.exceptions import (
    InvalidTaskTransitionError,
    JobLibError,
    NotFoundError,
)
from joblib_client.task import ClaimedTask
from joblib_protocol import TaskResponse, TaskStatus

logger = logging.getLogger("joblib_client")

RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 5.0
"""Retries wait 0.5, 1, 2, 4, 5, 5 ... s (each 50-100 % of it): about 15 tries in
60 s, and a report lands within ~5 s of the server's return."""


class Reporter:
    """Sends `PATCH /tasks/{id}` as a worker, trying again through an outage.

    No answer or a 5xx is tried again with backoff for `retry_seconds`; setting
    `stopped` (the manager's disconnect) cuts that short.
    """

    def __init__(
        self, rest: Rest, retry_seconds: float, stopped: threading.Event
    ) -> None:
        self.rest = rest
        self.retry_seconds = max(retry_seconds, 0.0)
        self.stopped = stopped

    def update(
        self,
        task_id: UUID,
        worker_id: UUID | None,
        status: TaskStatus,
        error: str | None = None,
        result: Any = None,
    ) -> TaskResponse:
        """Report `status` as `worker_id`; raise the last failure if it never lands.

        `result`, a JSON-ready value, goes with `completed`.
        """
        deadline = time.monotonic() + self.retry_seconds
        backoff = Backoff(RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS, jitter=True)
        while True:
            try:
                return self.rest.update_task(
                    task_id, status, error, worker_id=worker_id, result=result
                )
            except InvalidTaskTransitionError:
                # An earlier try may have landed with its answer lost on the way.
                landed = self._landed(task_id, worker_id, status, backoff.failures)
                if landed is None:
                    raise
                return landed
            except JobLibError as exc:
                if not is_transient(exc):
                    raise
                delay = backoff.next()
                if time.monotonic() + delay > deadline or self.stopped.is_set():
                    raise
                logger.warning(
                    "reporting task %s %s failed (try %d), again in %.1f s: %s",
                    task_id,
                    status.value,
                    backoff.failures,
                    delay,
                    exc,
                )
                if self.stopped.wait(delay):
                    raise

    def _landed(
        self, task_id: UUID, worker_id: UUID | None, status: TaskStatus, tries: int
    ) -> TaskResponse | None:
        """The task, if an earlier of `tries` failed tries already reported `status`."""
        if tries == 0:
            return None
        try:
            task = self.rest.get_task(task_id)[0]
        except JobLibError:
            return None
        if task.status != status or task.worker_id != worker_id:
            return None
        logger.info("task %s: an earlier report %s had landed", task_id, status.value)
        return task

    def unreported(
        self, task: ClaimedTask, status: TaskStatus, exc: JobLibError
    ) -> TaskStatus:
        """Log a report of `status` that did not land; return the task's status.

        Raises `exc` unless it is an outage that outlasted the retries, or a
        refusal because the task is no longer this worker's (403, 404, 409).
        """
        if is_transient(exc):
            logger.error(
                "gave up reporting task %s %s (tried for up to %g s): %s",
                task.id,
                status.value,
                self.retry_seconds,
                exc,
            )
            return task.status
        if not is_refusal(exc):
            raise exc
        logger.warning(
            "task %s is no longer this worker's to report %s (%s): %s",
            task.id,
            status.value,
            exc.type or exc.status,
            exc.detail,
        )
        if not isinstance(exc, NotFoundError):
            try:
                task.status = self.rest.get_task(task.id)[0].status
            except JobLibError as again:
                logger.warning("task %s could not be read: %s", task.id, again)
        return task.status
