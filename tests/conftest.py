"""Shared fixtures: both databases, an in-process server, and a live uvicorn server.

Every server test runs on SQLite and on PostgreSQL (127.0.0.1:5432, a fresh database
per test run, emptied between tests). Locally the PostgreSQL runs are skipped with a
message when no server answers; CI sets JOBLIB_TEST_REQUIRE_SERVICES=1 to fail instead.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from joblib_server import Database, JobLib, RecordingEmitter, Settings, TokenAuth
from joblib_server.auth import Identity

PG_ADMIN_URL = os.environ.get(
    "JOBLIB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("JOBLIB_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRE_SERVICES = os.environ.get("JOBLIB_TEST_REQUIRE_SERVICES") == "1"

ADMIN = "admin-token"
ALICE = "alice-token"
BOB = "bob-token"
TOKENS = {
    ADMIN: Identity("admin", is_admin=True),
    ALICE: Identity("alice"),
    BOB: Identity("bob"),
}
TOKENS_JSON = (
    '{"admin-token": {"id": "admin", "admin": true}, '
    '"alice-token": {"id": "alice"}, "bob-token": {"id": "bob"}}'
)


def _service_missing(what: str) -> None:
    message = f"{what} is not reachable; skipping (CI requires it)"
    if REQUIRE_SERVICES:
        pytest.fail(message)
    pytest.skip(message)


async def _pg_exec(url: str, *statements: str) -> None:
    import asyncpg

    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, with joblib's tables."""
    name = f"joblib_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        asyncio.run(_pg_exec(PG_ADMIN_URL, f'CREATE DATABASE "{name}"'))
    except (TimeoutError, OSError) as exc:
        _service_missing(f"PostgreSQL at {PG_ADMIN_URL} ({exc})")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"

    async def create() -> None:
        database = Database.from_url(url)
        await database.create_tables()
        await database.dispose()

    asyncio.run(create())
    yield url
    asyncio.run(
        _pg_exec(PG_ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    )


def _empty_postgres(url: str) -> None:
    asyncio.run(
        _pg_exec(
            url,
            "TRUNCATE joblib_task, joblib_worker_job, joblib_worker, joblib_job",
        )
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty joblib database: an SQLite file, or the PostgreSQL one."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'joblib.db'}"
    url: str = request.getfixturevalue("postgres_url")
    _empty_postgres(url)
    return url


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_settings(**overrides: Any) -> Settings:
    """Settings with test-friendly timeouts."""
    values: dict[str, Any] = {
        "long_poll_max_wait_seconds": 5,
        "long_poll_recheck_seconds": 1,
        "socketio_ping_interval_seconds": 1,
        "socketio_ping_timeout_seconds": 1,
    }
    values.update(overrides)
    return Settings(**values)


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


ClientFactory = Callable[..., httpx.AsyncClient]


@pytest.fixture
async def make_client(joblib: JobLib) -> AsyncIterator[ClientFactory]:
    """Build httpx clients that talk to the in-process app, as a given token."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    app = Starlette(routes=[Mount("/v1/joblib", app=joblib.asgi_app())])
    clients: list[httpx.AsyncClient] = []

    def factory(token: str | None = ALICE) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://testserver/v1/joblib",
            headers=headers,
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


# live server -----------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LiveServer:
    """A uvicorn server running the standalone app in a thread."""

    url: str
    app: Any

    @property
    def api(self) -> str:
        return f"{self.url}/v1/joblib"


@contextmanager
def serve_in_thread(app: Any) -> Iterator[LiveServer]:
    """Run `app` under uvicorn on a loopback port for the duration of the block."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", ws="wsproto", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield LiveServer(url=f"http://127.0.0.1:{port}", app=app)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@pytest.fixture
def live_server(database_url: str, settings: Settings) -> Iterator[LiveServer]:
    """The standalone app (REST and Socket.IO) on a loopback port."""
    from joblib_server import create_app

    app = create_app(settings.model_copy(update={"database_url": database_url}),
                     TokenAuth(TOKENS))  # fmt: skip
    with serve_in_thread(app) as server:
        yield server


def count_rows(database_url: str, table: str) -> int:
    """Count a table's rows through a fresh engine (for checks from sync tests)."""

    async def count() -> int:
        database = Database.from_url(database_url)
        try:
            async with database.read() as session:
                result = await session.execute(sa.text(f"SELECT count(*) FROM {table}"))
                return int(result.scalar_one())
        finally:
            await database.dispose()

    return asyncio.run(count())
