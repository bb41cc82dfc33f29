"""Tasks over REST: submit, claim, the state machine, listing, and their events."""

from __future__ import annotations

import uuid

import httpx
import pytest

from joblib_protocol import Emission, TaskAvailable, TaskStatusEvent
from joblib_server import JobLib, RecordingEmitter
from tests.support.rest import (
    ROOM,
    assert_problem,
    claim,
    claimed_task,
    create_worker,
    events,
    get_task,
    parse_time,
    register,
    serving_job,
    submit,
    task_statuses,
    update,
)
from tests.support.rows import row_counts, task_row

pytestmark = pytest.mark.anyio

TASK_FIELDS = {
    "id",
    "job_name",
    "room_id",
    "status",
    "created_at",
    "started_at",
    "completed_at",
    "worker_id",
    "error",
    "payload",
    "queue_position",
    "attempt",
    "error_code",
    "result",
    "progress",
    "timeout_seconds",
    "deadline_at",
    "expires_at",
}


async def test_submit_answers_202_with_location(alice: httpx.AsyncClient) -> None:
    _, job_name = await serving_job(alice)
    answer = await alice.post(
        f"/rooms/room1/tasks/{job_name}", json={"payload": {"angle": 90}}
    )
    assert answer.status_code == 202
    task = answer.json()
    assert set(task) == TASK_FIELDS
    assert answer.headers["location"] == f"/v1/joblib/tasks/{task['id']}"
    assert answer.headers["retry-after"] == "1"
    assert task["job_name"] == job_name
    assert task["room_id"] == "room1"
    assert task["status"] == "pending"
    assert task["payload"] == {"angle": 90}
    assert task["queue_position"] == 1
    assert parse_time(task["created_at"])
    assert (task["started_at"], task["completed_at"], task["worker_id"]) == (
        None,
        None,
        None,
    )
    assert task["error"] is None
    assert (task["attempt"], task["error_code"]) == (1, None)
    assert await get_task(alice, task["id"]) == task


async def test_submit_without_payload_means_empty(alice: httpx.AsyncClient) -> None:
    _, job_name = await serving_job(alice)
    answer = await alice.post(f"/rooms/room1/tasks/{job_name}", json={})
    assert answer.status_code == 202
    assert answer.json()["payload"] == {}


