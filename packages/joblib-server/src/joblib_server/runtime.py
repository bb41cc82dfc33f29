"""`JobLib`: the server's parts put together, for a host or the standalone app."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Concatenate, ParamSpec, TypeVar

import anyio
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from joblib_server.auth import AuthBackend
from joblib_server.database import Database
from joblib_server.dispatch import ClaimWaiters, TaskWaiters
from joblib_server.emitter import Emitter, NullEmitter, ordered
from joblib_server.outcome import Outcome
from joblib_server.problems import EXCEPTION_HANDLERS
from joblib_server.routes import RestApi
from joblib_server.schema import ensure_schema
from joblib_server.settings import Settings
from joblib_server.sweeper import run_sweeper

logger = logging.getLogger("joblib_server")

T = TypeVar("T")
P = ParamSpec("P")

_WRITE_ATTEMPTS = 4


class JobLib:
    """Database, settings, authentication and emitter, with routes and a lifespan.

    A host mounts `routes` (or `asgi_app()`) at `/v1/joblib` and enters
    `lifespan()` from its own lifespan, since Starlette does not run a mounted
    app's lifespan. Every change, from any caller, goes through `execute`.
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
    ) -> None:
        self.database = database
        self.auth = auth
        self.settings = settings or Settings()
        self.emitter: Emitter = emitter or NullEmitter()
        self.internal_jobs = internal_jobs
        self.waiters = TaskWaiters()
        self.claims = ClaimWaiters()
        self._run_sweeper = sweeper
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

        The one way a change reaches the database: a write transaction, run again
        on the errors the database calls retryable, committed, and then all the
        after-commit work of its `Outcome`.
        """
        backend = self.database.backend
        for attempt in range(1, _WRITE_ATTEMPTS + 1):
            try:
                async with self.database.write() as session:
                    outcome = await operation(session, *args, **kwargs)
                break
            except DBAPIError as exc:
                if attempt == _WRITE_ATTEMPTS or not backend.is_retryable(exc):
                    raise
                logger.debug("retrying a write after %s", exc.orig)
                await anyio.sleep(0.005 * attempt)
        # Committed: whoever is waiting must hear of it even if our caller is
        # being cancelled meanwhile.
        with anyio.CancelScope(shield=True):
            await self._after_commit(outcome)
        return outcome.value

    async def _after_commit(self, outcome: Outcome[Any]) -> None:
        for worker_id in outcome.removed_workers:
            self.claims.release(worker_id)
        batch = ordered(outcome.emissions)
        if not batch:
            return
        self.waiters.notify(batch)
        try:
            await self.emitter.emit(batch)
        except Exception:
            # The change is committed; a failed notification must not fail it.
            logger.exception("emitting %d events failed", len(batch))
        # Only now: a held claim woken earlier could emit its task's `claimed`
        # while this batch, with the task's `pending`, still waits on the network.
        self.claims.notify(batch)

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[JobLib]:
        """Create the tables, run the sweeper, and close the database at the end."""
        await ensure_schema(self.database.engine, upgrade=self.settings.upgrade_schema)
        try:
            async with anyio.create_task_group() as group:
                if self._run_sweeper:
                    group.start_soon(run_sweeper, self)
                yield self
                group.cancel_scope.cancel()
        finally:
            await self.database.dispose()
