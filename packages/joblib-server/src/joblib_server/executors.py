"""Executors: what runs the tasks of `@internal` jobs, and how they report.

A submit to an `@internal` job that this server's executor runs claims the task
for the executor in the same transaction (the answer says `claimed`) and, once
committed, hands it over as a `Dispatch`. The executor reports through `Reports`,
which runs the operations a worker's reports run (`update_task`,
`report_progress`) through `JobLib.execute`, fenced by the dispatch's claim: once
the task was cancelled, failed past its deadline or swept, a late report changes
nothing. Whatever ends a task on the server reaches the executor as `stop()`.

`InProcessExecutor` runs `Extension` classes on worker threads of the server;
`joblib_server.taskiq_executor.TaskiqExecutor` hands them to taskiq workers.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup, TaskStatus

from joblib_client._results import to_result
from joblib_client.context import TaskContext, running
from joblib_client.extension import Extension, check_extension, job_schema
from joblib_protocol import (
    INTERNAL_ROOM,
    CancelReason,
    TaskProgress,
    TaskProgressRequest,
    TaskUpdateRequest,
    format_job_name,
)
from joblib_protocol import (
    TaskStatus as Status,
)
from joblib_server.auth import Identity
from joblib_server.errors import ProblemError
from joblib_server.outcome import Dispatch
from joblib_server.progress import report_progress
from joblib_server.tasks import update_task

if TYPE_CHECKING:
    from joblib_server.runtime import JobLib
    from joblib_server.settings import StandaloneSettings

logger = logging.getLogger("joblib_server.executors")

INTERNAL_IDENTITY = Identity(id=INTERNAL_ROOM, is_admin=True)
"""Who an executor's reports come from."""


def load_object(name: str) -> Any:
    """The object a `module:attribute` name points at; ValueError saying why not."""
    module_name, colon, attribute = name.partition(":")
    if not colon or not module_name or not attribute:
        raise ValueError(f"{name!r} is not of the form module:Class")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"{name!r}: cannot import {module_name!r} ({exc})") from None
    found: Any = module
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ValueError(
                f"{name!r}: {module_name!r} has no {attribute!r}"
            ) from None
    return found


def load_extension(name: str) -> type[Extension]:
    """The `Extension` class a `module:Class` name points at; ValueError if none."""
    found = load_object(name)
    try:
        return check_extension(found)
    except TypeError as exc:
        raise ValueError(f"{name!r}: {exc}") from None


def internal_name(cls: type[Extension]) -> str:
    """The full name `@internal:<category>:<ClassName>` of an internal job."""
    return format_job_name(INTERNAL_ROOM, str(cls.category), cls.__name__)


@runtime_checkable
class Executor(Protocol):
    """Runs the tasks of the `@internal` jobs it names; a host hands one to `JobLib`.

    `name` starts every claim it is given (1-20 letters, digits, `_`, `-`);
    `durable` says whether its tasks outlive the server process. A server that
    starts fails the claimed and running tasks a non-durable executor of the
    same name left behind (`internal_interrupted`); a durable one's are left to
    report, or to the sweeper.
    """

    name: str
    durable: bool

    def jobs(self) -> Mapping[str, dict[str, Any]]:
        """The jobs it runs: full name to JSON Schema."""
        ...

    async def serve(
        self, reports: Reports, *, task_status: TaskStatus[None] = ...
    ) -> None:
        """Get ready, call `task_status.started()`, then run until cancelled."""
        ...

    async def dispatch(self, task: Dispatch) -> None:
        """Take a claimed task; report it through `reports`. Must not wait for it."""
        ...

    def stop(self, task_id: uuid.UUID, reason: CancelReason | None) -> None:
        """The task ended on the server: stop its code if it runs (or ignore)."""
        ...


