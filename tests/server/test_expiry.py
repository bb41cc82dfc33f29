"""Time limits: running tasks past their deadline and pending ones past their expiry
are failed on time (a timer, not the sweeper), and a worker is told to stop."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa

from joblib_protocol import CancelReason, TaskCancelled, worker_channel
from joblib_server import Database, JobLib, RecordingEmitter, Settings, TokenAuth
from joblib_server.expiry import expire_due_tasks
from joblib_server.tables import TASK_TABLE, utcnow
from tests.support.rest import (
    JSON,
    ROOM,
    SCHEMA,
    assert_problem,
    claim,
    create_worker,
    get_task,
    parse_time,
    submit,
    update,
)
from tests.support.tokens import TOKENS
from tests.support.waiting import aeventually

pytestmark = pytest.mark.anyio


async def _job(
    client: httpx.AsyncClient, name: str = "Slow", **limits: float
) -> tuple[str, str]:
    """Register a job with time limits: (worker_id, full_name)."""
    answer = await client.put(
        f"/rooms/{ROOM}/jobs",
        json={"category": "modifiers", "name": name, "schema": SCHEMA, **limits},
    )
    assert answer.status_code == 201, answer.text
    job = answer.json()
    for key, value in limits.items():
        assert job[key] == value
    return str(job["worker_id"]), str(job["full_name"])


async def _failed(client: httpx.AsyncClient, task_id: str) -> JSON:
    async def done() -> JSON:
        task = await get_task(client, task_id)
        return task if task["status"] == "failed" else {}

    return await aeventually(done, timeout=10, what=f"task {task_id} to fail")


def _stop_notices(emitter: RecordingEmitter) -> list[tuple[TaskCancelled, str]]:
    return [
        (e.event, e.room) for e in emitter.sent if isinstance(e.event, TaskCancelled)
    ]


async def test_a_running_task_past_its_deadline_fails_within_a_second(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, emitter: RecordingEmitter
) -> None:
    worker_id, job_name = await _job(alice, timeout_seconds=1)
    task = await submit(bob, job_name)
    assert task["timeout_seconds"] == 1
    running = await claim(alice, worker_id, start=True)
    assert running is not None
    started = parse_time(running["started_at"])
    assert parse_time(running["deadline_at"]) == started + timedelta(seconds=1)

    failed = await _failed(bob, task["id"])
    assert failed["error_code"] == "deadline_exceeded"
    assert "1 s" in failed["error"]
    took = parse_time(failed["completed_at"]) - started
    assert timedelta(seconds=1) <= took < timedelta(seconds=2)
    # Its worker is told to stop, as for a cancel, on its own channel.
    notice = TaskCancelled(
        task_id=task["id"], job_name=job_name, reason=CancelReason.DEADLINE_EXCEEDED
    )
    assert _stop_notices(emitter) == [(notice, worker_channel(worker_id))]
    # The worker's late report changes nothing.
    await update(alice, task["id"], "completed", expect=409)
    assert (await get_task(bob, task["id"]))["error_code"] == "deadline_exceeded"


async def test_a_submit_overrides_the_jobs_limit_and_a_patch_start_sets_it(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    worker_id, job_name = await _job(alice, timeout_seconds=3600)
    answer = await bob.post(
        f"/rooms/{ROOM}/tasks/{job_name}",
        json={"payload": {}, "timeout_seconds": 0.5},
    )
    assert answer.status_code == 202, answer.text
    task_id = answer.json()["id"]
    claimed = await claim(alice, worker_id)
    assert claimed is not None
    assert claimed["deadline_at"] is None  # claimed is not running yet
    running = await update(alice, task_id, "running")
    started = parse_time(running["started_at"])
    assert parse_time(running["deadline_at"]) == started + timedelta(seconds=0.5)
    failed = await _failed(bob, task_id)
    assert failed["error_code"] == "deadline_exceeded"
    took = parse_time(failed["completed_at"]) - started
    assert timedelta(seconds=0.5) <= took < timedelta(seconds=1.5)


async def test_a_pending_task_past_its_expiry_fails_as_expired(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, emitter: RecordingEmitter
) -> None:
    _, job_name = await _job(alice, pending_timeout_seconds=0.5)
    task = await submit(bob, job_name)
    created = parse_time(task["created_at"])
    assert parse_time(task["expires_at"]) == created + timedelta(seconds=0.5)

    failed = await _failed(bob, task["id"])
    assert failed["error_code"] == "expired"
    assert failed["worker_id"] is None
    took = parse_time(failed["completed_at"]) - created
    assert timedelta(seconds=0.5) <= took < timedelta(seconds=1.5)
    assert _stop_notices(emitter) == []  # nobody held it


async def test_a_task_claimed_in_time_does_not_expire(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, joblib: JobLib
) -> None:
    worker_id, job_name = await _job(alice, pending_timeout_seconds=60)
    task = await submit(bob, job_name)
    assert await claim(alice, worker_id, start=True) is not None
    later = utcnow() + timedelta(minutes=5)
    assert await joblib.execute(expire_due_tasks, later) == []
    assert (await get_task(bob, task["id"]))["status"] == "running"


async def test_finished_tasks_and_tasks_without_limits_are_left_alone(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, joblib: JobLib
) -> None:
    worker_id, job_name = await _job(alice, timeout_seconds=30)
    done = await submit(bob, job_name)
    assert await claim(alice, worker_id, start=True) is not None
    await update(alice, done["id"], "completed")
    plain_worker, plain_job = await _job(alice, name="Plain")
    plain = await submit(bob, plain_job)
    assert await claim(alice, plain_worker, start=True) is not None

    much_later = utcnow() + timedelta(days=400)
    assert await joblib.execute(expire_due_tasks, much_later) == []
    assert (await get_task(bob, done["id"]))["status"] == "completed"
    assert (await get_task(bob, plain["id"]))["status"] == "running"


async def test_a_restarted_server_fails_what_its_predecessor_set(
    alice: httpx.AsyncClient,
    bob: httpx.AsyncClient,
    database_url: str,
    settings: Settings,
) -> None:
    worker_id, job_name = await _job(alice, timeout_seconds=3600)
    task = await submit(bob, job_name)
    assert await claim(alice, worker_id, start=True) is not None
    # As if another server process had set this deadline: ours never heard of it.
    soon = utcnow() + timedelta(seconds=0.3)
    database = Database.from_url(database_url)
    async with database.write() as session:
        await session.execute(
            sa.update(TASK_TABLE)
            .where(TASK_TABLE.c.id == uuid.UUID(task["id"]))
            .values(deadline_at=soon)
        )
    successor = JobLib(
        database=database, auth=TokenAuth(TOKENS), settings=settings, sweeper=False
    )
    async with successor.lifespan():
        failed = await _failed(bob, task["id"])
    assert failed["error_code"] == "deadline_exceeded"
    assert parse_time(failed["completed_at"]) < soon + timedelta(seconds=1)


async def test_a_lost_workers_requeued_task_gets_a_new_deadline_and_no_expiry(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    answer = await alice.put(
        f"/rooms/{ROOM}/jobs",
        json={
            "category": "modifiers",
            "name": "Again",
            "schema": SCHEMA,
            "timeout_seconds": 600,
            "pending_timeout_seconds": 600,
            "on_disconnect": {"action": "requeue", "max_attempts": 3},
        },
    )
    assert answer.status_code == 201, answer.text
    job = answer.json()
    task = await submit(bob, job["full_name"])
    running = await claim(alice, str(job["worker_id"]), start=True)
    assert running is not None
    assert running["deadline_at"] is not None
    assert (await alice.delete(f"/workers/{job['worker_id']}")).status_code == 204

    requeued = await get_task(bob, task["id"])
    assert requeued["status"] == "pending"
    assert requeued["attempt"] == 2
    assert requeued["deadline_at"] is None
    assert requeued["expires_at"] is None
    newcomer = await create_worker(alice)
    await alice.put(
        f"/rooms/{ROOM}/jobs",
        json={
            "category": "modifiers",
            "name": "Again",
            "schema": SCHEMA,
            "worker_id": newcomer,
        },
    )
    second = await claim(alice, newcomer, start=True)
    assert second is not None
    assert second["id"] == task["id"]
    started = parse_time(second["started_at"])
    assert parse_time(second["deadline_at"]) == started + timedelta(seconds=600)


@pytest.mark.parametrize(
    "limits",
    [
        {"timeout_seconds": 0},
        {"timeout_seconds": -1},
        {"pending_timeout_seconds": 10**9},
        {"timeout_seconds": "soon"},
    ],
)
async def test_bad_limits_are_refused_and_change_nothing(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, limits: JSON
) -> None:
    body = {"category": "modifiers", "name": "Bad", "schema": SCHEMA, **limits}
    assert_problem(
        await alice.put(f"/rooms/{ROOM}/jobs", json=body), 422, "validation-error"
    )
    assert (await alice.get(f"/rooms/{ROOM}/jobs")).json()["total"] == 0
    _, job_name = await _job(alice, name="Good")
    answer = await bob.post(
        f"/rooms/{ROOM}/tasks/{job_name}", json={"payload": {}, **limits}
    )
    assert_problem(answer, 422, "validation-error")
    assert (await bob.get(f"/rooms/{ROOM}/tasks")).json()["total"] == 0


async def test_a_registration_without_limits_keeps_the_jobs_limits(
    alice: httpx.AsyncClient,
) -> None:
    worker_id, _ = await _job(alice, timeout_seconds=5, pending_timeout_seconds=7)
    again = await alice.put(
        f"/rooms/{ROOM}/jobs",
        json={
            "category": "modifiers",
            "name": "Slow",
            "schema": SCHEMA,
            "worker_id": worker_id,
            "timeout_seconds": 9,
        },
    )
    assert again.status_code == 200, again.text
    assert again.json()["timeout_seconds"] == 9
    assert again.json()["pending_timeout_seconds"] == 7
