"""Deliberately broken servers for the kit to catch: our app with one flaw each."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import socketio

from joblib_conformance import ServerTarget
from joblib_protocol import Emission, TaskCancelled
from joblib_server import JobLib, NullEmitter, StandaloneSettings, TokenAuth, create_app
from joblib_server.auth import Identity
from joblib_server.emitter import Emitter
from tests.support.servers import make_settings, serve_in_thread
from tests.support.tokens import ADMIN, ALICE, BOB, TOKENS

Flaw = Callable[[Any], None]
"""Breaks the standalone app it is given (`create_app`'s, Socket.IO included)."""

EARLY_BY = 0.15
"""Seconds an emit-before-commit server keeps its transaction open after emitting."""


def emits_before_commit(app: Any) -> None:
    """Publish each change's events inside its transaction, before the commit."""
    joblib: JobLib = app.joblib
    publish = joblib.emitter
    joblib.emitter = NullEmitter()  # nothing more after the commit
    execute = joblib.execute

    async def early_execute(operation: Any, *args: Any, **kwargs: Any) -> Any:
        async def early(session: Any, *inner: Any, **named: Any) -> Any:
            outcome = await operation(session, *inner, **named)
            await publish.emit(outcome.emissions)
            await anyio.sleep(EARLY_BY)  # the commit comes well after the events
            return outcome

        return await execute(early, *args, **kwargs)

    joblib.execute = early_execute  # type: ignore[method-assign,assignment]


def answers_500_on_bad_input(app: Any) -> None:
    """Turn every 422 answer into a bare 500, as a server without validation does."""
    app.other_asgi_app = Answer500For422(app.other_asgi_app)


class Answer500For422:
    """ASGI middleware: a 422 answer becomes `500 Internal Server Error`."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        swallowed = False

        async def rewrite(message: Any) -> None:
            nonlocal swallowed
            if message["type"] == "http.response.start" and message["status"] == 422:
                swallowed = True
                await send(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"text/plain")],
                    }
                )
                await send(
                    {"type": "http.response.body", "body": b"Internal Server Error"}
                )
                return
            if not swallowed:
                await send(message)

        await self.app(scope, receive, rewrite)


def forgets_idempotency_keys(app: Any) -> None:
    """Forget each `Idempotency-Key` at once: a submit sent again makes a second
    task (keys are still validated, so only the replay is missing)."""
    app.joblib.settings.idempotency_key_ttl_seconds = 1e-6


def never_cleans_up(app: Any) -> None:
    """Ignore closed sockets: a dropped worker keeps its tasks until the sweeper."""

    async def disconnect(sid: str, reason: Any = None) -> None:
        return None

    app.other_asgi_app.state.sio.on("disconnect", disconnect)


def lets_anyone_connect(app: Any) -> None:
    """Accept Socket.IO handshakes without valid credentials too, as "anyone"."""
    realtime = app.other_asgi_app.state.realtime
    authenticate = realtime.authenticate

    async def lenient(sid: str, environ: Any, auth: Any) -> Identity:
        try:
            identity: Identity = await authenticate(sid, environ, auth)
        except socketio.exceptions.ConnectionRefusedError:
            identity = Identity("anyone")
            realtime.accept(sid, identity)
        return identity

    realtime.authenticate = lenient


class WithoutCancelNotices:
    """An emitter that sends everything but `task_cancelled`."""

    def __init__(self, emitter: Emitter) -> None:
        self.emitter = emitter

    async def emit(self, emissions: Iterable[Emission]) -> None:
        kept = [e for e in emissions if not isinstance(e.event, TaskCancelled)]
        await self.emitter.emit(kept)


def never_tells_workers(app: Any) -> None:
    """Cancel and time out tasks without telling their workers' sockets."""
    joblib: JobLib = app.joblib
    joblib.emitter = WithoutCancelNotices(joblib.emitter)


@contextmanager
def broken_server(flaw: Flaw | None, tmp_path: Path) -> Iterator[ServerTarget]:
    """Our standalone app on SQLite with `flaw` applied, in a thread."""
    settings = StandaloneSettings(
        database_url=f"sqlite:///{tmp_path / 'broken.db'}",
        socketio_ping_interval_seconds=1,
        socketio_ping_timeout_seconds=1,
        joblib=make_settings(),
    )
    app = create_app(settings, TokenAuth(TOKENS))
    if flaw is not None:
        flaw(app)
    with serve_in_thread(app) as server:
        yield ServerTarget(
            server.url, ADMIN, ALICE, BOB, timeout=5, disconnect_within=1.0
        )
