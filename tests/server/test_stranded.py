"""Tasks stranded while their worker lives, and how each comes back.

A claim whose answer was lost: the retried claim (same `request_id`) gets the task
back (see test_tasks), or the worker's next heartbeat that lists its tasks
releases it by its job's policy (`not_held`). A claimed task never started: the
sweeper puts it back to pending after `claim_start_timeout_seconds`.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest

from joblib_protocol import TaskAvailable, TaskStatusEvent, job_channel
from joblib_server import JobLib, RecordingEmitter, Settings, sweep_once
from joblib_server.tables import Task, utcnow
from tests.support.rest import (
    JSON,
    ROOM,
    SCHEMA,
    assert_problem,
    claim,
    create_worker,
    events,
    full_name,
    get_task,
    submit,
    update,
)
from tests.support.rows import task_row
from tests.support.servers import make_settings

pytestmark = pytest.mark.anyio

MARGIN = 5.0
START_TIMEOUT = 60.0
LONG_AGO = timedelta(hours=1)
REQUEUE = {"action": "requeue", "max_attempts": 3}


@pytest.fixture
def settings() -> Settings:
    return make_settings(
        heartbeat_task_margin_seconds=MARGIN,
        claim_start_timeout_seconds=START_TIMEOUT,
    )


async def _worker(client: httpx.AsyncClient, policy: JSON | None = None) -> str:
    """A new worker serving `full_name()`, whose job has `policy` (if given)."""
    worker_id = await create_worker(client)
    body: JSON = {
        "category": "modifiers",
        "name": "Rotate",
        "schema": SCHEMA,
        "worker_id": worker_id,
    }
    if policy is not None:
        body["on_disconnect"] = policy
    answer = await client.put(f"/rooms/{ROOM}/jobs", json=body)
    assert answer.status_code in (200, 201), answer.text
    return worker_id


async def _claimed(
    worker: httpx.AsyncClient,
    submitter: httpx.AsyncClient,
    worker_id: str,
    *,
    start: bool = False,
    request_id: str | None = None,
) -> str:
    """Submit a task and claim it as `worker_id`; its id."""
    task = await submit(submitter, full_name())
    claimed = await claim(worker, worker_id, start=start, request_id=request_id)
    assert claimed is not None
    assert claimed["id"] == task["id"]
    return str(task["id"])


async def _age_claim(joblib: JobLib, task_id: str, by: timedelta = LONG_AGO) -> None:
    """Make a task look as if it was claimed (and, if running, started) `by` ago."""
    async with joblib.database.write() as session:
        task = await session.get_one(Task, uuid.UUID(task_id))
        task.claimed_at = utcnow() - by
        if task.started_at is not None:
            task.started_at = task.claimed_at


async def _heartbeat(
    client: httpx.AsyncClient, worker_id: str, tasks: list[str] | None
) -> JSON:
    body = None if tasks is None else {"tasks": tasks}
    answer = await client.patch(f"/workers/{worker_id}", json=body)
    assert answer.status_code == 200, answer.text
    result: JSON = answer.json()
    return result


def _statuses(emitter: RecordingEmitter, task_id: str) -> list[Any]:
    return [
        e.event
        for e in emitter.sent
        if isinstance(e.event, TaskStatusEvent) and e.event.id == task_id
    ]


# a lost claim answer, released by the worker's heartbeat


async def test_a_task_the_heartbeat_leaves_out_fails_as_not_held(
    alice: httpx.AsyncClient,
    bob: httpx.AsyncClient,
    joblib: JobLib,
    emitter: RecordingEmitter,
) -> None:
    worker_id = await _worker(alice)
    lost = await _claimed(alice, bob, worker_id, request_id="lost")
    kept = await _claimed(alice, bob, worker_id, start=True)
    await _age_claim(joblib, lost)
    await _age_claim(joblib, kept)
    emitter.clear()
    beat = await _heartbeat(alice, worker_id, [kept])
    assert beat["id"] == worker_id
    task = await get_task(bob, lost)
    assert (task["status"], task["error_code"]) == ("failed", "not_held")
    assert task["error"] == "Worker does not hold the task"
    assert task["worker_id"] == worker_id
    assert (await get_task(bob, kept))["status"] == "running"
    [event] = _statuses(emitter, lost)
    assert (event.status, event.error_code) == ("failed", "not_held")
    # The worker stays, and a late report from it is refused.
    assert (await alice.get("/workers")).json()["total"] == 1
    late = {"status": "running", "worker_id": worker_id}
    assert_problem(
        await alice.patch(f"/tasks/{lost}", json=late), 409, "invalid-task-transition"
    )


async def test_with_requeue_it_goes_back_to_its_place_in_the_queue(
    alice: httpx.AsyncClient,
    bob: httpx.AsyncClient,
    joblib: JobLib,
    emitter: RecordingEmitter,
) -> None:
    worker_id = await _worker(alice, REQUEUE)
    lost = await _claimed(alice, bob, worker_id, request_id="lost")
    behind = await submit(bob, full_name())
    await _age_claim(joblib, lost)
    emitter.clear()
    await _heartbeat(alice, worker_id, [])
    task = await get_task(bob, lost)
    assert (task["status"], task["worker_id"], task["attempt"]) == ("pending", None, 2)
    assert task["queue_position"] == 1
    assert (await get_task(bob, behind["id"]))["queue_position"] == 2
    assert [e.event for e in events(emitter, "task_available")] == [
        TaskAvailable(job_name=full_name(), room_id=ROOM, task_id=lost)
    ]
    assert events(emitter, "task_available")[0].room == job_channel(full_name())
    # Its old claimer is fenced off; the retried claim under the old id claims anew.
    stale = {"status": "running", "worker_id": worker_id}
    assert_problem(
        await alice.patch(f"/tasks/{lost}", json=stale), 409, "task-worker-mismatch"
    )
    again = await claim(alice, worker_id, request_id="lost")
    assert again is not None
    assert (again["id"], again["status"], again["attempt"]) == (lost, "claimed", 2)


async def test_a_claim_younger_than_the_margin_is_kept(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, joblib: JobLib
) -> None:
    worker_id = await _worker(alice)
    # Its answer may still be on the way: the heartbeat was sent before it came.
    just = await _claimed(alice, bob, worker_id)
    await _age_claim(joblib, just, timedelta(seconds=MARGIN / 2))
    await _heartbeat(alice, worker_id, [])
    assert (await get_task(bob, just))["status"] == "claimed"
    await _age_claim(joblib, just, timedelta(seconds=MARGIN * 2))
    await _heartbeat(alice, worker_id, [])
    assert (await get_task(bob, just))["status"] == "failed"


async def test_a_heartbeat_that_lists_nothing_keeps_everything(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, joblib: JobLib
) -> None:
    worker_id = await _worker(alice)
    task_id = await _claimed(alice, bob, worker_id)
    await _age_claim(joblib, task_id)
    await _heartbeat(alice, worker_id, None)
    answer = await alice.patch(f"/workers/{worker_id}")  # no body at all
    assert answer.status_code == 200, answer.text
    await _heartbeat(alice, worker_id, [task_id])
    assert (await get_task(bob, task_id))["status"] == "claimed"


async def test_a_heartbeat_touches_only_its_own_workers_tasks(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, joblib: JobLib
) -> None:
    first = await _worker(alice)
    second = await _worker(alice)
    mine = await _claimed(alice, bob, first)
    theirs = await _claimed(alice, bob, second)
    await _age_claim(joblib, mine)
    await _age_claim(joblib, theirs)
    # Listing another worker's task, or an unknown one, keeps nothing of ours.
    await _heartbeat(alice, first, [theirs, str(uuid.uuid4())])
    assert (await get_task(bob, mine))["status"] == "failed"
    assert (await get_task(bob, theirs))["status"] == "claimed"


async def test_a_task_claimed_before_claim_times_were_kept_counts_as_old(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, joblib: JobLib
) -> None:
    worker_id = await _worker(alice)
    task_id = await _claimed(alice, bob, worker_id)
    async with joblib.database.write() as session:
        (await session.get_one(Task, uuid.UUID(task_id))).claimed_at = None
    await _heartbeat(alice, worker_id, [])
    assert (await get_task(bob, task_id))["error_code"] == "not_held"


async def test_a_heartbeat_body_is_checked(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    worker_id = await _worker(alice)
    path = f"/workers/{worker_id}"
    bodies: list[Any] = [{"tasks": ["nope"]}, {"tasks": "x"}, [], {"tasks": [None]}]
    for bad in bodies:
        answer = await alice.patch(path, json=bad)
        assert_problem(answer, 422, "validation-error")
    too_many = {"tasks": [str(uuid.uuid4()) for _ in range(1001)]}
    assert_problem(await alice.patch(path, json=too_many), 422, "validation-error")
    # Another identity's worker: refused before anything is released.
    assert_problem(await bob.patch(path, json={"tasks": []}), 403, "forbidden")


# a claimed task never started, put back by the sweeper


async def test_a_claimed_task_never_started_goes_back_to_pending(
    alice: httpx.AsyncClient,
    bob: httpx.AsyncClient,
    joblib: JobLib,
    emitter: RecordingEmitter,
) -> None:
    worker_id = await _worker(alice)
    stuck = await _claimed(alice, bob, worker_id, request_id="r")
    behind = await submit(bob, full_name())
    await submit(bob, full_name())
    taken_behind = await claim(alice, worker_id)
    assert taken_behind is not None
    young = str(taken_behind["id"])
    assert young == behind["id"]
    await _age_claim(joblib, stuck, timedelta(seconds=START_TIMEOUT + 1))
    await _age_claim(joblib, young, timedelta(seconds=START_TIMEOUT - 5))
    emitter.clear()
    sweep = await sweep_once(joblib)
    assert sweep.unstarted == [uuid.UUID(stuck)]
    assert sweep
    task = await get_task(bob, stuck)
    # It never ran: the same attempt, first in its queue again, its worker gone.
    assert (task["status"], task["worker_id"], task["attempt"]) == ("pending", None, 1)
    assert task["queue_position"] == 1
    assert task["error_code"] is None
    row = await task_row(joblib, stuck)
    assert (row.claimed_at, row.claim_request_id) == (None, None)
    assert (await get_task(bob, young))["status"] == "claimed"
    [event] = _statuses(emitter, stuck)
    assert (event.status, event.queue_position, event.worker_id) == ("pending", 1, None)
    assert [e.event for e in events(emitter, "task_available")] == [
        TaskAvailable(job_name=full_name(), room_id=ROOM, task_id=stuck)
    ]
    # Its old claimer's late start is refused; another claim takes the task.
    late = {"status": "running", "worker_id": worker_id}
    assert_problem(
        await alice.patch(f"/tasks/{stuck}", json=late), 409, "task-worker-mismatch"
    )
    # Without a worker_id the usual rules judge it: nobody's task is not its to move.
    assert_problem(
        await alice.patch(f"/tasks/{stuck}", json={"status": "running"}),
        403,
        "forbidden",
    )
    other = await _worker(alice)
    taken = await claim(alice, other)
    assert taken is not None
    assert (taken["id"], taken["attempt"]) == (stuck, 1)
    assert (await sweep_once(joblib)).unstarted == []


async def test_a_started_task_is_never_put_back_by_the_start_timeout(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, joblib: JobLib
) -> None:
    worker_id = await _worker(alice)
    started = await _claimed(alice, bob, worker_id)
    await update(alice, started, "running")
    at_once = await _claimed(alice, bob, worker_id, start=True)
    for task_id in (started, at_once):
        await _age_claim(joblib, task_id)
    assert (await sweep_once(joblib)).unstarted == []
    for task_id in (started, at_once):
        assert (await get_task(bob, task_id))["status"] == "running"


async def test_an_unstarted_internal_task_is_not_announced(
    admin: httpx.AsyncClient, joblib: JobLib, emitter: RecordingEmitter
) -> None:
    joblib.internal_jobs = True
    job = await admin.put(
        "/rooms/@internal/jobs",
        json={"category": "modifiers", "name": "Rotate", "schema": SCHEMA},
    )
    assert job.status_code == 201, job.text
    worker_id, name = job.json()["worker_id"], job.json()["full_name"]
    task = await submit(admin, name)
    assert (await claim(admin, worker_id)) is not None
    await _age_claim(joblib, task["id"])
    emitter.clear()
    assert (await sweep_once(joblib)).unstarted == [uuid.UUID(task["id"])]
    assert events(emitter, "task_available") == []
    assert [e.status for e in _statuses(emitter, task["id"])] == ["pending"]
