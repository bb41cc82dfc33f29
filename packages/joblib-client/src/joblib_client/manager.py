"""`JobManager`: a worker's jobs, its tasks, its heartbeat, and a clean goodbye."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from functools import partial
from types import TracebackType
from typing import Any, Protocol, TypeVar, overload
from uuid import UUID

from pydantic import TypeAdapter, ValidationError

from joblib_client._claims import POLLING_SECONDS, SERVE_PARK_SECONDS, Claiming
from joblib_client._heartbeat import Ticker
from joblib_client._http import Api, ApiClient, Rest
from joblib_client._providers import Providers
from joblib_client._providing import ProviderServing
from joblib_client._reports import Reporter
from joblib_client._results import task_outcome, wait_for_task
from joblib_client._runner import Runner
from joblib_client._running import RunningTasks
from joblib_client._serve import DRAIN_SECONDS, Serving, serve_until_ended
from joblib_client._socket import EventSource, SocketClient, Tsio
from joblib_client._worker import WorkerIdentity, _Registration
from joblib_client.exceptions import JobLibError, TransportError
from joblib_client.extension import (
    Extension,
    check_extension,
    job_full_name,
    job_schema,
)
from joblib_client.task import ClaimedTask
from joblib_protocol import (
    GLOBAL_ROOM,
    DisconnectPolicyRequest,
    JobRegisterRequest,
    JoinJobRoom,
    LeaveJobRoom,
    LeaveProviderRoom,
    ProviderRequest,
    TaskAvailable,
    TaskBatchRequest,
    TaskCancelled,
    TaskResponse,
    TaskStatus,
    TaskSubmitRequest,
    TimeoutSeconds,
)

logger = logging.getLogger("joblib_client")

ExtensionT = TypeVar("ExtensionT", bound=Extension)

HEARTBEAT_SECONDS = 20.0
"""Default heartbeat interval: three beats fit in the server's default
`worker_timeout_seconds` (60), so one late beat does not get a live worker swept."""

MAX_UNREACHABLE_SECONDS = 120.0
"""Default time the server may stay unreachable before `serve()` gives up."""

STARTUP_TRIES = 5
"""Default tries of a registration while the server cannot be reached (about 15 s)."""

REPORT_RETRY_SECONDS = 60.0
"""Default time a task's status report is tried again while the server cannot take
it (no answer, or a 5xx): a server restart or a proxy's hiccup fits in it."""


class _Closeable(Protocol):
    def close(self) -> None: ...


Execute = Callable[[ClaimedTask[Any]], object]
"""What `JobManager(execute=...)` runs for each task it claims on its own."""

_LIMIT: TypeAdapter[float | None] = TypeAdapter(TimeoutSeconds | None)


PolicyLike = DisconnectPolicyRequest | Mapping[str, Any]
"""A disconnect policy: the protocol model, or its fields as a mapping."""


