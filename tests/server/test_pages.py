"""Lists stay cheap however long they are: an offset cap, bounded counts, slow reads
off the event loop."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa

from joblib_server import JobLib, Settings
from joblib_server.tables import JOB_TABLE, TASK_TABLE, utcnow
from tests.support.rest import ROOM, assert_problem, serving_job
from tests.support.servers import make_settings

pytestmark = pytest.mark.anyio

MAX_OFFSET = 3
COUNT_LIMIT = MAX_OFFSET + 500


@pytest.fixture
def settings() -> Settings:
    return make_settings(max_list_offset=MAX_OFFSET)


async def _seed(joblib: JobLib, job_name: str, count: int) -> None:
    """`count` pending tasks of the job, straight into the table (as bench/seed.py)."""
    async with joblib.database.write() as session:
        name = job_name.rsplit(":", 1)[1]
        job_id = (
            await session.execute(
                sa.select(JOB_TABLE.c.id).where(JOB_TABLE.c.name == name)
            )
        ).scalar_one()
        now = utcnow()
        rows = [
            {
                "id": uuid.uuid4(),
                "job_id": job_id,
                "room_id": ROOM,
                "submitted_by": "bob",
                "status": "pending",
                "payload": {},
                "seq": index + 1,
                "created_at": now + timedelta(microseconds=index),
            }
            for index in range(count)
        ]
        await session.execute(sa.insert(TASK_TABLE), rows)


async def test_an_offset_beyond_the_cap_is_422_and_says_what_to_do(
    alice: httpx.AsyncClient,
) -> None:
    await serving_job(alice)
    assert (await alice.get("/rooms/room1/tasks", params={"offset": 3})).is_success
    answer = await alice.get("/rooms/room1/tasks", params={"offset": MAX_OFFSET + 1})
    body = assert_problem(answer, 422, "validation-error")
    assert body["errors"][0]["loc"] == ["offset"]
    assert "at most 3" in body["detail"]
    assert "?status=" in body["detail"]
    huge = await alice.get("/rooms/room1/tasks", params={"offset": 2**70})
    assert_problem(huge, 422, "validation-error")


async def test_a_count_stops_at_the_last_item_a_client_can_page_to(
    joblib: JobLib, alice: httpx.AsyncClient
) -> None:
    _, job_name = await serving_job(alice)
    await _seed(joblib, job_name, COUNT_LIMIT + 7)

    for path in ("/rooms/room1/tasks", f"/rooms/room1/jobs/{job_name}/tasks"):
        page = (await alice.get(path, params={"limit": 500})).json()
        assert (page["total"], len(page["items"])) == (COUNT_LIMIT, 500)
        last = await alice.get(path, params={"limit": 500, "offset": MAX_OFFSET})
        assert len(last.json()["items"]) == 500
    pending = await alice.get("/rooms/room1/tasks", params={"status": "pending"})
    assert pending.json()["total"] == COUNT_LIMIT
    failed = await alice.get("/rooms/room1/tasks", params={"status": "failed"})
    assert failed.json()["total"] == 0


async def test_a_short_list_counts_exactly(alice: httpx.AsyncClient) -> None:
    await serving_job(alice)
    await serving_job(alice, name="Scale")
    page = (await alice.get("/rooms/room1/jobs")).json()
    assert page["total"] == 2
    assert (await alice.get("/workers")).json()["total"] == 2


async def _thread_of_a_statement(joblib: JobLib, *, slow: bool) -> int:
    async with joblib.database.read(slow=slow) as session:
        connection = await session.connection()
        raw = await connection.get_raw_connection()
        await raw.driver_connection.create_function(  # type: ignore[union-attr]
            "joblib_test_thread", 0, threading.get_ident
        )
        thread: int = (
            await session.execute(sa.text("SELECT joblib_test_thread()"))
        ).scalar_one()
        return thread


async def test_slow_sqlite_reads_run_off_the_event_loop(
    joblib: JobLib, database_url: str
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("asyncpg never runs a statement on the event loop's thread")
    loop_thread = threading.get_ident()
    assert await _thread_of_a_statement(joblib, slow=False) == loop_thread
    assert await _thread_of_a_statement(joblib, slow=True) != loop_thread
    # The connection goes back to the pool and serves the loop again.
    assert await _thread_of_a_statement(joblib, slow=False) == loop_thread
