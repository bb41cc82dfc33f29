"""`/healthz` and `/readyz`: no token, and a quick 503 naming what is wrong."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from joblib_protocol import PROBLEM_CONTENT_TYPE
from joblib_server import Database, JobLib, TokenAuth
from joblib_server.health import health_routes
from joblib_server.schema import head_revision, upgrade_schema
from tests.support.servers import LiveServer, free_port
from tests.support.services import PG_ADMIN_URL, pg_exec
from tests.support.tokens import TOKENS

pytestmark = pytest.mark.anyio


def _client(joblib: JobLib, ready_timeout: float = 2.0) -> httpx.AsyncClient:
    app = Starlette(routes=health_routes(joblib, ready_timeout=ready_timeout))
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    )


@pytest.fixture
async def probe(joblib: JobLib) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the health routes of the test's JobLib, without a token."""
    async with _client(joblib) as client:
        yield client


@pytest.fixture
def fresh_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """A database of the test's kind with no tables at all (dropped afterwards)."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    name = f"joblib_health_{uuid.uuid4().hex[:10]}"
    asyncio.run(pg_exec(PG_ADMIN_URL, f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
        asyncio.run(pg_exec(PG_ADMIN_URL, drop))


@pytest.fixture
def down_url(database_url: str, tmp_path: Path) -> str:
    """A database of the test's kind that cannot be opened: nothing is there."""
    if database_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'no-such-directory' / 'joblib.db'}"
    return f"postgresql://postgres@127.0.0.1:{free_port()}/joblib"


async def _joblib_at(url: str) -> JobLib:
    # No lifespan: it would create or upgrade the schema these tests want wrong.
    return JobLib(
        database=Database.from_url(url), auth=TokenAuth(TOKENS), sweeper=False
    )


async def test_healthz_answers_ok_without_a_token(probe: httpx.AsyncClient) -> None:
    answer = await probe.get("/healthz")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}


async def test_readyz_answers_ok_when_the_database_answers_at_the_newest_schema(
    probe: httpx.AsyncClient,
) -> None:
    answer = await probe.get("/readyz")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "ok", "revision": head_revision()}


async def test_readyz_is_503_while_the_server_shuts_down(
    joblib: JobLib, probe: httpx.AsyncClient
) -> None:
    await joblib.begin_shutdown()
    answer = await probe.get("/readyz")
    assert answer.status_code == 503
    assert answer.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert "shutting down" in answer.json()["detail"]
    # Alive all the same: the process answers.
    assert (await probe.get("/healthz")).status_code == 200


async def test_readyz_is_503_quickly_when_the_database_cannot_be_reached(
    down_url: str,
) -> None:
    joblib = await _joblib_at(down_url)
    try:
        async with _client(joblib) as probe:
            started = time.monotonic()
            answer = await probe.get("/readyz")
            took = time.monotonic() - started
            healthz = await probe.get("/healthz")
    finally:
        await joblib.database.dispose()
    assert answer.status_code == 503
    assert answer.headers["content-type"] == PROBLEM_CONTENT_TYPE
    body = answer.json()
    assert body["type"] == "/v1/problems/database-unavailable"
    assert body["checks"] == {"database": "unreachable"}
    assert answer.headers["retry-after"]
    assert took < 2
    assert healthz.status_code == 200


async def test_readyz_is_503_when_the_schema_is_behind(fresh_url: str) -> None:
    joblib = await _joblib_at(fresh_url)
    try:
        async with _client(joblib) as probe:
            empty = await probe.get("/readyz")
            await upgrade_schema(joblib.database.engine, "0004")
            behind = await probe.get("/readyz")
            await upgrade_schema(joblib.database.engine)
            current = await probe.get("/readyz")
    finally:
        await joblib.database.dispose()
    head = head_revision()
    assert empty.status_code == 503
    assert empty.json()["checks"] == {"database": "ok", "schema": "none"}
    assert behind.status_code == 503
    assert behind.headers["content-type"] == PROBLEM_CONTENT_TYPE
    detail = behind.json()["detail"]
    assert "revision 0004" in detail
    assert f"needs {head}" in detail
    assert "joblib-server db upgrade" in detail
    assert behind.json()["checks"] == {"database": "ok", "schema": "0004"}
    assert current.status_code == 200


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_readyz_does_not_hang_on_a_database_that_never_answers(
    database_url: str, silent_port: int
) -> None:
    # Only a database across a network can hang like this; the parameter keeps
    # the test among the PostgreSQL ones (and skipped without PostgreSQL).
    joblib = await _joblib_at(f"postgresql://postgres@127.0.0.1:{silent_port}/x")
    try:
        async with _client(joblib, ready_timeout=0.5) as probe:
            started = time.monotonic()
            answer = await probe.get("/readyz")
            took = time.monotonic() - started
    finally:
        await joblib.database.dispose()
    assert answer.status_code == 503
    assert answer.json()["type"] == "/v1/problems/database-unavailable"
    assert answer.json()["checks"] == {"database": "timeout"}
    assert "0.5 s" in answer.json()["detail"]
    assert 0.4 < took < 2


def test_the_standalone_server_serves_them_at_the_root(
    live_server: LiveServer,
) -> None:
    assert httpx.get(f"{live_server.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{live_server.url}/readyz")
    assert ready.status_code == 200, ready.text