class Reports:
    """An executor's reports on its dispatched tasks, through `JobLib.execute`.

    Each answers whether the server took it: False when the task is no longer
    the dispatch's to report (cancelled, past its deadline, swept, gone), after
    which the executor should drop it.
    """

    def __init__(self, joblib: JobLib) -> None:
        self._joblib = joblib

    async def running(self, task: Dispatch) -> bool:
        """The task's code starts now."""
        request = TaskUpdateRequest(status=Status.RUNNING, claim_id=task.claim_id)
        return await self._update(task, request)

    async def completed(self, task: Dispatch, result: Any) -> bool:
        """The task's code returned `result` (a JSON value)."""
        request = TaskUpdateRequest(
            status=Status.COMPLETED, result=result, claim_id=task.claim_id
        )
        return await self._update(task, request)

    async def failed(self, task: Dispatch, error: str) -> bool:
        """The task's code raised; `error` says what (`error_code` `job_failed`)."""
        request = TaskUpdateRequest(
            status=Status.FAILED, error=error[:10_000], claim_id=task.claim_id
        )
        return await self._update(task, request)

    async def progress(self, task: Dispatch, progress: TaskProgress) -> bool:
        """How far the task's code has come."""
        request = TaskProgressRequest(**progress.model_dump(), claim_id=task.claim_id)
        try:
            await self._joblib.execute(
                report_progress,
                INTERNAL_IDENTITY,
                task.task_id,
                request,
            )
        except ProblemError as exc:
            return _refused(task, exc)
        return True

    async def _update(self, task: Dispatch, request: TaskUpdateRequest) -> bool:
        try:
            await self._joblib.execute(
                update_task,
                INTERNAL_IDENTITY,
                task.task_id,
                request,
            )
        except ProblemError as exc:
            return _refused(task, exc)
        return True


def _refused(task: Dispatch, exc: ProblemError) -> bool:
    logger.debug("report on internal task %s refused: %s", task.task_id, exc)
    return False


