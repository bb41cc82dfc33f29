"""Running one claimed task: its code in a task context, then its one report."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from uuid import UUID

from joblib_client._reports import Reporter
from joblib_client._results import UnserializableResultError, to_result
from joblib_client._retry import is_refusal
from joblib_client._running import RunningTasks
from joblib_client.context import TaskContext, running
from joblib_client.exceptions import JobLibError, PayloadTooLargeError
from joblib_client.task import ClaimedTask
from joblib_protocol import CancelReason, TaskStatus, is_terminal

logger = logging.getLogger("joblib_client")


class Runner:
    """Runs tasks and reports them, as `JobManager.run()` describes.

    `let_go(task_id)` tells the manager it is done with a task (no longer listed
    in heartbeats); `worker_id()` is the manager's worker, for a task that does
    not say which worker claimed it.
    """

    def __init__(
        self,
        reporter: Reporter,
        tasks: RunningTasks,
        let_go: Callable[[UUID], None],
        worker_id: Callable[[], UUID | None],
    ) -> None:
        self.reporter = reporter
        self.tasks = tasks
        self.let_go = let_go
        self.worker_id = worker_id

    def report(
        self,
        task: ClaimedTask,
        status: TaskStatus,
        error: str | None = None,
        *,
        result: Any = None,
    ) -> None:
        """Report `status` (with `error` or `result`); let a finished task go."""
        worker_id = task.worker_id if task.worker_id is not None else self.worker_id()
        try:
            answer = self.reporter.update(task.id, worker_id, status, error, result)
        except JobLibError as exc:
            if is_refusal(exc):
                self.let_go(task.id)  # no longer this worker's
            raise
        task.status = answer.status
        if is_terminal(task.status):
            self.let_go(task.id)

    def settle(
        self,
        task_id: UUID,
        worker_id: UUID | None,
        status: TaskStatus,
        error: str | None = None,
    ) -> None:
        """End a task by its id (`fail_by_id`, `cancel`); stop its code if it runs.

        Its code's return is then not reported: the task's one report is this one.
        """
        try:
            self.reporter.update(task_id, worker_id, status, error)
        except JobLibError as exc:
            if is_refusal(exc):
                self.let_go(task_id)
            raise
        self.let_go(task_id)
        reason = CancelReason.CANCELLED if status == TaskStatus.CANCELLED else None
        self.tasks.cancel(task_id, reason)

    def run(self, task: ClaimedTask, work: Callable[[], Any]) -> TaskStatus:
        """Run `work` as the task's code and report it; answer its status.

        What `work` returns is the task's result; what it raises fails the task.
        """
        context = self.tasks.begin(task)
        try:
            return self._run(task, context, work)
        finally:
            self.tasks.end(context)

    def _run(
        self, task: ClaimedTask, context: TaskContext, work: Callable[[], Any]
    ) -> TaskStatus:
        if task.status == TaskStatus.CLAIMED:
            try:
                self.report(task, TaskStatus.RUNNING)
            except JobLibError as exc:
                return self._unreported(task, TaskStatus.RUNNING, exc)
        if context.cancelled.is_set():
            # Told to stop between its claim and now: its code does not run.
            return self._stopped(task, context)
        error: str | None = None
        value: Any = None
        try:
            with running(context):
                value = work()
        except Exception as exc:
            # The job's code may raise anything; its message is the task's error.
            if not context.cancelled.is_set():
                logger.exception("task %s (%s) failed", task.id, task.job_name)
            error = f"{type(exc).__name__}: {exc}"
        if context.cancelled.is_set():
            return self._stopped(task, context)
        result: Any = None
        if error is None:
            try:
                result = to_result(value)
            except UnserializableResultError as exc:
                logger.error("task %s (%s): %s", task.id, task.job_name, exc)
                error = str(exc)
        # Its last progress goes first: the server refuses progress once it ended.
        self.tasks.flush(context)
        final = TaskStatus.COMPLETED if error is None else TaskStatus.FAILED
        try:
            if error is None:
                try:
                    self.report(task, final, result=result)
                except PayloadTooLargeError as exc:
                    logger.error("task %s: its result was refused: %s", task.id, exc)
                    final = TaskStatus.FAILED
                    error = f"the result is too large for the server: {exc}"
            if error is not None:
                self.report(task, final, error)
        except JobLibError as exc:
            return self._unreported(task, final, exc)
        return task.status

    def _stopped(self, task: ClaimedTask, context: TaskContext) -> TaskStatus:
        """The code ended after its task was told to stop: report nothing."""
        self.let_go(task.id)
        try:
            task.status = self.reporter.rest.get_task(task.id)[0].status
        except JobLibError as exc:
            logger.warning("task %s could not be read: %s", task.id, exc)
            deadline = context.cancel_reason == CancelReason.DEADLINE_EXCEEDED
            task.status = TaskStatus.FAILED if deadline else TaskStatus.CANCELLED
        logger.info(
            "task %s (%s) ended after it was told to stop; the server has it %s",
            task.id,
            task.job_name,
            task.status.value,
        )
        return task.status

    def _unreported(
        self, task: ClaimedTask, status: TaskStatus, exc: JobLibError
    ) -> TaskStatus:
        """Done with a task whose report did not land: let it go."""
        try:
            return self.reporter.unreported(task, status, exc)
        finally:
            self.let_go(task.id)
