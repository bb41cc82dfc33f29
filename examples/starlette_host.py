"""A Starlette host app with joblib mounted: `python examples/starlette_host.py`.

It serves its own page at `/`, joblib's REST API at `/v1/joblib` and Socket.IO at
`/socket.io`, authenticates with its own signed tokens (host_common.py), and runs the
joblib lifespan (tables, sweeper) from its own lifespan.
`python examples/starlette_host.py --print-token alice` prints a token for alice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import socketio
from host_common import build_joblib, run
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route


def build_app(database_url: str) -> socketio.ASGIApp:
    """The host app: its own routes plus joblib's, wrapped by Socket.IO."""
    joblib, sio = build_joblib(database_url)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Starlette does not run a mounted app's lifespan: the host enters it.
        async with joblib.lifespan():
            yield

    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("host app with joblib at /v1/joblib\n")

    host = Starlette(
        routes=[Route("/", home), Mount("/v1/joblib", app=joblib.asgi_app())],
        lifespan=lifespan,
    )
    return socketio.ASGIApp(sio, other_asgi_app=host)


if __name__ == "__main__":
    run(build_app, port=8001, database="starlette_host.db")
