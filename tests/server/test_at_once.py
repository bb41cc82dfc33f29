"""Claims and worker reports as one autocommitted statement on PostgreSQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import asyncpg
import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from joblib_server import JobLib
from joblib_server.wakebus import CHANNEL
from tests.support.rest import (
    ClientFactory,
    claim,
    create_worker,
    full_name,
    register,
    serving_job,
    submit,
    update,
)
from tests.support.tokens import ALICE, BOB

pytestmark = pytest.mark.anyio


@contextmanager
def round_trips(engine: AsyncEngine) -> Iterator[list[tuple[str, bool]]]:
    """Each statement `engine` ran in the block, and whether it ran in a transaction.

    A statement outside a transaction went without BEGIN and COMMIT: asyncpg
    starts one only for a connection that is not in autocommit.
    """
    ran: list[tuple[str, bool]] = []

    def record(connection: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        driver = connection.connection.driver_connection
        ran.append((statement, driver.is_in_transaction()))

    sa.event.listen(engine.sync_engine, "after_cursor_execute", record)
    try:
        yield ran
    finally:
        sa.event.remove(engine.sync_engine, "after_cursor_execute", record)


def _postgres_only(joblib: JobLib) -> None:
    if joblib.database.backend.name != "postgresql":
        pytest.skip("SQLite writes in transactions only")


async def test_a_claim_and_start_is_one_statement_without_a_transaction(
    make_client: ClientFactory, joblib: JobLib
) -> None:
    _postgres_only(joblib)
    alice = make_client(ALICE)
    worker_id, job_name = await serving_job(alice)
    submitted = await submit(alice, job_name)
    with round_trips(joblib.database.engine) as ran:
        task = await claim(alice, worker_id, start=True, request_id="r-1")
    assert task is not None
    assert task["id"] == submitted["id"]
    assert task["status"] == "running"
    assert task["started_at"] is not None
    assert [in_transaction for _, in_transaction in ran] == [False]
    # Sent again under the same request id: the same task (the transactional
    # operation answers that one).
    again = await claim(alice, worker_id, start=True, request_id="r-1")
    assert again is not None
    assert again["id"] == submitted["id"]


async def test_a_completion_is_one_statement_that_also_notifies(
    make_client: ClientFactory, joblib: JobLib
) -> None:
    _postgres_only(joblib)
    alice = make_client(ALICE)
    worker_id, job_name = await serving_job(alice)
    submitted = await submit(alice, job_name)
    task = await claim(alice, worker_id, start=True)
    assert task is not None
    heard: list[dict[str, Any]] = []
    arrived = anyio.Event()

    def hear(*args: Any) -> None:
        heard.append(json.loads(args[3]))
        arrived.set()

    listener = await asyncpg.connect(
        joblib.database.engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False
        )
    )
    try:
        await listener.add_listener(CHANNEL, hear)
        with round_trips(joblib.database.engine) as ran:
            done = await alice.patch(
                f"/tasks/{task['id']}",
                json={"status": "completed", "worker_id": worker_id, "result": [1]},
            )
        assert done.status_code == 200, done.text
        assert done.json()["result"] == [1]
        assert [in_transaction for _, in_transaction in ran] == [False]
        with anyio.fail_after(5):
            await arrived.wait()
    finally:
        await listener.close()
    # One NOTIFY, from the statement: the funnel did not send a second one.
    await anyio.sleep(0.1)
    assert [message["t"] for message in heard] == [[submitted["id"]]]


async def test_refused_reports_and_claims_answer_as_before(
    make_client: ClientFactory, joblib: JobLib
) -> None:
    alice, bob = make_client(ALICE), make_client(BOB)
    worker_id, job_name = await serving_job(alice)
    await submit(alice, job_name)
    task = await claim(alice, worker_id)
    assert task is not None
    # Completing a task that was only claimed: 409 invalid transition.
    answer = await alice.patch(
        f"/tasks/{task['id']}", json={"status": "completed", "worker_id": worker_id}
    )
    assert answer.status_code == 409, answer.text
    # Another worker of the same identity reports it: 409 task-worker-mismatch.
    other = await create_worker(alice)
    answer = await alice.patch(
        f"/tasks/{task['id']}", json={"status": "running", "worker_id": other}
    )
    assert answer.status_code == 409, answer.text
    # Someone else's worker claims: 403; an unknown one: 404.
    answer = await bob.post("/tasks/claim", json={"worker_id": worker_id})
    assert answer.status_code == 403, answer.text
    answer = await alice.post("/tasks/claim", json={"worker_id": str(uuid.uuid4())})
    assert answer.status_code == 404, answer.text
    # Nothing of that changed the task.
    await update(alice, task["id"], "running")
    await update(alice, task["id"], "completed")


async def test_a_claim_passes_over_a_job_whose_tasks_are_being_taken(
    make_client: ClientFactory, joblib: JobLib
) -> None:
    _postgres_only(joblib)
    alice = make_client(ALICE)
    worker_id, first_job = await serving_job(alice, name="First")
    second_job = full_name(name="Second")
    await register(alice, name="Second", worker_id=worker_id)
    older = await submit(alice, first_job)
    newer = await submit(alice, second_job)
    url = joblib.database.engine.url.set(drivername="postgresql")
    other = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        # Another claimer holds the older task's row lock.
        transaction = other.transaction()
        await transaction.start()
        await other.execute(
            "SELECT id FROM joblib_task WHERE id = $1 FOR UPDATE",
            uuid.UUID(older["id"]),
        )
        task = await claim(alice, worker_id)
        assert task is not None
        assert task["id"] == newer["id"]
        # Only the locked task is left: nothing to claim for now.
        assert await claim(alice, worker_id) is None
        await transaction.rollback()
    finally:
        await other.close()
    task = await claim(alice, worker_id)
    assert task is not None
    assert task["id"] == older["id"]


async def test_many_claimers_take_each_task_once(
    make_client: ClientFactory, joblib: JobLib
) -> None:
    alice = make_client(ALICE)
    worker_id, job_name = await serving_job(alice)
    workers = [worker_id]
    for _ in range(7):
        answer = await register(alice, expect=200)
        workers.append(str(answer["worker_id"]))
    submitted = {(await submit(alice, job_name))["id"] for _ in range(30)}
    taken: list[str] = []

    async def drain(client: httpx.AsyncClient, worker: str) -> None:
        while (task := await claim(client, worker, start=True)) is not None:
            taken.append(task["id"])
            await update(client, task["id"], "completed")

    async with anyio.create_task_group() as group:
        for worker in workers:
            group.start_soon(drain, make_client(ALICE), worker)
    assert sorted(taken) == sorted(submitted)


async def test_a_progress_report_is_one_statement(
    make_client: ClientFactory, joblib: JobLib
) -> None:
    alice = make_client(ALICE)
    worker_id, job_name = await serving_job(alice)
    await submit(alice, job_name)
    task = await claim(alice, worker_id)
    assert task is not None
    body = {"current": 1, "total": 4, "worker_id": worker_id}
    # Claimed, not running yet: refused, as the transactional operation says.
    answer = await alice.put(f"/tasks/{task['id']}/progress", json=body)
    assert answer.status_code == 409, answer.text
    await update(alice, task["id"], "running")
    if joblib.database.backend.name == "postgresql":
        with round_trips(joblib.database.engine) as ran:
            answer = await alice.put(f"/tasks/{task['id']}/progress", json=body)
        assert [in_transaction for _, in_transaction in ran] == [False]
    else:
        answer = await alice.put(f"/tasks/{task['id']}/progress", json=body)
    assert answer.status_code == 204, answer.text
    stored = await alice.get(f"/tasks/{task['id']}")
    assert stored.json()["progress"]["current"] == 1
