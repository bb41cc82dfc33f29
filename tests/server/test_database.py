"""Database connections: pools the server cut, and engines a host owns."""

from __future__ import annotations

import httpx
import pytest

from joblib_server import Database, JobLib, TokenAuth, create_engine
from joblib_server.backends import PostgresBackend
from tests.support.services import pg_exec as _pg_exec
from tests.support.tokens import TOKENS

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
