"""The taskiq executor: `@internal` tasks run by taskiq workers (the taskiq extra).

The server's `TaskiqExecutor` sends each dispatched task to a taskiq broker as
one message of the task `TASK_NAME`. A taskiq worker process whose broker module
calls `serve_internal_jobs(broker, [...], api_url=..., token=...)` runs the
`Extension` on a thread and reports over the server's REST API with an admin's
token, exactly like a worker, its claim's id (`claim_id`) in every report: once
the task was cancelled, failed past its deadline or swept, its reports are
refused (409). It learns that a task ended on the server from a long-poll on the
task (`GET /tasks/{id}` with `Prefer: wait`), and then sets the task context's
`cancelled`. Tasks sent to the broker outlive the server: a restart leaves them
to their workers (`durable`), and the sweeper fails those nobody reports.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import httpx
from anyio.abc import TaskStatus
from taskiq import AsyncBroker
from taskiq.kicker import AsyncKicker

from joblib_client._results import to_result
from joblib_client.context import TaskContext, running
from joblib_client.extension import Extension, check_extension, job_schema
from joblib_protocol import (
    API_PREFIX,
    CancelReason,
    ErrorCode,
    TaskProgress,
    TaskProgressRequest,
    TaskResponse,
    TaskUpdateRequest,
    is_terminal,
)
from joblib_protocol import (
    TaskStatus as Status,
)
from joblib_server.executors import Reports, internal_name
from joblib_server.outcome import Dispatch

logger = logging.getLogger("joblib_server.taskiq")

TASK_NAME = "joblib_server.internal_task"
"""The taskiq task every dispatched `@internal` task is sent as."""

WATCH_SECONDS = 30
"""How long one long-poll on a running task asks the server to wait."""


def check_broker(broker: object) -> AsyncBroker:
    """Return `broker` if it is a taskiq broker, else raise ValueError."""
    if not isinstance(broker, AsyncBroker):
        raise ValueError(f"{broker!r} is not a taskiq broker (AsyncBroker)")
    return broker


class TaskiqExecutor:
    """Sends the tasks of registered `Extension` classes to a taskiq broker.

    The taskiq workers that take them need the same classes: see
    `serve_internal_jobs`. Their tasks outlive the server (`durable`).
    """

    durable = True

    def __init__(
        self,
        broker: AsyncBroker,
        extensions: Iterable[type[Extension]] = (),
        *,
        name: str = "taskiq",
    ) -> None:
        self.broker = check_broker(broker)
        self.name = name
        self._schemas: dict[str, dict[str, Any]] = {}
        for cls in extensions:
            self.register(cls)

    def register(self, cls: type[Extension]) -> type[Extension]:
        """Run `cls` as `@internal:<category>:<ClassName>` on the taskiq workers."""
        check_extension(cls)
        self._schemas[internal_name(cls)] = job_schema(cls)
        return cls

    def jobs(self) -> dict[str, dict[str, Any]]:
        """The registered jobs: full name to JSON Schema."""
        return dict(self._schemas)

    async def serve(
        self,
        reports: Reports,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Start the broker (as a client), then wait; shut it down when cancelled."""
        await self.broker.startup()
        try:
            task_status.started()
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await self.broker.shutdown()

    async def dispatch(self, task: Dispatch) -> None:
        """Send the task to the broker; a taskiq worker reports it."""
        kicker: AsyncKicker[Any, Any] = AsyncKicker(TASK_NAME, self.broker, {})
        await kicker.kiq(_message(task))

    def stop(self, task_id: uuid.UUID, reason: CancelReason | None) -> None:
        """Nothing to do here: the worker's long-poll sees the task end."""


def _message(task: Dispatch) -> dict[str, Any]:
    return {
        "task_id": str(task.task_id),
        "job_name": task.job_name,
        "room_id": task.room_id,
        "payload": task.payload,
        "attempt": task.attempt,
        "claim_id": task.claim_id,
    }


def serve_internal_jobs(
    broker: AsyncBroker,
    extensions: Iterable[type[Extension]],
    *,
    api_url: str,
    token: str,
    run_kwargs: Mapping[str, Any] | None = None,
) -> None:
    """In a taskiq worker's broker module: run the `@internal` tasks of `extensions`.

    `api_url` is the server's base URL (`http://host:8000`), `token` an admin's;
    `run_kwargs` go to every `run()`.
    """
    runner = _Runner(
        {internal_name(check_extension(cls)): cls for cls in extensions},
        api_url.rstrip("/") + API_PREFIX,
        token,
        dict(run_kwargs or {}),
    )

    async def joblib_internal_task(message: dict[str, Any]) -> None:
        await runner.run(message)

    # A function of its own: taskiq renames what it registers.
    broker.register_task(joblib_internal_task, task_name=TASK_NAME)


