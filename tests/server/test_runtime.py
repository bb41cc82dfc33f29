"""`JobLib.execute`: every change is retried, committed, then followed by its work.

The after-commit work is the same whoever calls: a REST route, the Socket.IO
disconnect handler, or the sweeper. These tests drive the latter two as the server
does and check that held claims are released and failed writes retried.
"""

from __future__ import annotations

import logging
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import httpx
import pytest
import socketio
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from joblib_protocol import JobsInvalidate
from joblib_server import (
    JobLib,
    Outcome,
    Realtime,
    RecordingEmitter,
    Settings,
    SqliteBackend,
    Worker,
    sweep_once,
)
from joblib_server.auth import Identity
from joblib_server.tables import utcnow
from joblib_server.views import jobs_invalidate
from tests.support import aeventually
from tests.support.rest import held_claim, serving_job
from tests.support.servers import make_settings

pytestmark = pytest.mark.anyio

# A held claim re-checks only after this long, and waits at most this long: an
# answer well before either came from the release, not from a re-check.
RECHECK = 60
CAP = 30


@pytest.fixture
def settings() -> Settings:
    return make_settings(
        long_poll_max_wait_seconds=CAP, long_poll_recheck_seconds=RECHECK
    )


async def _release_while_held(
    joblib: JobLib, client: httpx.AsyncClient, worker_id: str, remove: object
) -> httpx.Response:
    """Hold a claim of `worker_id`, run `remove()`, and return the claim's answer."""
    answers: list[httpx.Response] = []
    with anyio.fail_after(RECHECK / 2):
        async with anyio.create_task_group() as group:
            group.start_soon(held_claim, client, worker_id, answers, CAP)
            await aeventually(lambda: len(joblib.claims) == 1, what="a held claim")
            await remove()  # type: ignore[operator]
    [answer] = answers
    return answer


async def test_the_socket_disconnect_cleanup_releases_held_claims(
    alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    worker_id, _ = await serving_job(alice)
    realtime = Realtime(joblib, socketio.AsyncServer(async_mode="asgi"))
    realtime.accept("sid-1", Identity("alice"))
    realtime.connections["sid-1"].workers[uuid.UUID(worker_id)] = 0

    async def disconnect() -> None:
        await realtime.cleanup_connection("sid-1")

    answer = await _release_while_held(joblib, alice, worker_id, disconnect)
    assert answer.status_code == 404, answer.text
    assert len(joblib.claims) == 0


async def test_the_sweeper_releases_held_claims(
    alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    worker_id, _ = await serving_job(alice)
    joblib.settings = joblib.settings.model_copy(update={"worker_timeout_seconds": 1})

    async def sweep() -> None:
        async with joblib.database.write() as session:
            worker = await session.get_one(Worker, uuid.UUID(worker_id))
            worker.last_heartbeat = utcnow().replace(year=2000)
        swept = await sweep_once(joblib)
        assert [r.worker_id for r in swept.workers] == [uuid.UUID(worker_id)]

    answer = await _release_while_held(joblib, alice, worker_id, sweep)
    assert answer.status_code == 404, answer.text


async def _invalidate(session: AsyncSession, room: str) -> Outcome[str]:
    """A trivial change: one statement, and one event to publish."""
    await session.execute(sa.select(sa.func.count()).select_from(Worker))
    return Outcome(room, {jobs_invalidate(room)})


@contextmanager
def _on_log(message: str, action: object) -> Iterator[list[str]]:
    """Call `action()` when the server logs a line containing `message`."""
    seen: list[str] = []

    class Hook(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if message in record.getMessage():
                seen.append(record.getMessage())
                action()  # type: ignore[operator]

    logger = logging.getLogger("joblib_server")
    hook = Hook(logging.DEBUG)
    level = logger.level
    logger.addHandler(hook)
    logger.setLevel(logging.DEBUG)
    try:
        yield seen
    finally:
        logger.removeHandler(hook)
        logger.setLevel(level)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_write_locked_out_by_another_process_is_retried(
    joblib: JobLib,
    emitter: RecordingEmitter,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(SqliteBackend, "WRITE_WAIT_SECONDS", 0.05)
    # Another process's writer holds SQLite's write lock past every wait...
    other = sqlite3.connect(str(make_url(database_url).database), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    # ...and lets go once our write has failed for it.
    with _on_log("retrying a write", other.commit) as retries:
        room = await joblib.execute(_invalidate, "room1")
    other.close()
    assert room == "room1"
    assert len(retries) == 1
    assert emitter.sent == [jobs_invalidate("room1")]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_serialization_failure_is_retried(
    joblib: JobLib, emitter: RecordingEmitter
) -> None:
    attempts = 0

    async def conflicting(session: AsyncSession) -> Outcome[int]:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            # The error PostgreSQL itself raises when serializable transactions
            # collide; the transaction did nothing and may run again.
            await session.execute(
                sa.text(
                    "DO $$ BEGIN RAISE EXCEPTION 'conflict' "
                    "USING ERRCODE = '40001'; END $$"
                )
            )
        return Outcome(attempts, {jobs_invalidate("room1")})

    assert await joblib.execute(conflicting) == 2
    assert emitter.sent == [jobs_invalidate("room1")]


async def test_a_failed_change_is_not_retried_and_publishes_nothing(
    alice: httpx.AsyncClient, joblib: JobLib, emitter: RecordingEmitter
) -> None:
    worker_id, _ = await serving_job(alice)
    emitter.clear()
    attempts = 0

    async def duplicate(session: AsyncSession) -> Outcome[None]:
        nonlocal attempts
        attempts += 1
        session.add(Worker(id=uuid.UUID(worker_id), owner_id="alice"))
        await session.flush()
        return Outcome(None, {jobs_invalidate("room1")})

    with pytest.raises(IntegrityError):
        await joblib.execute(duplicate)
    assert attempts == 1
    assert emitter.sent == []


async def test_a_committed_change_is_published_even_if_its_caller_is_cancelled(
    joblib: JobLib,
) -> None:
    arrived = anyio.Event()
    release = anyio.Event()

    class SlowEmitter(RecordingEmitter):
        async def emit(self, emissions: object) -> None:
            arrived.set()
            await release.wait()
            await super().emit(emissions)  # type: ignore[arg-type]

    joblib.emitter = slow = SlowEmitter()
    async with anyio.create_task_group() as group:
        group.start_soon(joblib.execute, _invalidate, "room1")
        await arrived.wait()
        group.cancel_scope.cancel()
        release.set()
    assert [e.event for e in slow.sent] == [JobsInvalidate()]
