"""Shared fixtures: both databases, an in-process server, and a live uvicorn server.

Every server test runs on SQLite and on PostgreSQL (127.0.0.1:5432, a fresh database
per test run, emptied between tests). Locally the PostgreSQL runs are skipped with a
message when no server answers; CI sets JOBLIB_TEST_REQUIRE_SERVICES=1 to fail instead.

Fixtures only: the helpers they use, and that tests import, live in `tests.support`.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from joblib_server import Database, JobLib, RecordingEmitter, Settings, TokenAuth
from tests.support.rest import ClientFactory
from tests.support.servers import LiveServer, make_settings, serve_in_thread
from tests.support.services import (
    PG_ADMIN_URL,
    empty_postgres,
    pg_exec,
    service_missing,
)
from tests.support.tokens import ADMIN, ALICE, BOB, TOKENS, bearer


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, with joblib's tables."""
    name = f"joblib_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        asyncio.run(pg_exec(PG_ADMIN_URL, f'CREATE DATABASE "{name}"'))
    except (TimeoutError, OSError) as exc:
        service_missing(f"PostgreSQL at {PG_ADMIN_URL} ({exc})")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"

    async def create() -> None:
        database = Database.from_url(url)
        await database.create_tables()
        await database.dispose()

    asyncio.run(create())
    yield url
    asyncio.run(pg_exec(PG_ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty joblib database: an SQLite file, or the PostgreSQL one."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'joblib.db'}"
    url: str = request.getfixturevalue("postgres_url")
    empty_postgres(url)
    return url


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture
def emitter() -> RecordingEmitter:
    return RecordingEmitter()


@pytest.fixture
async def joblib(
    database_url: str, settings: Settings, emitter: RecordingEmitter
) -> AsyncIterator[JobLib]:
    """An in-process JobLib on the test database, with its lifespan entered."""
    database = Database.from_url(database_url)
    joblib = JobLib(
        database=database,
        auth=TokenAuth(TOKENS),
        settings=settings,
        emitter=emitter,
        sweeper=False,
    )
    async with joblib.lifespan():
        yield joblib


@pytest.fixture
async def make_client(joblib: JobLib) -> AsyncIterator[ClientFactory]:
    """Build httpx clients that talk to the in-process app, as a given token."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    app = Starlette(routes=[Mount("/v1/joblib", app=joblib.asgi_app())])
    clients: list[httpx.AsyncClient] = []

    def factory(token: str | None = ALICE) -> httpx.AsyncClient:
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://testserver/v1/joblib",
            headers=bearer(token),
        )
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.aclose()


@pytest.fixture
async def alice(make_client: ClientFactory) -> httpx.AsyncClient:
    return make_client(ALICE)


@pytest.fixture
async def bob(make_client: ClientFactory) -> httpx.AsyncClient:
    return make_client(BOB)


@pytest.fixture
async def admin(make_client: ClientFactory) -> httpx.AsyncClient:
    return make_client(ADMIN)


@pytest.fixture
def live_server(database_url: str, settings: Settings) -> Iterator[LiveServer]:
    """The standalone app (REST and Socket.IO) on a loopback port."""
    from joblib_server import StandaloneSettings, create_app

    standalone = StandaloneSettings(
        database_url=database_url,
        socketio_ping_interval_seconds=1,
        socketio_ping_timeout_seconds=1,
        joblib=settings,
    )
    app = create_app(standalone, TokenAuth(TOKENS))
    with serve_in_thread(app) as server:
        yield server
