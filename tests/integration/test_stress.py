"""Sixteen workers drain two thousand tasks through a real uvicorn server.

Most tasks wait in the queue from the start; the rest are submitted over loopback
HTTP while the workers drain it; half the workers hold their claims until a task
comes. Afterwards every row is checked: each task completed once, by the one
worker whose claim got it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta

import anyio
import httpx
import pytest
from sqlmodel import select

from joblib_server import Database, Job, Task
from joblib_server.tables import utcnow
from tests.support.servers import LiveServer
from tests.support.tokens import ADMIN, ALICE, BOB

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TASKS = 2000
WORKERS = 16
SUBMITTERS = 4
# Most tasks are queued before the workers start; the rest arrive over HTTP
# while the workers drain.
LIVE_SUBMITS = 400
# Every eighth worker takes the plain path: claim, then PATCH running, then done.
PLAIN_EVERY = 8
# Every other worker holds its claims (`Prefer: wait`), as JobManager does.
HELD_EVERY = 2
ROOM = "stress"
JOB = f"{ROOM}:modifiers:Stress"


@dataclass
class Ledger:
    """What the clients saw: every claim answer, and every task submitted."""

    submitted: set[str] = field(default_factory=set)
    claims: list[tuple[str, str]] = field(default_factory=list)
    submitting_done: anyio.Event = field(default_factory=anyio.Event)


@asynccontextmanager
async def _clients(
    api: str, count: int, tokens: tuple[str, str] = (ALICE, BOB)
) -> AsyncIterator[list[httpx.AsyncClient]]:
    """`count` clients of their own, alternating between the two tokens."""
    async with AsyncExitStack() as stack:
        clients = []
        for index in range(count):
            token = tokens[index % 2]
            client = httpx.AsyncClient(
                base_url=api,
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
                trust_env=False,
            )
            clients.append(await stack.enter_async_context(client))
        yield clients


def _ok(answer: httpx.Response, status: int = 200) -> dict[str, object]:
    assert answer.status_code == status, answer.text
    body: dict[str, object] = answer.json()
    return body


async def _submit(client: httpx.AsyncClient, count: int, ledger: Ledger) -> None:
    for index in range(count):
        answer = await client.post(
            f"/rooms/{ROOM}/tasks/{JOB}", json={"payload": {"n": index}}
        )
        ledger.submitted.add(str(_ok(answer, 202)["id"]))


async def _work(
    client: httpx.AsyncClient, worker_id: str, plain: bool, held: bool, ledger: Ledger
) -> None:
    """Claim and complete until the queue is empty after the last submission."""
    headers = {"Prefer": "wait=1"} if held else {}
    while True:
        # Read before claiming: an empty answer after that means truly empty.
        done_submitting = ledger.submitting_done.is_set()
        answer = await client.post(
            "/tasks/claim",
            json={"worker_id": worker_id, "start": not plain},
            headers=headers,
        )
        assert ("preference-applied" in answer.headers) == held
        task = _ok(answer)["task"]
        if task is None:
            if done_submitting:
                return
            await anyio.sleep(0.01)
            continue
        assert isinstance(task, dict)
        task_id = str(task["id"])
        ledger.claims.append((task_id, worker_id))
        assert task["worker_id"] == worker_id
        assert task["status"] == ("claimed" if plain else "running")
        if plain:
            _ok(await client.patch(f"/tasks/{task_id}", json={"status": "running"}))
        _ok(await client.patch(f"/tasks/{task_id}", json={"status": "completed"}))


async def _queue(database_url: str, count: int, ledger: Ledger) -> None:
    """Queue `count` tasks in one bulk insert, as `count` submits would have.

    Submitting them over HTTP would double the test's run time while proving
    nothing the concurrent submitters do not; the claims are what is under test.
    """
    database = Database.from_url(database_url)
    try:
        async with database.write() as session:
            job = (
                await session.execute(select(Job).where(Job.room_id == ROOM))
            ).scalar_one()
            now = utcnow()
            queued = [
                Task(
                    job_id=job.id,
                    room_id=ROOM,
                    submitted_by="bob",
                    payload={"n": -index},
                    seq=job.task_seq + index + 1,
                    created_at=now + timedelta(microseconds=index),
                )
                for index in range(count)
            ]
            job.task_seq += count
            session.add_all(queued)
        ledger.submitted.update(str(task.id) for task in queued)
    finally:
        await database.dispose()


async def _run(api: str, ledger: Ledger, database_url: str) -> list[str]:
    """Register the workers, then submit and drain concurrently; the worker ids."""
    # The job's owner (alice registers first) and an admin run its workers: no
    # other identity may link a worker to alice's job.
    async with (
        _clients(api, WORKERS, (ALICE, ADMIN)) as workers,
        _clients(api, SUBMITTERS) as subs,
    ):
        worker_ids = []
        for client in workers:
            answer = await client.put(
                f"/rooms/{ROOM}/jobs", json={"category": "modifiers", "name": "Stress"}
            )
            assert answer.status_code in (200, 201), answer.text
            worker_ids.append(str(answer.json()["worker_id"]))
        await _queue(database_url, TASKS - LIVE_SUBMITS, ledger)

        async def submit_all() -> None:
            async with anyio.create_task_group() as group:
                for client in subs:
                    group.start_soon(
                        _submit, client, LIVE_SUBMITS // SUBMITTERS, ledger
                    )
            ledger.submitting_done.set()

        async with anyio.create_task_group() as group:
            group.start_soon(submit_all)
            for index, (client, worker_id) in enumerate(
                zip(workers, worker_ids, strict=True)
            ):
                group.start_soon(
                    _work,
                    client,
                    worker_id,
                    index % PLAIN_EVERY == 0,
                    index % HELD_EVERY == 1,
                    ledger,
                )
    return worker_ids


async def _stored_tasks(database_url: str) -> list[Task]:
    database = Database.from_url(database_url)
    try:
        async with database.read() as session:
            return list((await session.execute(select(Task))).scalars().all())
    finally:
        await database.dispose()


async def test_sixteen_workers_drain_two_thousand_tasks(
    live_server: LiveServer, database_url: str
) -> None:
    ledger = Ledger()
    with anyio.fail_after(110):
        worker_ids = await _run(live_server.api, ledger, database_url)

    # No claim answer ever handed out a task another claim had already received.
    claimed = Counter(task_id for task_id, _ in ledger.claims)
    assert [task_id for task_id, times in claimed.items() if times > 1] == []
    assert len(ledger.submitted) == TASKS
    assert set(claimed) == ledger.submitted

    claimer = dict(ledger.claims)
    rows = await _stored_tasks(database_url)
    assert len(rows) == TASKS
    for row in rows:
        task_id = str(row.id)
        assert row.status == "completed", task_id
        assert str(row.worker_id) == claimer[task_id], task_id
        assert row.started_at is not None, task_id
        assert row.completed_at is not None, task_id
        assert row.started_at <= row.completed_at, task_id
        assert row.error is None, task_id
    # Every worker took part: plain and start-at-once, held and immediate claims.
    per_worker = Counter(claimer.values())
    assert set(per_worker) == set(worker_ids)
    assert sum(per_worker.values()) == TASKS
