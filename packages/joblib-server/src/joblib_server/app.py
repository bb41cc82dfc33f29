"""The standalone server: the same parts a host mounts, plus Socket.IO and tokens."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import socketio
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from joblib_protocol import API_PREFIX
from joblib_server.auth import AuthBackend
from joblib_server.dashboard import dashboard_routes
from joblib_server.database import Database
from joblib_server.deadlines import BODY_GRACE_SECONDS, with_deadlines
from joblib_server.executors import Executor, standalone_executor
from joblib_server.health import health_routes
from joblib_server.logs import protect
from joblib_server.policy import AccessPolicy
from joblib_server.problems import EXCEPTION_HANDLERS
from joblib_server.provider_results import RedisResults
from joblib_server.realtime import attach_joblib, create_socketio_server
from joblib_server.runtime import JobLib
from joblib_server.settings import StandaloneSettings
from joblib_server.wakebus import choose_wake_bus

logger = logging.getLogger("joblib_server")


def create_app(
    settings: StandaloneSettings,
    auth: AuthBackend,
    *,
    database: Database | None = None,
    realtime: bool = True,
    policy: AccessPolicy | None = None,
    executor: Executor | None = None,
) -> Any:
    """Build the standalone app: REST at `/v1/joblib`, Socket.IO at `/socket.io`.

    Without an `executor`, the one `settings` name runs the internal jobs, if any.
    """
    database = database or Database.from_url(settings.database_url)
    executor = executor or standalone_executor(settings)
    # With Redis, identical provider reads on every process share one dispatch.
    results = RedisResults(settings.redis_url) if settings.redis_url else None
    joblib = JobLib(
        database=database,
        auth=auth,
        settings=settings.joblib,
        policy=policy,
        provider_results=results,
        executor=executor,
        wake_bus=choose_wake_bus(
            settings.joblib.wake_bus, database, settings.redis_url
        ),
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with joblib.lifespan():
            yield

    app = Starlette(
        # The routes themselves, not `joblib.asgi_app()`: a nested Starlette app
        # would run a second error-handling stack on every request.
        routes=[
            _mount(API_PREFIX, joblib),
            *health_routes(joblib),
            *dashboard_routes(),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.joblib = joblib
    if not realtime:
        return app
    wrapped = _with_socketio(app, joblib, settings)
    wrapped.joblib = joblib  # for `JobLibServer`, which sees only the outer app
    return wrapped


def _with_socketio(
    app: Starlette, joblib: JobLib, settings: StandaloneSettings
) -> socketio.ASGIApp:
    """Wrap the app so Socket.IO answers at `/socket.io`."""
    sio = create_socketio_server(
        settings.socketio_ping_interval_seconds,
        settings.socketio_ping_timeout_seconds,
        settings.redis_url,
    )
    app.state.sio = sio
    app.state.realtime = attach_joblib(sio, joblib)
    return socketio.ASGIApp(sio, other_asgi_app=app, socketio_path="socket.io")


def _mount(prefix: str, joblib: JobLib) -> Mount:
    """Mount the routes so that every path under `prefix` reaches them.

    Starlette matches the rest of a mounted path with `.*`, which stops at a
    newline: `/rooms/a%0Ab/jobs` would get a bare 404 instead of the routes' own
    400 for a bad room id.
    """
    mount = Mount(prefix, routes=joblib.routes)
    mount.path_regex = re.compile(mount.path_regex.pattern, re.DOTALL)
    return mount


class JobLibServer(uvicorn.Server):
    """uvicorn that tells joblib its own shutdown is coming before sockets close.

    uvicorn closes every connection before it runs the lifespan's shutdown, so
    without a word beforehand joblib would take the closing sockets for workers
    that went away and fail their tasks. Hosts that run uvicorn themselves use
    this class too (or call `JobLib.begin_shutdown()` from their own hook).

    It also keeps the deadlines uvicorn has none for: request headers within
    `Settings.header_timeout_seconds`, bodies within `body_timeout_seconds`.
    """

    def __init__(self, config: uvicorn.Config, joblib: JobLib) -> None:
        super().__init__(config)
        self.joblib = joblib
        # At --log-level debug, the websockets library logs handshake headers
        # and frames (tokens among them) through this logger.
        protect(logging.getLogger("uvicorn.error"))

    async def startup(self, sockets: list[Any] | None = None) -> None:
        """Serve with deadlines for request headers and bodies (see `deadlines`)."""
        settings = self.joblib.settings
        self.config.http_protocol_class = with_deadlines(
            self.config.http_protocol_class,
            header_timeout=settings.header_timeout_seconds,
            body_timeout=settings.body_timeout_seconds + BODY_GRACE_SECONDS,
        )
        await super().startup(sockets)

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        """Mark joblib as stopping, answer waiting requests, then shut down."""
        await self.joblib.begin_shutdown()
        await super().shutdown(sockets)
