"""`JobLib`: the server's parts put together, for a host or the standalone app."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Concatenate, ParamSpec, TypeVar

import anyio
from anyio.abc import TaskGroup
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from joblib_protocol import CancelReason, ErrorCode, TaskStatus, TaskStatusEvent
from joblib_server.auth import AuthBackend
from joblib_server.database import Database
from joblib_server.disconnects import Cleanup, cleanups_of, grace_expired
from joblib_server.dispatch import ClaimWaiters, TaskWaiters, recheck_claims
from joblib_server.emitter import Emitter, NullEmitter, ordered
from joblib_server.executors import Executor, Reports
from joblib_server.expiry import TimeLimits
from joblib_server.jobs import bind_internal_jobs, register_internal_jobs
from joblib_server.liveness import SocketHeartbeats
from joblib_server.metrics import Metrics
from joblib_server.outcome import Dispatch, Outcome, is_one_statement
from joblib_server.policy import AccessPolicy, OpenRooms
from joblib_server.problems import EXCEPTION_HANDLERS
from joblib_server.progress import ProgressThrottle, finished_tasks, is_progress
from joblib_server.provider_results import MemoryResults, ResultBackend, stop_waiting
from joblib_server.queues import jobs_with_pending
from joblib_server.routes import RestApi
from joblib_server.schema import ensure_schema
from joblib_server.settings import Settings, bind_settings
from joblib_server.sweeper import run_sweeper
from joblib_server.tasks import fail_interrupted_internal_tasks
from joblib_server.wakebus import (
    Listening,
    Wake,
    WakeBus,
    bind_wake_bus,
    choose_wake_bus,
    wake_of,
    was_sent_in_statement,
)

logger = logging.getLogger("joblib_server")

T = TypeVar("T")
P = ParamSpec("P")

_WRITE_ATTEMPTS = 4

_CLAIM_PREFIX = re.compile(r"[A-Za-z0-9_-]{1,20}")


class JobLib:
    """Database, settings, authentication, policy and emitter; routes, a lifespan.

    A host mounts `routes` (or `asgi_app()`) at `/v1/joblib` and enters
    `lifespan()` from its own lifespan, since Starlette does not run a mounted
    app's lifespan. Every change, from any caller, goes through `execute`; every
    REST route and Socket.IO event about a room asks `policy` first (default:
    `OpenRooms`, every room open to every identity). An `executor` runs the
    `@internal` jobs it names (see `executors`); `internal_jobs=True` instead
    lets admins' workers serve `@internal` jobs like any other.
    """

    def __init__(
        self,
        *,
        database: Database,
        auth: AuthBackend,
        settings: Settings | None = None,
        emitter: Emitter | None = None,
        internal_jobs: bool = False,
        sweeper: bool = True,
        policy: AccessPolicy | None = None,
        provider_results: ResultBackend | None = None,
        executor: Executor | None = None,
        wake_bus: WakeBus | None = None,
    ) -> None:
        self.database = database
        self.auth = auth
        self.policy: AccessPolicy = policy or OpenRooms()
        self.settings = settings or Settings()
        self.emitter: Emitter = emitter or NullEmitter()
        self.internal_jobs = internal_jobs
        if executor is not None and not _CLAIM_PREFIX.fullmatch(executor.name):
            raise ValueError(
                f"an executor's name is 1-20 letters, digits, '_' or '-', "
                f"not {executor.name!r}: it starts every claim_id it makes"
            )
        self.executor = executor
        """What runs the `@internal` jobs it names; registered when the lifespan
        starts, dispatched from then on."""
        self._internal: dict[str, str] = {}
        self.provider_results: ResultBackend = provider_results or MemoryResults()
        """Provider results, in-flight marks and waiting readers (`provider_results`);
        `RedisResults` shares them between server processes."""
        self.waiters = TaskWaiters()
        self.claims = ClaimWaiters()
        self.wake_bus: WakeBus = wake_bus or choose_wake_bus(
            self.settings.wake_bus, database
        )
        """Wakes the held claims and long-polls of other server processes, and
        ours for their changes (`wakebus`); by default as `settings.wake_bus`
        says, without Redis (`create_app` passes the Redis URL)."""
        self.time_limits = TimeLimits(self)
        self.socket_heartbeats = SocketHeartbeats(self)
        """Keeps the workers connected to this process's sockets alive, in one
        statement per interval (`liveness`); `attach_joblib` feeds it."""
        self.metrics = Metrics()
        """This JobLib's Prometheus metrics, in a registry of its own (`/metrics`)."""
        self.metrics.watch_waiters(lambda: len(self.claims), lambda: len(self.waiters))
        self.metrics.count_statements(database.engine)
        self.progress = ProgressThrottle(
            lambda batch: self.emitter.emit(batch), running=lambda: not self.stopping
        )
        self.stopping = False
        """True once the server's own shutdown began: closing sockets are not
        workers going away, so nobody is cleaned up for them."""
        self._run_sweeper = sweeper
        self._timers: TaskGroup | None = None
        self._api = RestApi(self)

    @property
    def routes(self) -> list[BaseRoute]:
        """The REST routes, relative to where they are mounted."""
        return self._api.routes

    def asgi_app(self) -> Starlette:
        """A Starlette app of the REST routes with problem+json error handling."""
        return Starlette(routes=self.routes, exception_handlers=EXCEPTION_HANDLERS)

    async def execute(
        self,
        operation: Callable[Concatenate[AsyncSession, P], Awaitable[Outcome[T]]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run `operation(session, *args, **kwargs)` as one change; return its value.

        The one way a change reaches the database: a write transaction (for an
        operation marked `one_statement`, `Database.write_one()`), run again on
        the errors the database calls retryable, committed, and then all the
        after-commit work of its `Outcome`.
        """
        # A one-statement change needs no transaction around it (`one_statement`).
        one = is_one_statement(operation)
        outcome = await self._change(operation, args, kwargs, one_statement=one)
        assert outcome is not None  # `operation` never declines
        return outcome.value

    async def execute_at_once(
        self,
        at_once: Callable[Concatenate[AsyncSession, P], Awaitable[Outcome[T] | None]],
        operation: Callable[Concatenate[AsyncSession, P], Awaitable[Outcome[T]]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Like `execute`, trying `at_once` first where the database allows it.

        On a backend that `writes_at_once` (PostgreSQL), `at_once` runs in
        autocommit, retried and followed by the same after-commit work: it makes
        its change in one statement, or declines (None) without changing
        anything, and then `operation` runs as `execute` runs it. Elsewhere
        `operation` alone runs.
        """
        if self.database.backend.writes_at_once:
            outcome = await self._change(at_once, args, kwargs, one_statement=True)
            if outcome is not None:
                return outcome.value
        return await self.execute(operation, *args, **kwargs)

    async def _change(
        self,
        operation: Callable[..., Awaitable[Outcome[T] | None]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        one_statement: bool,
    ) -> Outcome[T] | None:
        """Run, retry and commit one change, then publish it."""
        backend = self.database.backend
        session_of = self.database.write_one if one_statement else self.database.write
        # In autocommit the change is already committed when the operation
        # returns: a NOTIFY sent then costs a round trip before the change is
        # published, long enough for a claim in this process to take a new task
        # and announce it `claimed` before its `pending`. It goes after instead.
        autocommit = one_statement and backend.writes_at_once
        for attempt in range(1, _WRITE_ATTEMPTS + 1):
            try:
                async with session_of() as session:
                    bind_settings(session, self.settings)
                    bind_internal_jobs(session, self._internal)
                    bind_wake_bus(session, self.wake_bus)
                    made = await operation(session, *args, **kwargs)
                    if made is None:
                        return None  # declined, nothing changed
                    outcome = made
                    cleanups = cleanups_of(session)
                    wake = wake_of(outcome.emissions, outcome.removed_workers)
                    # On PostgreSQL a NOTIFY in this very transaction (or the
                    # operation's one statement): the other processes hear of
                    # the change exactly when it commits.
                    sent = bool(wake) and (
                        was_sent_in_statement(session, wake)
                        or (
                            not autocommit
                            and await self.wake_bus.send_in(session, wake)
                        )
                    )
                break
            except (DBAPIError, OSError, SQLAlchemyTimeoutError) as exc:
                retry = isinstance(exc, DBAPIError) and backend.is_retryable(exc)
                if attempt == _WRITE_ATTEMPTS or not retry:
                    if backend.is_unavailable(exc):
                        # Not run again here: a connection lost in COMMIT leaves
                        # it unknown whether the change was made.
                        raise self.database.unavailable(exc) from exc
                    raise
                logger.debug("retrying a write after %s", exc)
                await anyio.sleep(0.005 * attempt)
        # Committed: whoever is waiting must hear of it even if our caller is
        # being cancelled meanwhile.
        with anyio.CancelScope(shield=True):
            await self._after_commit(outcome)
            if wake and not sent:
                sent = await self.wake_bus.send_after(wake)
        if sent:
            self.metrics.wake_bus_messages.labels("sent").inc()
        for cleanup in cleanups:
            _log_cleanup(cleanup)
        return outcome

    async def _after_commit(self, outcome: Outcome[Any]) -> None:
        await self._publish(outcome)
        for task in outcome.dispatches:
            # After the batch that announced the task `claimed`.
            await self._dispatch(task)

    async def _dispatch(self, task: Dispatch) -> None:
        """Hand a claimed `@internal` task to the executor; the sweeper has the rest."""
        if self.executor is None:
            return
        try:
            await self.executor.dispatch(task)
        except Exception:
            logger.exception("dispatching internal task %s failed", task.task_id)

    def _stop_internal(self, batch: list[Any]) -> None:
        """Tell the executor of the tasks this batch ends, so that their code stops."""
        if self.executor is None or not self._internal:
            return
        for emission in batch:
            event = emission.event
            if (
                not isinstance(event, TaskStatusEvent)
                or event.name not in self._internal
            ):
                continue
            if event.status == TaskStatus.CANCELLED:
                self.executor.stop(uuid.UUID(event.id), CancelReason.CANCELLED)
            elif event.status == TaskStatus.FAILED:
                reason = (
                    CancelReason.DEADLINE_EXCEEDED
                    if event.error_code == ErrorCode.DEADLINE_EXCEEDED
                    else None
                )
                self.executor.stop(uuid.UUID(event.id), reason)

    async def _publish(self, outcome: Outcome[Any]) -> None:
        for worker_id in outcome.removed_workers:
            self.claims.release(worker_id)
        batch = ordered(outcome.emissions)
        if any(map(is_progress, batch)):
            # At most ~10 a second per task reach observers; see `progress`.
            for emission in filter(is_progress, batch):
                await self.progress.offer(emission)
            batch = [emission for emission in batch if not is_progress(emission)]
        if not batch:
            return
        self.metrics.observe(batch)
        self._stop_internal(batch)
        self.waiters.notify(batch)
        self.time_limits.notice(batch)
        # A finishing task's latest progress, still held back, goes out first.
        last_progress = self.progress.finish(finished_tasks(batch))
        try:
            if last_progress:
                await self.emitter.emit(last_progress)
            await self.emitter.emit(batch)
        except Exception:
            # The change is committed; a failed notification must not fail it.
            logger.exception("emitting %d events failed", len(batch))
        # Only now: a held claim woken earlier could emit its task's `claimed`
        # before this batch, with the task's `pending`, reached the emitter. Once
        # it has (SocketIOEmitter queues and sends batches in order), whatever the
        # claim emits goes out after it.
        self.claims.notify(batch)

    def _woken(self, wake: Wake) -> None:
        """Another process committed a change: wake the waiters it concerns."""
        self.metrics.wake_bus_messages.labels("received").inc()
        if wake.everyone:
            self._wake_everyone()
            return
        try:
            workers = [uuid.UUID(worker) for worker in wake.workers]
            tasks = [uuid.UUID(task) for task in wake.tasks]
        except ValueError:
            self._wake_everyone()
            return
        for worker_id in workers:
            self.claims.release(worker_id)
        for task_id in tasks:
            self.waiters.wake(task_id)
        for job in wake.jobs:
            self.claims.wake(job)

    def _wake_everyone(self) -> None:
        self.claims.wake_all()
        self.waiters.wake_all()

    def _subscribed(self) -> None:
        """The bus listens (again): whatever it missed meanwhile, re-check now."""
        self.metrics.wake_bus_subscriptions.inc()
        self._wake_everyone()

    async def begin_shutdown(self) -> None:
        """The server is stopping: keep workers' tasks, answer waiting requests now.

        Call it before the server closes its connections (`JobLibServer` does);
        `lifespan()` calls it on exit as well. Workers reconnect to the next
        server and carry on under the same worker ids.
        """
        if not self.stopping:
            logger.info("shutting down: workers keep their tasks until they return")
        self.stopping = True
        self.progress.close()
        self.claims.close()
        self.waiters.close()
        stop_waiting(self.provider_results)

    def expire_grace_later(
        self, worker_id: uuid.UUID, epoch: int, grace: float
    ) -> None:
        """After `grace` seconds, clean up the worker unless it came back meanwhile.

        Without a running lifespan (or once it ends) the sweeper does it instead:
        the worker's `disconnected_at` is in the database.
        """
        if self._timers is not None and not self.stopping:
            self._timers.start_soon(self._expire_after, worker_id, epoch, grace)

    async def _expire_after(
        self, worker_id: uuid.UUID, epoch: int, grace: float
    ) -> None:
        await anyio.sleep(grace)
        try:
            receipt = await self.execute(grace_expired, worker_id, epoch)
        except Exception:
            logger.exception("cleaning up worker %s after its grace failed", worker_id)
            return
        if receipt is not None:  # and its cleanup line logged by `execute`
            logger.debug("worker %s did not come back within %g s", worker_id, grace)

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[JobLib]:
        """Upgrade or check the schema, run the sweeper; at the end, close up."""
        try:
            await ensure_schema(
                self.database.engine, upgrade=self.settings.upgrade_schema
            )
            async with anyio.create_task_group() as group:
                if self.executor is not None:
                    await self._start_executor(group, self.executor)
                if self._run_sweeper:
                    group.start_soon(run_sweeper, self)
                group.start_soon(self.time_limits.run)
                group.start_soon(self.socket_heartbeats.run)
                group.start_soon(
                    recheck_claims,
                    self.claims,
                    self._jobs_with_pending,
                    self.settings.long_poll_recheck_seconds,
                )
                group.start_soon(
                    self.wake_bus.listen, Listening(self._woken, self._subscribed)
                )
                self._timers = group
                try:
                    yield self
                finally:
                    await self.begin_shutdown()
                    self._timers = None
                    group.cancel_scope.cancel()
        finally:
            await self.wake_bus.aclose()
            await self.provider_results.aclose()
            await self.database.dispose()

    async def _jobs_with_pending(self) -> set[str]:
        async with self.database.read() as session:
            return await jobs_with_pending(await session.connection())

    async def _start_executor(self, group: TaskGroup, executor: Executor) -> None:
        """Register the executor's jobs, fail what its predecessor left, serve it."""
        schemas = executor.jobs()
        self._internal = {name: executor.name for name in schemas}
        await self.execute(register_internal_jobs, schemas)
        if not executor.durable:
            failed = await self.execute(
                fail_interrupted_internal_tasks, f"{executor.name}:"
            )
            if failed:
                logger.warning(
                    "failed %d internal tasks the previous server left unfinished",
                    len(failed),
                )
        await group.start(executor.serve, Reports(self))


def _log_cleanup(cleanup: Cleanup) -> None:
    """One INFO line per worker cleaned up, whoever did it, once it is committed."""
    receipt = cleanup.receipt
    logger.info(
        "worker %s of %r cleaned up (%s): %d tasks failed, %d requeued, "
        "%d jobs removed",
        receipt.worker_id,
        cleanup.identity,
        cleanup.reason.value,
        len(receipt.failed),
        len(receipt.requeued),
        len(receipt.jobs_removed),
        extra={
            "event": "cleaned_up",
            "worker_id": str(receipt.worker_id),
            "identity": cleanup.identity,
            "reason": cleanup.reason.value,
            "failed": len(receipt.failed),
            "requeued": len(receipt.requeued),
            "jobs_removed": list(receipt.jobs_removed),
        },
    )
