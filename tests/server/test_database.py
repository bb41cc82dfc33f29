"""Database connections: pools the server cut, engines a host owns, and a database
that cannot be used (503 with Retry-After, never a 500)."""

from __future__ import annotations

import sqlite3

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from joblib_server import Database, JobLib, TokenAuth, create_engine
from joblib_server.backends import PostgresBackend, SqliteBackend
from tests.support.rest import assert_problem
from tests.support.services import pg_exec as _pg_exec
from tests.support.tokens import ALICE, TOKENS, bearer

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_pooled_connection_cut_while_idle_is_replaced(
    database_url: str,
    joblib: JobLib,
    alice: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PostgreSQL restarted or an idle timeout hit: the next requests still work."""
    assert (await alice.post("/workers")).status_code == 201
    assert (await alice.get("/workers")).status_code == 200
    # Every pooled connection now counts as idle long enough to be checked.
    monkeypatch.setattr(PostgresBackend, "PING_AFTER_IDLE_SECONDS", 0.0)
    name = database_url.rsplit("/", 1)[1]
    await _pg_exec(
        database_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        f" WHERE datname = '{name}' AND pid <> pg_backend_pid()",
    )
    created = await alice.post("/workers")
    assert created.status_code == 201, created.text
    listed = await alice.get("/workers")
    assert listed.status_code == 200, listed.text
    assert listed.json()["total"] == 2


async def test_an_engine_the_host_passed_in_stays_open(database_url: str) -> None:
    """A host's engine serves the host after joblib's lifespan ends; ours is closed."""
    engine = create_engine(database_url)
    hosted = JobLib(database=Database(engine), auth=TokenAuth(TOKENS), sweeper=False)
    async with hosted.lifespan():
        pass
    # The pool kept the connection the lifespan used: nobody disposed of it.
    assert engine.pool.checkedin() >= 1  # type: ignore[attr-defined]
    await engine.dispose()

    owned = Database.from_url(database_url)
    ours = JobLib(database=owned, auth=TokenAuth(TOKENS), sweeper=False)
    async with ours.lifespan():
        pass
    assert owned.engine.pool.checkedin() == 0  # type: ignore[attr-defined]


def _app_client(joblib: JobLib) -> httpx.AsyncClient:
    app = Starlette(routes=[Mount("/v1/joblib", app=joblib.asgi_app())])
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver/v1/joblib",
        headers=bearer(ALICE),
    )


def _assert_unavailable(answer: httpx.Response) -> None:
    assert_problem(answer, 503, "database-unavailable")
    assert answer.headers["retry-after"] == "2"


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("postgresql://postgres@127.0.0.1:1/joblib", id="postgresql"),
        pytest.param("sqlite:////nonexistent/joblib/joblib.db", id="sqlite"),
    ],
)
async def test_a_database_that_cannot_be_reached_is_503_with_retry_after(
    url: str,
) -> None:
    joblib = JobLib(database=Database.from_url(url), auth=TokenAuth(TOKENS))
    async with _app_client(joblib) as client:
        _assert_unavailable(await client.get("/workers"))  # a read
        _assert_unavailable(await client.post("/workers"))  # a change
    await joblib.database.dispose()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_terminated_backends_are_503_and_never_poison_the_pool(
    database_url: str, joblib: JobLib, alice: httpx.AsyncClient
) -> None:
    name = database_url.rsplit("/", 1)[1]
    terminate = (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        f" WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    )
    assert (await alice.post("/workers")).status_code == 201
    await _pg_exec(database_url, terminate)
    # The first request to draw a dead pooled connection learns of it.
    _assert_unavailable(await alice.get("/workers"))
    assert (await alice.get("/workers")).status_code == 200

    # Now while requests run: each answers or is a 503, never a 500.
    answers: list[httpx.Response] = []

    async def client() -> None:
        for _ in range(15):
            answers.append(await alice.post("/workers"))
            answers.append(await alice.get("/workers", params={"limit": 1}))

    async with anyio.create_task_group() as group:
        for _ in range(8):
            group.start_soon(client)
        for _ in range(5):
            await _pg_exec(database_url, terminate)
    assert {a.status_code for a in answers} <= {200, 201, 503}
    for answer in answers:
        if answer.status_code == 503:
            _assert_unavailable(answer)
    # Every connection in the pool works again: nothing "in progress" left over.
    for _ in range(40):
        assert (await alice.get("/workers", params={"limit": 1})).status_code == 200


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_an_sqlite_database_locked_past_every_wait_is_503(
    database_url: str,
    joblib: JobLib,
    alice: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(SqliteBackend, "WRITE_WAIT_SECONDS", 0.05)
    holder = sqlite3.connect(database_url.removeprefix("sqlite:///"))
    try:
        holder.execute("BEGIN EXCLUSIVE")  # another process writing, and writing
        _assert_unavailable(await alice.post("/workers"))
        assert (await alice.get("/workers")).status_code == 200  # reads go on
    finally:
        holder.rollback()
        holder.close()
    assert (await alice.post("/workers")).status_code == 201
