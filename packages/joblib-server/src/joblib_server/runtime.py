"""`JobLib`: the server's parts put together, for a host or the standalone app."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import TypeVar

import anyio
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from joblib_protocol import Emission
from joblib_server.auth import AuthBackend
from joblib_server.database import Database
from joblib_server.emitter import Emitter, NullEmitter, ordered
from joblib_server.problems import EXCEPTION_HANDLERS
from joblib_server.routes import RestApi
from joblib_server.settings import Settings
from joblib_server.sweeper import run_sweeper
from joblib_server.waiters import ClaimWaiters, TaskWaiters

logger = logging.getLogger("joblib_server")

ResultT = TypeVar("ResultT")

_WRITE_ATTEMPTS = 4
# PostgreSQL: serialization failure and deadlock; both are safe to run again.
_RETRYABLE_SQLSTATES = {"40001", "40P01"}


class JobLib:
    """Database, settings, authentication and emitter, with routes and a lifespan.

    A host mounts `app` (or `routes`) at `/v1/joblib` and enters `lifespan()` from
    its own lifespan, since Starlette does not run a mounted app's lifespan.
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

    async def write(
        self, operation: Callable[[AsyncSession], Awaitable[ResultT]]
    ) -> ResultT:
        """Run `operation` in a write transaction and commit, retrying on deadlock."""
        for attempt in range(1, _WRITE_ATTEMPTS + 1):
            try:
                async with self.database.write() as session:
                    return await operation(session)
            except DBAPIError as exc:
                if attempt == _WRITE_ATTEMPTS or not _retryable(exc):
                    raise
                logger.debug("retrying a write after %s", exc.orig)
                await anyio.sleep(0.005 * attempt)
        raise AssertionError("unreachable")

    async def publish(self, emissions: Iterable[Emission]) -> None:
        """Hand committed changes to long-polls and the emitter (call after commit)."""
        batch = ordered(emissions)
        if not batch:
            return
        self.waiters.notify(batch)
        try:
            await self.emitter.emit(batch)
        except Exception:
            # The change is committed; a failed notification must not fail the request.
            logger.exception("emitting %d events failed", len(batch))
        # Only now: a held claim woken earlier could emit its task's `claimed`
        # while this batch, with the task's `pending`, still waits on the network.
        self.claims.notify(batch)

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[JobLib]:
        """Create the tables, run the sweeper, and close the database at the end."""
        await self.database.create_tables()
        try:
            async with anyio.create_task_group() as group:
                if self._run_sweeper:
                    group.start_soon(
                        run_sweeper, self.database, self.settings, self.publish
                    )
                yield self
                group.cancel_scope.cancel()
        finally:
            await self.database.dispose()


def _retryable(exc: DBAPIError) -> bool:
    sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if sqlstate in _RETRYABLE_SQLSTATES:
        return True
    return "database is locked" in str(exc.orig)