class _Runner:
    """The worker side: one dispatched task, run and reported over REST."""

    def __init__(
        self,
        classes: dict[str, type[Extension]],
        api: str,
        token: str,
        run_kwargs: dict[str, Any],
    ) -> None:
        self.classes = classes
        self.api = api
        self.headers = {"Authorization": f"Bearer {token}"}
        self.run_kwargs = run_kwargs

    async def run(self, message: dict[str, Any]) -> None:
        """Run the task the message names and report it; never raises."""
        task = Dispatch(
            uuid.UUID(message["task_id"]),
            message["job_name"],
            message["room_id"],
            message["payload"],
            int(message["attempt"]),
            message["claim_id"],
        )
        async with httpx.AsyncClient(
            base_url=self.api, headers=self.headers, timeout=WATCH_SECONDS + 10
        ) as http:
            try:
                await _Run(self, task, http).run()
            except Exception:
                logger.exception("internal task %s failed to run", task.task_id)


class _Run:
    def __init__(self, runner: _Runner, task: Dispatch, http: httpx.AsyncClient):
        self.runner = runner
        self.task = task
        self.http = http
        self.context = TaskContext(
            task.task_id,
            task.job_name,
            room_id=task.room_id,
            attempt=task.attempt,
            sink=lambda _context, value: self._offer(value),
        )
        self._latest: TaskProgress | None = None
        self._latest_lock = threading.Lock()
        self._wake = anyio.Event()

    async def run(self) -> None:
        cls = self.runner.classes.get(self.task.job_name)
        if cls is None:
            unknown = f"this taskiq worker does not run {self.task.job_name!r}"
            await self._update(TaskUpdateRequest(status=Status.FAILED, error=unknown))
            return
        if not await self._update(TaskUpdateRequest(status=Status.RUNNING)):
            return  # ended before it started
        error: str | None = None
        value: Any = None
        async with anyio.create_task_group() as group:
            group.start_soon(self._watch)
            group.start_soon(self._send_progress)
            try:
                value = await anyio.to_thread.run_sync(
                    self._call, cls, abandon_on_cancel=True
                )
                value = to_result(value)
            except Exception as exc:
                if not self.context.cancelled.is_set():
                    logger.exception("internal task %s failed", self.task.task_id)
                error = f"{type(exc).__name__}: {exc}"
            group.cancel_scope.cancel()
        if self.context.cancelled.is_set():
            return  # ended on the server: its outcome is not reported
        await self._flush_progress()
        if error is None:
            request = TaskUpdateRequest(status=Status.COMPLETED, result=value)
        else:
            request = TaskUpdateRequest(status=Status.FAILED, error=error[:10_000])
        await self._update(request)

    def _call(self, cls: type[Extension]) -> Any:
        extension = cls.model_validate(self.task.payload)
        with running(self.context):
            return extension.run(**self.runner.run_kwargs)

    async def _update(self, request: TaskUpdateRequest) -> bool:
        body = request.model_dump(mode="json", exclude_unset=True)
        answer = await self.http.patch(
            f"/tasks/{self.task.task_id}",
            json={**body, "claim_id": self.task.claim_id},
        )
        if answer.status_code in (404, 409):
            logger.info("report on %s refused: %s", self.task.task_id, answer.text)
            return False
        answer.raise_for_status()
        return True

    async def _watch(self) -> None:
        """Long-poll the task; once it ended on the server, stop the code."""
        while True:
            answer = await self.http.get(
                f"/tasks/{self.task.task_id}",
                headers={"Prefer": f"wait={WATCH_SECONDS}"},
            )
            if answer.status_code == 404:
                self.context.cancel()
                return
            answer.raise_for_status()
            task = TaskResponse.model_validate(answer.json())
            if is_terminal(task.status):
                self.context.cancel(_reason(task))
                return

    def _offer(self, value: TaskProgress) -> None:
        """From the job's thread: keep the latest value and wake the sender."""
        with self._latest_lock:
            self._latest = value
        # RuntimeError: not a thread of ours, or the task is over; what is kept
        # goes out before the task's report.
        with contextlib.suppress(RuntimeError):
            anyio.from_thread.run_sync(self._wake.set)

    async def _send_progress(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            # Not cut off when the code returns: its value would be lost.
            with anyio.CancelScope(shield=True):
                await self._flush_progress()

    async def _flush_progress(self) -> None:
        with self._latest_lock:
            value, self._latest = self._latest, None
        if value is None:
            return
        body = TaskProgressRequest(**value.model_dump(), claim_id=self.task.claim_id)
        answer = await self.http.put(
            f"/tasks/{self.task.task_id}/progress",
            json=body.model_dump(mode="json", exclude_none=True),
        )
        if answer.status_code >= 400:
            logger.debug("progress of %s refused: %s", self.task.task_id, answer.text)


def _reason(task: TaskResponse) -> CancelReason | None:
    if task.status == Status.CANCELLED:
        return CancelReason.CANCELLED
    if task.error_code == ErrorCode.DEADLINE_EXCEEDED:
        return CancelReason.DEADLINE_EXCEEDED
    return None