async def test_queue_positions_count_down_as_tasks_are_claimed(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    worker_id, job_name = await serving_job(alice)
    tasks = [await submit(bob, job_name) for _ in range(3)]
    assert [t["queue_position"] for t in tasks] == [1, 2, 3]

    await claim(alice, worker_id)
    positions = [(await get_task(bob, t["id"]))["queue_position"] for t in tasks]
    assert positions == [None, 1, 2]
    page = (await bob.get("/rooms/room1/tasks")).json()
    assert [t["queue_position"] for t in page["items"]] == [2, 1, None]


async def test_claim_takes_the_oldest_task_across_the_workers_jobs(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    worker_id = await create_worker(alice)
    rotate = (await register(alice, name="Rotate", worker_id=worker_id))["full_name"]
    scale = (await register(alice, name="Scale", worker_id=worker_id))["full_name"]
    _, foreign = await serving_job(admin, "room1", "NotMine")
    await submit(bob, foreign)
    submitted = [
        await submit(bob, rotate),
        await submit(bob, scale, payload={"n": 1}),
        await submit(bob, rotate, payload={"n": 2}),
        await submit(bob, scale),
    ]
    claimed = [await claim(alice, worker_id) for _ in submitted]
    assert [t["id"] for t in claimed if t] == [t["id"] for t in submitted]
    assert await claim(alice, worker_id) is None  # the other job's task stays


async def test_claim_answers_null_when_nothing_waits(alice: httpx.AsyncClient) -> None:
    worker_id, _ = await serving_job(alice)
    answer = await alice.post("/tasks/claim", json={"worker_id": worker_id})
    assert answer.status_code == 200
    assert answer.json() == {"task": None}


async def test_claim_takes_global_tasks_from_every_room(
    admin: httpx.AsyncClient, alice: httpx.AsyncClient
) -> None:
    worker_id, job_name = await serving_job(admin, "@global")
    first = await submit(alice, job_name, "room1")
    second = await submit(alice, job_name, "room2")
    got = [await claim(admin, worker_id), await claim(admin, worker_id)]
    assert [(t["id"], t["room_id"]) for t in got if t] == [
        (first["id"], "room1"),
        (second["id"], "room2"),
    ]


async def test_claim_for_unknown_or_foreign_worker(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, joblib: JobLib
) -> None:
    worker_id, job_name = await serving_job(alice)
    await submit(alice, job_name)
    before = await row_counts(joblib)
    answer = await alice.post("/tasks/claim", json={"worker_id": str(uuid.uuid4())})
    assert_problem(answer, 404, "worker-not-found")
    answer = await bob.post("/tasks/claim", json={"worker_id": worker_id})
    assert_problem(answer, 403, "forbidden")
    page = (await alice.get("/rooms/room1/tasks", params={"status": "pending"})).json()
    assert page["total"] == 1
    assert await row_counts(joblib) == before


async def test_claim_then_run_then_complete(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    worker_id, job_name = await serving_job(alice)
    task = await submit(bob, job_name)
    claimed = await claim(alice, worker_id)
    assert claimed is not None
    assert claimed["status"] == "claimed"
    assert claimed["worker_id"] == worker_id
    assert claimed["queue_position"] is None
    assert claimed["started_at"] is None

    running = await update(alice, task["id"], "running")
    assert running["status"] == "running"
    started = parse_time(running["started_at"])
    assert running["completed_at"] is None

    done = await update(alice, task["id"], "completed")
    assert done["status"] == "completed"
    assert parse_time(done["completed_at"]) >= started
    assert parse_time(done["started_at"]) == started
    assert done["error"] is None
    assert await get_task(bob, task["id"]) == done


async def test_claim_with_start_goes_straight_to_running(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    task_id, worker_id = await claimed_task(alice, bob, start=True)
    task = await get_task(bob, task_id)
    assert task["status"] == "running"
    assert task["worker_id"] == worker_id
    assert parse_time(task["started_at"]) >= parse_time(task["created_at"])


async def test_claim_counts_as_a_heartbeat(
    alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    worker_id, _ = await serving_job(alice)
    before = (await alice.get("/workers")).json()["items"][0]["last_heartbeat"]
    await claim(alice, worker_id)
    after = (await alice.get("/workers")).json()["items"][0]["last_heartbeat"]
    assert parse_time(after) > parse_time(before)


async def test_failing_records_the_error(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, joblib: JobLib
) -> None:
    task_id, _ = await claimed_task(alice, bob, start=True)
    failed = await update(alice, task_id, "failed", "division by zero")
    assert failed["status"] == "failed"
    assert failed["error"] == "division by zero"
    assert parse_time(failed["completed_at"])
    row = await task_row(joblib, task_id)
    assert (row.status, row.error) == ("failed", "division by zero")


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ([], "running"),
        ([], "completed"),
        ([], "failed"),
        (["claimed"], "completed"),
        (["claimed"], "pending"),
        (["claimed", "running"], "claimed"),
        (["claimed", "running"], "pending"),
        (["claimed", "running", "completed"], "running"),
        (["claimed", "running", "completed"], "cancelled"),
        (["cancelled"], "pending"),
    ],
)
async def test_invalid_transitions_are_409(
    alice: httpx.AsyncClient,
    bob: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    joblib: JobLib,
    path: list[str],
    target: str,
) -> None:
    worker_id, job_name = await serving_job(alice)
    task = await submit(bob, job_name)
    for status in path:
        if status == "claimed":
            await claim(alice, worker_id)
        else:
            await update(admin, task["id"], status)
    before = await get_task(bob, task["id"])
    answer = await admin.patch(f"/tasks/{task['id']}", json={"status": target})
    assert_problem(answer, 409, "invalid-task-transition")
    assert await get_task(bob, task["id"]) == before


async def test_claimed_is_reached_only_by_claiming(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    _, job_name = await serving_job(alice)
    task = await submit(bob, job_name)
    answer = await admin.patch(f"/tasks/{task['id']}", json={"status": "claimed"})
    assert_problem(answer, 409, "invalid-task-transition")
    assert (await get_task(bob, task["id"]))["status"] == "pending"


async def test_submitter_may_cancel_a_pending_task(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    _, job_name = await serving_job(alice)
    task = await submit(bob, job_name)
    cancelled = await update(bob, task["id"], "cancelled")
    assert cancelled["status"] == "cancelled"
    assert parse_time(cancelled["completed_at"])
    assert cancelled["queue_position"] is None


async def test_submitter_may_only_cancel(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    task_id, _ = await claimed_task(alice, bob, start=True)
    answer = await bob.patch(f"/tasks/{task_id}", json={"status": "completed"})
    assert_problem(answer, 403, "forbidden")
    assert (await update(bob, task_id, "cancelled"))["status"] == "cancelled"


async def test_a_stranger_may_not_update(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, joblib: JobLib
) -> None:
    _, job_name = await serving_job(alice)
    task = await submit(alice, job_name)
    for status in ("cancelled", "failed"):
        answer = await bob.patch(f"/tasks/{task['id']}", json={"status": status})
        assert_problem(answer, 403, "forbidden")
    assert (await task_row(joblib, task["id"])).status == "pending"


async def test_an_admin_may_update_any_task(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    task_id, _ = await claimed_task(alice, bob, start=True)
    failed = await update(admin, task_id, "failed", "stopped by an operator")
    assert (failed["status"], failed["error"]) == ("failed", "stopped by an operator")


async def test_error_only_with_a_terminal_status(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    worker_id, job_name = await serving_job(alice)
    task = await submit(bob, job_name)
    await claim(alice, worker_id)
    answer = await alice.patch(
        f"/tasks/{task['id']}", json={"status": "running", "error": "too early"}
    )
    assert_problem(answer, 422, "validation-error")
    assert (await get_task(bob, task["id"]))["status"] == "claimed"


async def test_unknown_task_is_404(alice: httpx.AsyncClient) -> None:
    missing = uuid.uuid4()
    assert_problem(await alice.get(f"/tasks/{missing}"), 404, "task-not-found")
    answer = await alice.patch(f"/tasks/{missing}", json={"status": "cancelled"})
    assert_problem(answer, 404, "task-not-found")


async def test_room_tasks_page_newest_first_and_filter_by_status(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    worker_id, job_name = await serving_job(alice)
    _, other = await serving_job(alice, "room2")
    ids = [(await submit(bob, job_name))["id"] for _ in range(5)]
    await submit(bob, other, "room2")
    await claim(alice, worker_id)
    await update(bob, ids[1], "cancelled")

    page = (await bob.get("/rooms/room1/tasks")).json()
    assert [t["id"] for t in page["items"]] == ids[::-1]
    assert (page["total"], page["limit"], page["offset"]) == (5, 50, 0)
    page = (
        await bob.get("/rooms/room1/tasks", params={"limit": 2, "offset": 1})
    ).json()
    assert [t["id"] for t in page["items"]] == [ids[3], ids[2]]
    assert page["total"] == 5
    expected = {"pending": ids[:1:-1], "claimed": [ids[0]], "cancelled": [ids[1]]}
    for status, wanted in expected.items():
        page = (await bob.get("/rooms/room1/tasks", params={"status": status})).json()
        assert [t["id"] for t in page["items"]] == wanted
        assert page["total"] == len(wanted)
    assert (await bob.get("/rooms/room1/tasks", params={"status": "failed"})).json()[
        "total"
    ] == 0


async def test_internal_jobs_need_a_server_that_runs_them(
    admin: httpx.AsyncClient, alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    _, job_name = await serving_job(admin, "@internal")
    answer = await alice.post(f"/rooms/room1/tasks/{job_name}", json={"payload": {}})
    assert_problem(answer, 503, "internal-job-not-configured")
    assert (await row_counts(joblib))["joblib_task"] == 0

    joblib.internal_jobs = True
    task = await submit(alice, job_name)
    assert task["job_name"] == "@internal:modifiers:Rotate"
    assert task["room_id"] == ROOM


async def test_events_follow_the_task(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, emitter: RecordingEmitter
) -> None:
    worker_id, job_name = await serving_job(alice)
    emitter.clear()
    task = await submit(bob, job_name)
    assert emitter.sent[1] == Emission(
        TaskAvailable(job_name=job_name, room_id="room1", task_id=task["id"]),
        f"jobs:{job_name}",
    )
    submitted = emitter.sent[0]
    assert submitted.room == "room:room1"
    assert isinstance(submitted.event, TaskStatusEvent)
    assert (submitted.event.id, submitted.event.status) == (task["id"], "pending")
    assert submitted.event.queue_position == 1
    assert submitted.event.name == job_name

    emitter.clear()
    await claim(alice, worker_id)
    await update(alice, task["id"], "running")
    await update(alice, task["id"], "completed")
    statuses = task_statuses(emitter)
    assert statuses == ["claimed", "running", "completed"]
    assert {e.room for e in emitter.sent} == {"room:room1"}
    assert events(emitter, "task_available") == []


async def test_claim_with_start_reports_claimed_then_running(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, emitter: RecordingEmitter
) -> None:
    worker_id, job_name = await serving_job(alice)
    await submit(bob, job_name)
    emitter.clear()
    await claim(alice, worker_id, start=True)
    statuses = task_statuses(emitter)
    assert statuses == ["claimed", "running"]


async def test_internal_tasks_announce_no_availability(
    admin: httpx.AsyncClient, joblib: JobLib, emitter: RecordingEmitter
) -> None:
    joblib.internal_jobs = True
    _, job_name = await serving_job(admin, "@internal")
    emitter.clear()
    await submit(admin, job_name)
    assert [e.event.event_name() for e in emitter.sent] == ["task_status_event"]
    assert emitter.sent[0].room == "room:room1"


# a claim sent again under its request id (ours)


async def test_a_claim_sent_again_gets_the_task_its_lost_answer_carried(
    alice: httpx.AsyncClient,
    bob: httpx.AsyncClient,
    joblib: JobLib,
    emitter: RecordingEmitter,
) -> None:
    worker_id, job_name = await serving_job(alice)
    first = await submit(bob, job_name)
    second = await submit(bob, job_name)
    lost = await claim(alice, worker_id, request_id="claim-1")  # answer never read
    assert lost is not None
    assert lost["id"] == first["id"]
    emitter.clear()
    again = await claim(alice, worker_id, request_id="claim-1")
    assert again == lost
    assert emitter.sent == []  # nothing changed, so nothing is announced
    row = await task_row(joblib, first["id"])
    assert row.claim_request_id == "claim-1"
    assert row.claimed_at is not None
    assert (await get_task(bob, second["id"]))["status"] == "pending"
    # A new claim has a new id and takes the next task.
    fresh = await claim(alice, worker_id, request_id="claim-2")
    assert fresh is not None
    assert fresh["id"] == second["id"]


async def test_a_claim_sent_again_with_start_gets_its_running_task(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    worker_id, job_name = await serving_job(alice)
    task = await submit(bob, job_name)
    await submit(bob, job_name)
    lost = await claim(alice, worker_id, start=True, request_id="r")
    again = await claim(alice, worker_id, start=True, request_id="r")
    assert lost is not None
    assert again == lost
    assert (again["id"], again["status"]) == (task["id"], "running")


async def test_a_request_id_finds_only_a_task_its_worker_still_holds(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    worker_id, job_name = await serving_job(alice)
    done = await submit(bob, job_name)
    claimed = await claim(alice, worker_id, request_id="r")
    assert claimed is not None
    assert claimed["id"] == done["id"]
    await update(alice, done["id"], "running")
    await update(alice, done["id"], "completed")
    # Its task is finished: the same id claims anew, and nothing waits.
    assert await claim(alice, worker_id, request_id="r") is None
    other_id = await create_worker(alice)
    await register(alice, worker_id=other_id, expect=200)
    nxt = await submit(bob, job_name)
    # Another worker's claim under the same id is its own claim.
    taken = await claim(alice, worker_id, request_id="same")
    assert taken is not None
    assert taken["id"] == nxt["id"]
    assert await claim(alice, other_id, request_id="same") is None


async def test_a_claim_without_a_request_id_stores_none(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, joblib: JobLib
) -> None:
    task_id, _ = await claimed_task(alice, bob)
    row = await task_row(joblib, task_id)
    assert row.claim_request_id is None
    assert row.claimed_at is not None
    assert row.claimed_at >= row.created_at


async def test_a_request_id_is_at_most_64_characters(
    alice: httpx.AsyncClient,
) -> None:
    worker_id, _ = await serving_job(alice)
    body = {"worker_id": worker_id, "request_id": "r" * 65}
    assert_problem(await alice.post("/tasks/claim", json=body), 422, "validation-error")