class JobManager(Claiming, ProviderServing, WorkerIdentity):
    """A worker: registers extensions as jobs, claims and runs their tasks.

    `api` reaches the REST API (any object with `http`, `base_url` and
    `get_headers()`); `tsio`, when given, sends the socket events (any object with
    `emit(event)`). If `tsio` can also deliver events (`on(name, handler)`), a
    submitted task wakes `listen()` at once, and after every reconnection the
    manager comes back as the same worker (or a new one if the server forgot it).
    Once it has a worker, a background thread heartbeats every
    `heartbeat_interval` seconds (None: never); each heartbeat lists the tasks the
    manager holds (claimed, not yet finished), so the server releases any other
    task it gave this worker, such as one whose claim's answer was lost. A status
    report the server cannot take is tried again for up to `report_retry_seconds`.
    Use it as a context manager, or call `disconnect()`; a disconnected manager
    does not become a worker again.

    Threads may share a manager. Its lock guards its state only, never a request
    or an emit: a thread waiting on the server blocks no other thread, except one
    that needs the worker another thread is creating.

    With `execute`, the manager serves on its own: from the first registration
    on, a background thread claims tasks (`listen()` every `polling_interval`
    seconds, woken by the socket) and runs `execute(task)` for each as `run()`
    runs a job's code (what it returns is the result, what it raises fails the
    task); `serve()` blocks until SIGINT, SIGTERM or `close()`. Either way,
    once the server has been unreachable for more than
    `max_unreachable_seconds` (None: never), the claim loop stops and `serve()`
    returns. A registration the server cannot take (no answer, 5xx) is tried
    `max_startup_retries` times in all, with a backoff from 1 s doubling.
    """

    def __init__(
        self,
        api: Api,
        tsio: Tsio | None = None,
        *,
        execute: Execute | None = None,
        heartbeat_interval: float | None = HEARTBEAT_SECONDS,
        polling_interval: float = POLLING_SECONDS,
        max_unreachable_seconds: float | None = MAX_UNREACHABLE_SECONDS,
        max_startup_retries: int = STARTUP_TRIES,
        report_retry_seconds: float = REPORT_RETRY_SECONDS,
    ) -> None:
        self._api = api
        self._rest = Rest(api)
        self._tsio = tsio
        self._lock = threading.Lock()
        # Notified when a worker creation ends and on disconnect().
        self._changed = threading.Condition(self._lock)
        self._jobs: dict[str, _Registration] = {}
        # The tasks claimed and not yet done with, and the worker that claimed each:
        # every heartbeat of that worker lists them.
        self._held: dict[UUID, UUID] = {}
        self._worker_id: UUID | None = None
        self._last_heartbeat: datetime | None = None
        # One thread at a time creates the worker (first registration, recovery).
        self._creating = False
        self._disconnected = False
        # Set by disconnect(): cuts short the pauses of a report being retried.
        self._stopped = threading.Event()
        self._reporter = Reporter(self._rest, report_retry_seconds, self._stopped)
        # A reconnection whose rejoin failed for want of the server: done again
        # by the next request that gets through (a heartbeat, a claim).
        self._resume_pending = False
        # While the socket is up and the server said it records this worker's
        # heartbeat itself (the join's `heartbeat_seconds`), idle beats stay
        # local; None: send them. Reset whenever the socket drops.
        self._socket_beats: float | None = None
        # REST beats still due after a claim that got no answer: its task may
        # be ours without our knowing, and only a listed heartbeat lets it go.
        self._beats_owed = 0
        self._heartbeat = (
            Ticker(heartbeat_interval, self._beat, "joblib heartbeat")
            if heartbeat_interval
            else None
        )
        self._wakeup = threading.Event()
        # Whether the server holds claims with `Prefer: wait` (None: not yet known).
        self._claims_park: bool | None = None
        self._listeners: set[threading.Event] = set()
        self._owned: list[_Closeable] = []
        # The contexts of the tasks run() runs, told to stop by the socket, the
        # heartbeat answers and refused progress reports.
        self._running = RunningTasks(self._rest)
        self._runner = Runner(
            self._reporter, self._running, self._let_go, lambda: self._worker_id
        )
        # The providers this worker serves, and the threads answering their reads.
        self._providers = Providers(self._rest)
        self._execute = execute
        self._polling_interval = polling_interval
        self._startup_tries = max(max_startup_retries, 1)
        self._serving = Serving(
            self._serve_tasks if execute is not None else None, max_unreachable_seconds
        )
        if isinstance(tsio, EventSource):
            tsio.on("connect", self._on_connect)
            tsio.on("disconnect", self._on_socket_down)
            tsio.on(TaskAvailable.event_name(), self._on_task_available)
            tsio.on(TaskCancelled.event_name(), self._running.on_task_cancelled)
            tsio.on(ProviderRequest.event_name(), self._providers.on_request)

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        token: str | None = None,
        socket: bool = True,
        execute: Execute | None = None,
        heartbeat_interval: float | None = HEARTBEAT_SECONDS,
        polling_interval: float = POLLING_SECONDS,
        max_unreachable_seconds: float | None = MAX_UNREACHABLE_SECONDS,
        max_startup_retries: int = STARTUP_TRIES,
        report_retry_seconds: float = REPORT_RETRY_SECONDS,
        timeout: float = 10.0,
    ) -> JobManager:
        """Build a manager with its own HTTP client and socket, closed on exit."""
        api = ApiClient(url, token, timeout=timeout)
        sock = SocketClient(url, token, connect_timeout=timeout) if socket else None
        manager = cls(
            api,
            sock,
            execute=execute,
            heartbeat_interval=heartbeat_interval,
            polling_interval=polling_interval,
            max_unreachable_seconds=max_unreachable_seconds,
            max_startup_retries=max_startup_retries,
            report_retry_seconds=report_retry_seconds,
        )
        manager._owned = [c for c in (sock, api) if c is not None]
        if sock is not None:
            try:
                sock.connect()
            except BaseException:
                manager.close()
                raise
        return manager

    # what the manager is made of

    @property
    def api(self) -> Api:
        """The REST API object requests go through."""
        return self._api

    @property
    def tsio(self) -> Tsio | None:
        """The socket events go through, if any."""
        return self._tsio

    @property
    def worker_id(self) -> UUID | None:
        """The server's id of this worker; None until the first registration."""
        return self._worker_id

    @property
    def heartbeat_interval(self) -> float | None:
        """Seconds between heartbeats once there is a worker; None: no heartbeat."""
        return self._heartbeat.interval if self._heartbeat is not None else None

    @property
    def report_retry_seconds(self) -> float:
        """How long a status report is tried again while the server cannot take it."""
        return self._reporter.retry_seconds

    @property
    def last_heartbeat(self) -> datetime | None:
        """When the server last recorded a heartbeat of this worker, as it said."""
        return self._last_heartbeat

    # a mapping of full job names to extension classes

    def __len__(self) -> int:
        return len(self._jobs)

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._jobs))

    def __contains__(self, name: object) -> bool:
        return name in self._jobs

    def __getitem__(self, name: str) -> type[Extension]:
        return self._jobs[name].cls

    # registration

    @overload
    def register(
        self,
        cls: type[ExtensionT],
        *,
        room: str | None = None,
        on_disconnect: PolicyLike | None = None,
        timeout_seconds: float | None = None,
        pending_timeout_seconds: float | None = None,
        run_kwargs: Mapping[str, Any] | None = None,
    ) -> type[ExtensionT]: ...

    @overload
    def register(
        self,
        cls: None = None,
        *,
        room: str | None = None,
        on_disconnect: PolicyLike | None = None,
        timeout_seconds: float | None = None,
        pending_timeout_seconds: float | None = None,
        run_kwargs: Mapping[str, Any] | None = None,
    ) -> Callable[[type[ExtensionT]], type[ExtensionT]]: ...

    def register(
        self,
        cls: type[ExtensionT] | None = None,
        *,
        room: str | None = None,
        on_disconnect: PolicyLike | None = None,
        timeout_seconds: float | None = None,
        pending_timeout_seconds: float | None = None,
        run_kwargs: Mapping[str, Any] | None = None,
    ) -> type[ExtensionT] | Callable[[type[ExtensionT]], type[ExtensionT]]:
        """Register an extension as a job in `room` (default `@global`).

        Works as `register(Cls)`, `@register` and `@register(room="...")`. The
        first registration creates the worker; later ones reuse it.
        `on_disconnect` (a `DisconnectPolicyRequest` or a mapping of its fields:
        `action` "fail" or "requeue", `max_attempts`, `grace_seconds`) says what
        becomes of the job's tasks when their worker goes away; fields left out
        take the server's defaults. `timeout_seconds` is the longest a task may
        run once started (past it, the server fails it `deadline_exceeded` and
        tells the worker to stop it), `pending_timeout_seconds` the longest it may
        wait to be claimed (past it, it is failed `expired`); a submit may
        override both. All are checked before any request. `run_kwargs` go to
        every task's `Extension.run()` (objects too costly to build per task,
        such as a loaded model); a claimed task carries them as `run_kwargs`.
        """
        policy = (
            None
            if on_disconnect is None
            else DisconnectPolicyRequest.model_validate(on_disconnect)
        )
        timeout = _LIMIT.validate_python(timeout_seconds)
        pending_timeout = _LIMIT.validate_python(pending_timeout_seconds)
        if cls is None:

            def decorator(inner: type[ExtensionT]) -> type[ExtensionT]:
                return self.register(
                    inner,
                    room=room,
                    on_disconnect=policy,
                    timeout_seconds=timeout,
                    pending_timeout_seconds=pending_timeout,
                    run_kwargs=run_kwargs,
                )

            return decorator
        registration = _Registration(
            check_extension(cls),
            room or GLOBAL_ROOM,
            policy,
            timeout,
            pending_timeout,
            dict(run_kwargs or {}),
        )
        self._startup(
            lambda: self._register(registration), f"registering {cls.__name__}"
        )
        self._serving.start()
        return cls

    def get_run_kwargs(self, full_name: str) -> dict[str, Any]:
        """Return the `run_kwargs` job `full_name` was registered with."""
        return dict(self._jobs[full_name].run_kwargs)

    def _register(self, registration: _Registration) -> str:
        while True:
            worker_id = self._worker_or_create()
            full_name, worker_id = self._put_job(registration, worker_id)
            with self._lock:
                self._check_connected()
                if self._worker_id == worker_id and not self._creating:
                    self._jobs[full_name] = registration
                    break
            # The server lost the worker meanwhile and a recovery (which did not
            # know this job yet) replaced it: register under the new worker.
        self._join_room(full_name, worker_id)
        return full_name

    def _put_job(
        self, registration: _Registration, worker_id: UUID | None
    ) -> tuple[str, UUID]:
        """`PUT` the job under `worker_id`, or, given None, under a new worker.

        Given None, the caller is the creator (see `_worker_or_create`).
        Answers the job's full name and the worker it was registered under.
        """
        cls = registration.cls
        request = JobRegisterRequest.model_validate(
            {
                "category": str(cls.category),
                "name": cls.__name__,
                "schema": job_schema(cls),
                "worker_id": worker_id,
                "on_disconnect": registration.policy,
                "timeout_seconds": registration.timeout_seconds,
                "pending_timeout_seconds": registration.pending_timeout_seconds,
            }
        )
        try:
            job = self._rest.register_job(registration.room_id, request)
        except BaseException:
            if worker_id is None:
                self._created(None)
            raise
        if worker_id is None:
            if job.worker_id is None:
                self._created(None)
                raise JobLibError("the server did not say which worker it created")
            worker_id = job.worker_id
            self._created(worker_id)
        return job.full_name, worker_id

    # tasks

    def start(self, task: ClaimedTask) -> None:
        """Mark a claimed task running; a task already running is left alone."""
        if task.status == TaskStatus.CLAIMED:
            self._runner.report(task, TaskStatus.RUNNING)

    def complete(self, task: ClaimedTask, result: Any = None) -> None:
        """Mark a task completed with its `result` (a JSON-ready value)."""
        self._runner.report(task, TaskStatus.COMPLETED, result=result)

    def fail(self, task: ClaimedTask, error: str) -> None:
        """Mark a task failed with the error text shown to whoever submitted it."""
        self._runner.report(task, TaskStatus.FAILED, error)

    def run(self, task: ClaimedTask, *args: Any, **kwargs: Any) -> TaskStatus:
        """Run the task's extension and report completed with its result, or failed.

        `Extension.run()` gets `args`, and the task's `run_kwargs` updated with
        `kwargs`; its return value, made
        JSON-able (see `Extension.run`), is the task's result; one that cannot be
        fails the task instead. While it runs, `current_task()` gives its
        `TaskContext`. Returns the task's status as the server last acknowledged
        it. A report is tried again through an outage for `report_retry_seconds`;
        one that never gets through is logged as an error. A report the server
        refuses because the task is no longer this worker's (403, 404, 409:
        cancelled, requeued to another worker, the worker removed) is logged as a
        warning, and the task's current status on the server returned. A task
        told to stop while it ran (cancelled, past its deadline, see
        `TaskContext.cancelled`) is not reported at all once its code returns or
        raises: its status on the server is returned. Either way `run()`
        returns, so `listen()` goes on with the next task; other errors (401,
        422) are raised.
        """
        extension, merged = task.extension, {**task.run_kwargs, **kwargs}
        return self._runner.run(task, lambda: extension.run(*args, **merged))

    def fail_by_id(self, task_id: UUID | str, error: str) -> None:
        """Mark a task this worker holds failed with `error`, by its id alone.

        A task `run()` is running is told to stop: its code's return is not
        reported. Raises the server's refusal (the task is not this worker's,
        or already ended).
        """
        self._settle(UUID(str(task_id)), TaskStatus.FAILED, error)

    def cancel(self, task: ClaimedTask | UUID | str) -> None:
        """Mark a task this worker holds cancelled (the task, or its id).

        As with `fail_by_id()`, a task `run()` is running is told to stop.
        """
        task_id = task.id if isinstance(task, ClaimedTask) else UUID(str(task))
        self._settle(task_id, TaskStatus.CANCELLED)

    def _settle(
        self, task_id: UUID, status: TaskStatus, error: str | None = None
    ) -> None:
        with self._lock:
            worker_id = self._held.get(task_id, self._worker_id)
        self._runner.settle(task_id, worker_id, status, error)

    # submitting

    def submit(
        self,
        extension: Extension,
        room: str,
        *,
        job_room: str = GLOBAL_ROOM,
        idempotency_key: str | None = None,
        timeout_seconds: float | None = None,
        pending_timeout_seconds: float | None = None,
    ) -> UUID:
        """Submit a task running `extension` in `room`; return the task's id.

        `idempotency_key` (up to 255 visible ASCII characters, unique per
        submit you mean): sending the same key again within a day returns the
        task the first submit made instead of making another, so a submit that
        met a timeout or a 503 can safely be sent again. `timeout_seconds` and
        `pending_timeout_seconds` override the job's time limits for this task
        (see `register`); they are checked before the request.
        """
        cls = check_extension(type(extension))
        full_name = job_full_name(cls, job_room)
        request = TaskSubmitRequest(
            payload=extension.model_dump(mode="json"),
            timeout_seconds=timeout_seconds,
            pending_timeout_seconds=pending_timeout_seconds,
        )
        task = self._rest.submit_task(
            room,
            full_name,
            request.payload,
            idempotency_key=idempotency_key,
            timeout_seconds=request.timeout_seconds,
            pending_timeout_seconds=request.pending_timeout_seconds,
        )
        return task.id

    def submit_many(
        self,
        job: type[Extension],
        payloads: Iterable[Extension | Mapping[str, Any]],
        *,
        room: str,
        job_room: str = GLOBAL_ROOM,
        timeout_seconds: float | None = None,
        pending_timeout_seconds: float | None = None,
    ) -> list[UUID]:
        """Submit one task of `job` per payload, in one request; their ids, in order.

        A payload is an instance of `job` or a mapping of its fields, and every
        one is checked against the job's schema by the server: one that does not
        match makes none of the tasks (`InvalidPayloadError`, its `errors`' `loc`
        naming the payload's index). One call takes up to the server's
        `max_batch_size` payloads (1,000 by default); split longer lists. The
        tasks join the end of the job's queue in this order. Unlike `submit`, a
        batch takes no idempotency key. The time limits apply to every task.
        """
        cls = check_extension(job)
        bodies: list[dict[str, Any]] = []
        for payload in payloads:
            if isinstance(payload, Extension):
                if not isinstance(payload, cls):
                    raise TypeError(
                        f"a payload of {cls.__name__} cannot be a "
                        f"{type(payload).__name__}"
                    )
                bodies.append(payload.model_dump(mode="json"))
            else:
                bodies.append(dict(payload))
        request = TaskBatchRequest(
            payloads=bodies,
            timeout_seconds=timeout_seconds,
            pending_timeout_seconds=pending_timeout_seconds,
        )
        tasks = self._rest.submit_batch(
            room,
            job_full_name(cls, job_room),
            request.payloads,
            timeout_seconds=request.timeout_seconds,
            pending_timeout_seconds=request.pending_timeout_seconds,
        )
        return [task.id for task in tasks]

    @overload
    def wait(self) -> None: ...

    @overload
    def wait(
        self, task_id: UUID | str, timeout: float | None = None
    ) -> TaskResponse: ...

    def wait(
        self, task_id: UUID | str | None = None, timeout: float | None = None
    ) -> TaskResponse | None:
        """Wait until the task is completed, failed or cancelled, and return it.

        Long-polls `GET /tasks/{id}` with `Prefer: wait=N`; raises
        `WaitTimeoutError` when `timeout` seconds pass first. A completed task
        carries what its job returned in `result`. Without a task, `wait()` is
        `serve()` (zndraw-joblib's name for it).
        """
        if task_id is None:
            self.serve()
            return None
        return wait_for_task(self._rest, UUID(str(task_id)), timeout)

    def result(self, task_id: UUID | str, timeout: float | None = None) -> Any:
        """Wait for the task as `wait()` does, and return what its job returned.

        Raises `TaskFailedError` (with `error` and `error_code`) for a failed
        task, `TaskCancelledError` for a cancelled one, and `WaitTimeoutError`
        when `timeout` seconds pass first.
        """
        return task_outcome(self.wait(task_id, timeout))

    # serving on its own

    def serve(self) -> None:
        """Serve until SIGINT or SIGTERM, `close()`, or an outage past its limit.

        The manager's work goes on in its background threads (the claim loop of
        `execute`, the heartbeat, provider reads); this only blocks. In the main
        thread a signal ends it: no new task is claimed, the task in hand gets
        up to 10 s to finish and be reported (a second signal cuts that short),
        and the manager closes, removing its worker. It also returns once the
        server has been unreachable for more than `max_unreachable_seconds`, or
        when the claim loop met an error no retry mends (logged); the manager is
        closed then too.
        """
        serve_until_ended(self._serving, self.close, DRAIN_SECONDS, self._idle)

    def _serve_tasks(self, stop: threading.Event) -> None:
        """The claim loop of `execute`: claim, run, report, until `stop` is set."""
        execute = self._execute
        assert execute is not None
        # Its held claims may wait long: close() answers them at once (the
        # worker's removal), so only a `listen()` with a caller's stop event
        # needs short ones. Long ones keep 1,000 idle workers cheap.
        park = max(self._polling_interval, SERVE_PARK_SECONDS)
        for task in self._listen(stop, self._polling_interval, True, park):
            self._runner.run(task, partial(execute, task))

    def _idle(self) -> bool:
        """Whether no claimed task is in hand: a drain need not wait for one."""
        with self._lock:
            return not self._held

    # leaving

    def disconnect(self) -> None:
        """Leave every job room, remove the worker on the server, clear local state.

        Stops the heartbeat and any `listen()` first; afterwards the manager does
        not become a worker again (`register()` and `listen()` raise `JobLibError`,
        the heartbeat stays stopped). Safe to call twice, with no worker, or when
        the server already removed the worker; when the server cannot be reached
        the failure is logged and the local state still cleared.
        """
        self._serving.end("the manager disconnected")
        # The claim loop's task in hand gets to finish and be reported first.
        if not self._serving.drain(DRAIN_SECONDS):
            logger.warning(
                "leaving with a task still running (after %g s)", DRAIN_SECONDS
            )
        with self._changed:
            self._disconnected = True
            self._changed.notify_all()
            self._stopped.set()
            listeners = list(self._listeners)
            worker_id, names = self._worker_id, list(self._jobs)
            self._worker_id = None
            self._last_heartbeat = None
            self._jobs.clear()
            self._held.clear()
        providers = self._providers.clear()
        if self._heartbeat is not None:
            # Not waiting: a beat stuck on a slow server must not hold us up.
            self._heartbeat.stop(wait=False)
        self._running.stop(wait=False)
        self._providers.shutdown(wait=False)
        for stop in listeners:
            stop.set()
        self._wakeup.set()
        if worker_id is None:
            return
        if self._tsio is not None:
            for name in names:
                try:
                    self._emit(LeaveJobRoom(job_name=name, worker_id=str(worker_id)))
                except Exception as exc:
                    # Best effort: removing the worker below leaves the rooms too.
                    logger.warning("could not leave the room of %s: %s", name, exc)
            for served in providers:
                leave = LeaveProviderRoom(
                    provider_name=served.full_name, worker_id=str(worker_id)
                )
                try:
                    self._emit(leave)
                except Exception as exc:
                    logger.warning(
                        "could not leave the room of %s: %s", served.full_name, exc
                    )
        # Removing the worker removes its providers too.
        self._delete_worker(worker_id)

    def close(self) -> None:
        """Disconnect, then close the HTTP client and socket `connect()` made.

        Every part is closed even when an earlier one fails; the first failure
        is raised at the end. Waits for a heartbeat, and for provider reads, in
        progress to end before closing the HTTP client they use.
        """
        owned, self._owned = self._owned, []
        steps: list[Callable[[], object]] = [self.disconnect]
        if self._heartbeat is not None:
            steps.append(self._heartbeat.stop)
        steps.append(self._running.stop)
        steps.append(self._providers.shutdown)
        steps.extend(closeable.close for closeable in owned)
        failure: BaseException | None = None
        for step in steps:
            try:
                step()
            except BaseException as exc:
                if failure is None:
                    failure = exc
                else:
                    logger.error("closing the manager failed again", exc_info=exc)
        if failure is not None:
            raise failure

    def __enter__(self) -> JobManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # the socket

    def _join_room(self, full_name: str, worker_id: UUID) -> None:
        if self._tsio is None:
            return
        try:
            self._emit(JoinJobRoom(job_name=full_name, worker_id=str(worker_id)))
        except TransportError as exc:
            # The socket is down; its reconnection joins every job again.
            logger.warning("could not join %s yet: %s", full_name, exc)

    def _on_task_available(self, data: Any = None) -> None:
        try:
            event = TaskAvailable.model_validate(data)
        except ValidationError:
            logger.debug("ignoring a malformed task_available: %r", data)
            return
        if event.job_name in self._jobs:
            self._wakeup.set()
