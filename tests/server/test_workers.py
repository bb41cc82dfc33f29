"""Workers over REST: create, heartbeat, list, delete."""

from __future__ import annotations

import uuid

import httpx
import pytest

from joblib_protocol import Emission, JobsInvalidate, TaskStatusEvent
from joblib_server import JobLib, RecordingEmitter
from tests.support.rest import (
    assert_problem,
    claimed_task,
    create_worker,
    events,
    full_name,
    get_task,
    parse_time,
    register,
    serving_job,
)
from tests.support.rows import row_counts

pytestmark = pytest.mark.anyio


async def test_create_worker_answers_id_and_heartbeat(alice: httpx.AsyncClient) -> None:
    answer = await alice.post("/workers")
    assert answer.status_code == 201
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert set(body) == {"id", "last_heartbeat", "cancelled"}
    assert body["cancelled"] == []
    uuid.UUID(body["id"])
    parse_time(body["last_heartbeat"])


async def test_heartbeat_moves_last_heartbeat_forward(alice: httpx.AsyncClient) -> None:
    created = (await alice.post("/workers")).json()
    answer = await alice.patch(f"/workers/{created['id']}")
    assert answer.status_code == 200
    body = answer.json()
    assert body["id"] == created["id"]
    assert parse_time(body["last_heartbeat"]) >= parse_time(created["last_heartbeat"])


async def test_heartbeat_of_unknown_worker_is_404(alice: httpx.AsyncClient) -> None:
    answer = await alice.patch(f"/workers/{uuid.uuid4()}")
    assert_problem(answer, 404, "worker-not-found")


async def test_heartbeat_of_anothers_worker_is_403(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    worker_id = await create_worker(alice)
    assert_problem(await bob.patch(f"/workers/{worker_id}"), 403, "forbidden")
    # Heartbeats prove a process is alive: an admin cannot speak for it either.
    assert_problem(await admin.patch(f"/workers/{worker_id}"), 403, "forbidden")


async def test_list_workers_pages_newest_first_with_job_count(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    first, _ = await serving_job(alice)
    await register(alice, name="Scale", worker_id=first, expect=201)
    second = await create_worker(bob)
    third = await create_worker(alice)

    page = (await bob.get("/workers")).json()
    assert page["total"] == 3
    assert (page["limit"], page["offset"]) == (50, 0)
    assert [w["id"] for w in page["items"]] == [third, second, first]
    assert [w["job_count"] for w in page["items"]] == [0, 0, 2]
    assert set(page["items"][0]) == {"id", "last_heartbeat", "job_count"}

    page = (await bob.get("/workers", params={"limit": 1, "offset": 1})).json()
    assert page["total"] == 3
    assert (page["limit"], page["offset"]) == (1, 1)
    assert [w["id"] for w in page["items"]] == [second]

    page = (await bob.get("/workers", params={"limit": 0})).json()
    assert page["items"] == []
    assert page["total"] == 3


async def test_room_workers_are_those_serving_visible_jobs(
    alice: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    in_room, _ = await serving_job(alice, "room1")
    elsewhere, _ = await serving_job(alice, "room2")
    global_worker, _ = await serving_job(admin, "@global")
    await create_worker(alice)  # serves nothing: listed nowhere

    page = (await alice.get("/rooms/room1/workers")).json()
    assert page["total"] == 2
    assert {w["id"] for w in page["items"]} == {in_room, global_worker}
    page = (await alice.get("/rooms/@global/workers")).json()
    assert [w["id"] for w in page["items"]] == [global_worker]
    page = (await alice.get("/rooms/room2/workers")).json()
    assert {w["id"] for w in page["items"]} == {elsewhere, global_worker}


@pytest.mark.parametrize("room_id", ["a:b", "a@b"])
async def test_room_workers_reject_bad_room_ids(
    alice: httpx.AsyncClient, room_id: str
) -> None:
    answer = await alice.get(f"/rooms/{room_id}/workers")
    assert_problem(answer, 400, "invalid-room-id")


async def test_delete_worker_fails_its_task_and_hides_its_job(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, joblib: JobLib
) -> None:
    task_id, worker_id = await claimed_task(alice, bob)

    assert (await alice.delete(f"/workers/{worker_id}")).status_code == 204
    failed = await get_task(bob, task_id)
    assert failed["status"] == "failed"
    assert failed["error"] == "Worker disconnected"
    assert failed["worker_id"] == worker_id
    assert_problem(
        await alice.get(f"/rooms/room1/jobs/{full_name()}"), 404, "job-not-found"
    )
    counts = await row_counts(joblib)
    assert counts["joblib_worker"] == 0
    assert counts["joblib_worker_job"] == 0


async def test_delete_worker_tells_the_rooms(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, emitter: RecordingEmitter
) -> None:
    task_id, worker_id = await claimed_task(alice, bob, start=True)
    emitter.clear()
    await alice.delete(f"/workers/{worker_id}")
    [failed] = events(emitter, "task_status_event")
    assert failed.room == "room:room1"
    assert isinstance(failed.event, TaskStatusEvent)
    assert (failed.event.id, failed.event.status) == (task_id, "failed")
    assert events(emitter, "jobs_invalidate") == [
        Emission(JobsInvalidate(), "room:room1")
    ]


async def test_delete_worker_twice_is_404(alice: httpx.AsyncClient) -> None:
    worker_id = await create_worker(alice)
    assert (await alice.delete(f"/workers/{worker_id}")).status_code == 204
    assert_problem(await alice.delete(f"/workers/{worker_id}"), 404, "worker-not-found")


async def test_only_owner_or_admin_deletes_a_worker(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    worker_id = await create_worker(alice)
    assert_problem(await bob.delete(f"/workers/{worker_id}"), 403, "forbidden")
    assert (await alice.patch(f"/workers/{worker_id}")).status_code == 200
    assert (await admin.delete(f"/workers/{worker_id}")).status_code == 204
    assert_problem(await alice.patch(f"/workers/{worker_id}"), 404, "worker-not-found")


async def test_room_workers_drop_a_deleted_worker(alice: httpx.AsyncClient) -> None:
    worker_id, _ = await serving_job(alice)
    await alice.delete(f"/workers/{worker_id}")
    page = (await alice.get("/rooms/room1/workers")).json()
    assert page == {"items": [], "total": 0, "limit": 50, "offset": 0}
