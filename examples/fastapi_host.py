"""A FastAPI host app with joblib mounted: `python examples/fastapi_host.py`.

Same as starlette_host.py, in FastAPI (FastAPI is only an example dependency):
joblib's routes mounted at `/v1/joblib`, its lifespan entered from FastAPI's, the
host's own signed tokens, and Socket.IO wrapped around the app.
`python examples/fastapi_host.py --print-token alice` prints a token for alice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import socketio
from fastapi import FastAPI
from host_common import build_joblib, run


def build_app(database_url: str) -> socketio.ASGIApp:
    """The FastAPI host: its own endpoint plus joblib, wrapped by Socket.IO."""
    joblib, sio = build_joblib(database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with joblib.lifespan():
            yield

    api = FastAPI(lifespan=lifespan)

    @api.get("/")
    async def home() -> dict[str, str]:
        return {"app": "fastapi host", "joblib": "/v1/joblib"}

    api.mount("/v1/joblib", joblib.asgi_app())
    return socketio.ASGIApp(sio, other_asgi_app=api)


if __name__ == "__main__":
    run(build_app, port=8002, database="fastapi_host.db")