class InProcessExecutor:
    """Runs registered `Extension` classes on worker threads of the server.

    At most `concurrency` tasks run at once; the others stay `claimed` until a
    thread is free. The job's code sees its task through
    `joblib_client.current_task()`, as under a worker: `cancelled` is set when
    the task is cancelled, fails past its deadline, or the server stops, and
    `progress()` reaches the task's room. What the code returns after that is
    not reported. Its tasks die with the server process (`durable` is False).
    """

    durable = False

    def __init__(
        self,
        extensions: Iterable[type[Extension]] = (),
        *,
        concurrency: int = 4,
        name: str = "inprocess",
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        self.name = name
        self.concurrency = concurrency
        self._classes: dict[str, type[Extension]] = {}
        self._run_kwargs: dict[str, dict[str, Any]] = {}
        for cls in extensions:
            self.register(cls)
        self._reports: Reports | None = None
        self._group: TaskGroup | None = None
        self._slots = anyio.CapacityLimiter(concurrency)
        self._threads = anyio.CapacityLimiter(concurrency)
        self._running: dict[uuid.UUID, TaskContext] = {}
        self._progress: dict[uuid.UUID, TaskProgress] = {}
        """The latest progress of each task not sent yet, set from job threads."""
        self._progress_lock = threading.Lock()
        self._senders: dict[uuid.UUID, anyio.Lock] = {}

    def register(self, cls: type[Extension], **run_kwargs: Any) -> type[Extension]:
        """Run `cls` as `@internal:<category>:<Class>`, calling `run(**run_kwargs)`."""
        check_extension(cls)
        full_name = internal_name(cls)
        self._classes[full_name] = cls
        self._run_kwargs[full_name] = dict(run_kwargs)
        return cls

    def jobs(self) -> dict[str, dict[str, Any]]:
        """The registered jobs: full name to JSON Schema."""
        return {name: job_schema(cls) for name, cls in self._classes.items()}

    @property
    def running(self) -> int:
        """How many of its tasks are taken (running, or waiting for a thread)."""
        return len(self._running)

    async def serve(
        self,
        reports: Reports,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run dispatched tasks until cancelled, which tells their code to stop."""
        self._reports = reports
        try:
            async with anyio.create_task_group() as group:
                self._group = group
                task_status.started()
                await anyio.sleep_forever()
        finally:
            self._group = None

    async def dispatch(self, task: Dispatch) -> None:
        """Start the task in the background; it waits for a free thread."""
        if self._group is None:
            raise RuntimeError("InProcessExecutor.dispatch() before serve()")
        context = TaskContext(
            task.task_id,
            task.job_name,
            room_id=task.room_id,
            attempt=task.attempt,
            sink=lambda _context, value: self._offer_progress(task, value),
        )
        self._running[task.task_id] = context
        self._group.start_soon(self._run, task, context)

    def stop(self, task_id: uuid.UUID, reason: CancelReason | None) -> None:
        """Set the task's `cancelled`, if it is one of ours."""
        context = self._running.get(task_id)
        if context is not None:
            context.cancel(reason)

    async def _run(self, task: Dispatch, context: TaskContext) -> None:
        reports = self._reports
        assert reports is not None
        try:
            async with self._slots:
                if context.cancelled.is_set() or not await reports.running(task):
                    return
                error, value = None, None
                try:
                    value = await anyio.to_thread.run_sync(
                        self._call,
                        task,
                        context,
                        limiter=self._threads,
                        abandon_on_cancel=True,
                    )
                    value = to_result(value)
                except Exception as exc:
                    # The job's code may raise anything; its text is the error.
                    if not context.cancelled.is_set():
                        logger.exception("internal task %s failed", task.task_id)
                    error = f"{type(exc).__name__}: {exc}"
                if context.cancelled.is_set():
                    return  # ended on the server: its outcome is not reported
                # Its last progress lands before the task ends, not after.
                await self._send_progress(task)
                if error is None:
                    await reports.completed(task, value)
                else:
                    await reports.failed(task, error)
        except Exception:
            logger.exception("reporting internal task %s failed", task.task_id)
        finally:
            # Whatever still runs of its code (the server is stopping, say) stops.
            context.cancel()
            self._running.pop(task.task_id, None)
            self._senders.pop(task.task_id, None)

    def _call(self, task: Dispatch, context: TaskContext) -> Any:
        """In a worker thread: the payload as the extension, and its `run()`."""
        cls = self._classes[task.job_name]
        extension = cls.model_validate(task.payload)
        with running(context):
            return extension.run(**self._run_kwargs[task.job_name])

    def _offer_progress(self, task: Dispatch, value: TaskProgress) -> None:
        """From the job's thread: keep the latest value, and send it soon."""
        with self._progress_lock:
            idle = task.task_id not in self._progress
            self._progress[task.task_id] = value
        if idle:
            # RuntimeError: the server is stopping, and the task with it.
            with contextlib.suppress(RuntimeError):
                anyio.from_thread.run_sync(self._start_sender, task)

    def _start_sender(self, task: Dispatch) -> None:
        if self._group is not None:
            self._group.start_soon(self._send_progress, task)

    async def _send_progress(self, task: Dispatch) -> None:
        """Send the task's latest progress until none is waiting; one at a time."""
        reports = self._reports
        assert reports is not None
        lock = self._senders.setdefault(task.task_id, anyio.Lock())
        async with lock:
            while True:
                with self._progress_lock:
                    value = self._progress.pop(task.task_id, None)
                if value is None:
                    return
                try:
                    await reports.progress(task, value)
                except Exception:
                    logger.exception("progress of task %s failed", task.task_id)


def standalone_executor(settings: StandaloneSettings) -> Executor | None:
    """The executor the standalone settings name; None without internal jobs.

    Raises ValueError with one line naming the setting that is wrong.
    """
    if not settings.internal_extensions:
        return None
    try:
        extensions = [load_extension(name) for name in settings.internal_extensions]
    except ValueError as exc:
        raise ValueError(f"JOBLIB_INTERNAL_EXTENSIONS: {exc}") from None
    if settings.internal_executor == "inprocess":
        return InProcessExecutor(extensions, concurrency=settings.internal_concurrency)
    if settings.taskiq_broker is None:
        raise ValueError(
            "JOBLIB_TASKIQ_BROKER is not set: the taskiq executor needs the broker, "
            "as a module:attribute name"
        )
    try:
        from joblib_server.taskiq_executor import TaskiqExecutor, check_broker
    except ImportError as exc:
        raise ValueError(
            f"JOBLIB_INTERNAL_EXECUTOR=taskiq needs the taskiq extra "
            f"(pip install 'joblib-server[taskiq]'): {exc}"
        ) from None
    try:
        broker = check_broker(load_object(settings.taskiq_broker))
    except ValueError as exc:
        raise ValueError(f"JOBLIB_TASKIQ_BROKER: {exc}") from None
    return TaskiqExecutor(broker, extensions)
