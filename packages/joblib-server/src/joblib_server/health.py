"""Health and metrics routes: `/healthz`, `/readyz` and `/metrics`.

They are apart from the REST API (`/v1/joblib`): a host mounts them where its
probes and its Prometheus look, at the root or under a prefix of its own,

    Starlette(routes=[Mount("/v1/joblib", app=joblib.asgi_app()),
                      *health_routes(joblib, realtime=realtime)])

The standalone app puts them at the root. They answer their errors as problem
documents themselves, so they need none of joblib's exception handlers.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from joblib_protocol import (
    DatabaseUnavailable,
    Forbidden,
    ProblemDetail,
    Unauthorized,
)
from joblib_server.metrics import Scrape, Sockets, read_task_counts
from joblib_server.problems import problem_response
from joblib_server.schema import current_revision, head_revision

if TYPE_CHECKING:
    from joblib_server.realtime import Realtime
    from joblib_server.runtime import JobLib

logger = logging.getLogger("joblib_server")

READY_TIMEOUT_SECONDS = 2.0
"""How long `/readyz` (and `/metrics`, for its database read) waits for the
database before it answers without it: a probe must not hang on a database that
accepts connections but does not answer."""

_RETRY_AFTER = {"Retry-After": "5"}


def health_routes(
    joblib: JobLib,
    *,
    realtime: Realtime | None = None,
    ready_timeout: float = READY_TIMEOUT_SECONDS,
) -> list[BaseRoute]:
    """The health and metrics routes of `joblib`, relative to where they are mounted.

    `/metrics` counts the Socket.IO connections of `realtime` (what
    `attach_joblib` returns), or else of the app's `state.realtime` (the
    standalone app sets it); without either it leaves the socket gauges out.
    """
    health = _Health(joblib, realtime, ready_timeout)
    return [
        Route("/healthz", health.alive, methods=["GET"], name="healthz"),
        Route("/readyz", health.ready, methods=["GET"], name="readyz"),
        Route("/metrics", health.metrics, methods=["GET"], name="metrics"),
    ]


class _Health:
    def __init__(
        self, joblib: JobLib, realtime: Realtime | None, ready_timeout: float
    ) -> None:
        self.joblib = joblib
        self.realtime = realtime
        self.ready_timeout = ready_timeout
        self._was_ready: bool | None = None

    async def alive(self, request: Request) -> Response:
        """`GET /healthz`: the process answers; nothing else is asked."""
        return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})

    async def ready(self, request: Request) -> Response:
        """`GET /readyz`: 200 when this process can serve, else 503 saying why."""
        problem = await self._not_ready()
        self._note(problem)
        if problem is not None:
            headers = {"Cache-Control": "no-store", **_RETRY_AFTER}
            return problem_response(problem, headers)
        body = {"status": "ok", "revision": head_revision()}
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    async def _not_ready(self) -> ProblemDetail | None:
        if self.joblib.stopping:
            return _unavailable("the server is shutting down", server="stopping")
        head = head_revision()
        try:
            with anyio.fail_after(self.ready_timeout):
                current = await current_revision(self.joblib.database.engine)
        except TimeoutError:
            return DatabaseUnavailable.document(
                f"the database did not answer within {self.ready_timeout:g} s",
                checks={"database": "timeout"},
            )
        except Exception as exc:
            # The cause goes to the log only: a driver's message can name hosts.
            logger.debug("readiness: the database failed: %r", exc)
            return DatabaseUnavailable.document(
                f"the database cannot be used ({type(exc).__name__})",
                checks={"database": "unreachable"},
            )
        if current != head:
            return _unavailable(
                f"joblib's schema is at revision {current or 'none'}, this server "
                f"needs {head}: run `joblib-server db upgrade`",
                database="ok",
                schema=current or "none",
            )
        return None

    def _note(self, problem: ProblemDetail | None) -> None:
        """Log when readiness changes, not at every probe."""
        ready = problem is None
        if ready == self._was_ready:
            return
        if ready:
            if self._was_ready is not None:
                logger.info("ready again")
        else:
            logger.warning("not ready: %s", problem.detail if problem else "")
        self._was_ready = ready

    async def metrics(self, request: Request) -> Response:
        """`GET /metrics`: the Prometheus exposition (an admin's, unless public)."""
        if not self.joblib.settings.metrics_public:
            refused = await self._refusal(request)
            if refused is not None:
                return refused
        scrape = await self._scrape(request)
        body, content_type = self.joblib.metrics.render(
            scrape, request.headers.get("accept")
        )
        return Response(body, headers={"Content-Type": content_type})

    async def _refusal(self, request: Request) -> Response | None:
        identity = await self.joblib.auth.authenticate(request.headers)
        if identity is None:
            document = Unauthorized.document(
                "send an admin's `Authorization: Bearer` token (or set metrics_public)"
            )
            return problem_response(document, {"WWW-Authenticate": "Bearer"})
        if not identity.is_admin:
            return problem_response(Forbidden.document("metrics are for admins"))
        return None

    async def _scrape(self, request: Request) -> Scrape:
        realtime = self.realtime or getattr(request.app.state, "realtime", None)
        sockets = Sockets.of(realtime) if realtime is not None else None
        try:
            with anyio.fail_after(self.ready_timeout):
                tasks, other = await read_task_counts(self.joblib.database)
        except Exception as exc:
            logger.warning("metrics: reading the task counts failed: %r", exc)
            return Scrape(None, sockets)
        return Scrape(tasks, sockets, other)


def _unavailable(detail: str, **checks: Any) -> ProblemDetail:
    """A 503 about this server's state; no problem type of the API fits it."""
    return ProblemDetail(
        type="about:blank",
        title="Service Unavailable",
        status=503,
        detail=detail,
        checks=checks,
    )
