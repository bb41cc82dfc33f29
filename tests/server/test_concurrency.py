"""Races between requests: each task claimed once, and no state left inconsistent."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import TypeVar

import anyio
import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from joblib_server import Job, JobLib, Task
from tests.support.rest import (
    ClientFactory,
    claim,
    create_worker,
    full_name,
    register,
    serving_job,
    submit,
)
from tests.support.rows import job_row, recorded_statements, row_counts
from tests.support.tokens import ADMIN, ALICE, BOB
from tests.support.waiting import aeventually

pytestmark = pytest.mark.anyio

TOKENS = (ALICE, BOB, ADMIN)
ResultT = TypeVar("ResultT")


async def _race(*calls: Callable[[], Awaitable[ResultT]]) -> list[ResultT]:
    """Run the calls concurrently; their results in the order given."""
    results: dict[int, ResultT] = {}

    async def run(index: int, call: Callable[[], Awaitable[ResultT]]) -> None:
        results[index] = await call()

    async with anyio.create_task_group() as group:
        for index, call in enumerate(calls):
            group.start_soon(run, index, call)
    return [results[index] for index in range(len(calls))]


async def test_many_workers_claim_each_task_once(
    make_client: ClientFactory, joblib: JobLib
) -> None:
    # The job's owner and an admin run its workers: another identity may not link.
    clients = [make_client((ALICE, ADMIN)[index % 2]) for index in range(8)]
    workers = [(await register(clients[0]))["worker_id"]]
    for client in clients[1:]:
        workers.append((await register(client, expect=200))["worker_id"])
    submitter = make_client(TOKENS[0])
    job_name = full_name()
    submitted = {(await submit(submitter, job_name))["id"] for _ in range(40)}
    claims: dict[str, list[str]] = {}

    async def drain(client: httpx.AsyncClient, worker_id: str) -> None:
        while (task := await claim(client, worker_id, start=True)) is not None:
            claims.setdefault(task["id"], []).append(worker_id)
            assert task["worker_id"] == worker_id

    pairs = zip(clients, workers, strict=True)
    await _race(*(partial(drain, client, worker) for client, worker in pairs))
    assert set(claims) == submitted
    assert all(len(by) == 1 for by in claims.values())
    async with joblib.database.read() as session:
        rows = (await session.execute(select(Task))).scalars().all()
    assert {(str(t.id), str(t.worker_id), t.status) for t in rows} == {
        (task_id, by[0], "running") for task_id, by in claims.items()
    }


async def test_concurrent_submits_get_distinct_queue_positions(
    make_client: ClientFactory,
) -> None:
    _, job_name = await serving_job(make_client(TOKENS[0]))
    clients = [make_client(TOKENS[index % 3]) for index in range(20)]
    tasks = await _race(*(partial(submit, client, job_name) for client in clients))
    assert sorted(task["queue_position"] for task in tasks) == list(range(1, 21))


async def test_cancel_and_claim_race_has_one_winner(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    worker_id, job_name = await serving_job(alice)
    for _ in range(10):
        task = await submit(bob, job_name)
        claimed, cancelled = await _race(
            partial(alice.post, "/tasks/claim", json={"worker_id": worker_id}),
            partial(bob.patch, f"/tasks/{task['id']}", json={"status": "cancelled"}),
        )
        final = (await bob.get(f"/tasks/{task['id']}")).json()
        # The submitter may cancel a claimed task too, so a cancel always wins;
        # the claim wins only when it came first.
        assert cancelled.status_code == 200
        assert final["status"] == "cancelled"
        got = claimed.json()["task"]
        assert got is None or (got["id"], got["status"]) == (task["id"], "claimed")


async def test_last_worker_leaving_while_a_task_arrives(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, joblib: JobLib
) -> None:
    for round_ in range(8):
        name = f"Job{round_}"
        worker_id, job_name = await serving_job(alice, name=name)
        deleted, submitted = await _race(
            partial(alice.delete, f"/workers/{worker_id}"),
            partial(bob.post, f"/rooms/room1/tasks/{job_name}", json={}),
        )
        assert deleted.status_code == 204
        job = await job_row(joblib, name)
        # Either the task came first and holds the job up, or the job was gone.
        if submitted.status_code == 202:
            assert not job.deleted
        else:
            assert submitted.status_code == 404
            assert job.deleted
    await _assert_no_open_task_on_a_hidden_job(joblib)


async def test_register_and_delete_of_the_same_worker_race(
    alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    for round_ in range(8):
        worker_id = await create_worker(alice)
        body = {"category": "modifiers", "name": f"Job{round_}", "worker_id": worker_id}
        registered, deleted = await _race(
            partial(alice.put, "/rooms/room1/jobs", json=body),
            partial(alice.delete, f"/workers/{worker_id}"),
        )
        assert deleted.status_code == 204
        assert registered.status_code in (201, 404), registered.text
    counts = await row_counts(joblib)
    assert (counts["joblib_worker"], counts["joblib_worker_job"]) == (0, 0)
    visible = (await alice.get("/rooms/room1/jobs")).json()
    assert visible["total"] == 0  # no job is left live without a worker


async def _assert_no_open_task_on_a_hidden_job(joblib: JobLib) -> None:
    async with joblib.database.read() as session:
        stranded = await session.execute(
            select(sa.func.count())
            .select_from(Task)
            .join(Job, col(Job.id) == Task.job_id)
            .where(col(Job.deleted).is_(True), Task.status == "pending")
        )
        assert stranded.scalar_one() == 0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_sqlite_write_waits_for_another_process_without_stalling_reads(
    database_url: str, alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    """Another process writing: our write waits its turn, reads go on meanwhile."""
    import sqlite3

    path = sa.engine.make_url(database_url).database
    assert path is not None
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # what a second server process holds mid-write
    held_for = 0.5
    answered: dict[str, float] = {}

    async def create() -> None:
        started = anyio.current_time()
        response = await alice.post("/workers")
        assert response.status_code == 201, response.text
        answered["write"] = anyio.current_time() - started

    def write_waits() -> bool:
        return any("BEGIN IMMEDIATE" in statement for statement in attempted)

    async def read() -> None:
        await aeventually(write_waits, what="the write to wait for the lock")
        response = await alice.get("/workers")
        assert response.status_code == 200, response.text
        answered["read"] = anyio.current_time() - began

    began = anyio.current_time()
    with recorded_statements(joblib.database.engine, attempted=True) as attempted:
        async with anyio.create_task_group() as group:
            group.start_soon(create)
            group.start_soon(read)
            await anyio.sleep(held_for)
            other.execute("COMMIT")
    other.close()
    assert answered["write"] >= held_for - 0.05  # it waited instead of failing
    assert answered["read"] < held_for  # the loop served it while the write waited
    listed = (await alice.get("/workers")).json()
    assert listed["total"] == 1
