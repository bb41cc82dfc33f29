"""Jobs over REST: register, revive, look up, list, and room visibility."""

from __future__ import annotations

import uuid

import anyio
import httpx
import pytest

from joblib_protocol import Emission, JobsInvalidate
from joblib_server import JobLib, RecordingEmitter
from tests.support.rest import (
    SCHEMA,
    ClientFactory,
    assert_problem,
    claim,
    claimed_task,
    create_worker,
    full_name,
    register,
    serving_job,
    submit,
    update,
)
from tests.support.rows import TABLES, job_row, row_counts
from tests.support.tokens import ADMIN, ALICE, BOB

pytestmark = pytest.mark.anyio

OTHER_SCHEMA = {"type": "object", "properties": {"factor": {"type": "integer"}}}


async def test_register_answers_the_job_then_200_for_the_same_schema(
    alice: httpx.AsyncClient,
) -> None:
    answer = await alice.put(
        "/rooms/room1/jobs",
        json={"category": "modifiers", "name": "Rotate", "schema": SCHEMA},
    )
    assert answer.status_code == 201
    job = answer.json()
    assert set(job) == {
        "id",
        "room_id",
        "category",
        "name",
        "full_name",
        "schema",
        "workers",
        "worker_id",
        "on_disconnect",
        "timeout_seconds",
        "pending_timeout_seconds",
    }
    # Ours: the disconnect policy in force, here the server's defaults.
    assert job["on_disconnect"] == {
        "action": "fail",
        "max_attempts": 3,
        "grace_seconds": 0.0,
    }
    assert job["room_id"] == "room1"
    assert (job["category"], job["name"]) == ("modifiers", "Rotate")
    assert job["full_name"] == "room1:modifiers:Rotate"
    assert job["schema"] == SCHEMA
    assert job["workers"] == [job["worker_id"]]

    again = await register(alice, worker_id=job["worker_id"], expect=200)
    assert again["id"] == job["id"]
    assert again["workers"] == [job["worker_id"]]


async def test_a_second_worker_joins_the_job(alice: httpx.AsyncClient) -> None:
    first = await register(alice)
    second_worker = await create_worker(alice)
    second = await register(alice, worker_id=second_worker, expect=200)
    assert second["worker_id"] == second_worker
    assert sorted(second["workers"]) == sorted([first["worker_id"], second_worker])
    got = (await alice.get("/rooms/room1/jobs/room1:modifiers:Rotate")).json()
    assert sorted(got["workers"]) == sorted(second["workers"])
    assert got["worker_id"] is None


async def test_register_with_another_schema_is_409(
    alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    await register(alice)
    before = await row_counts(joblib)
    answer = await alice.put(
        "/rooms/room1/jobs",
        json={"category": "modifiers", "name": "Rotate", "schema": OTHER_SCHEMA},
    )
    assert_problem(answer, 409, "schema-conflict")
    # The worker the request would have created is rolled back with it.
    assert await row_counts(joblib) == before
    assert (await job_row(joblib, "Rotate")).schema_ == SCHEMA


async def test_register_in_an_unknown_category_is_400(
    alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    answer = await alice.put(
        "/rooms/room1/jobs", json={"category": "filters", "name": "Blur"}
    )
    assert_problem(answer, 400, "invalid-category")
    assert await row_counts(joblib) == dict.fromkeys(TABLES, 0)


@pytest.mark.parametrize("room_id", ["a:b", "a@b", "@other"])
async def test_register_in_a_bad_room_is_400(
    alice: httpx.AsyncClient, room_id: str
) -> None:
    answer = await alice.put(
        f"/rooms/{room_id}/jobs", json={"category": "modifiers", "name": "Rotate"}
    )
    assert_problem(answer, 400, "invalid-room-id")


@pytest.mark.parametrize("name", ["a:b", "", "tab\there", "nul\x00", "del\x7f"])
async def test_register_with_a_bad_name_is_400(
    alice: httpx.AsyncClient, joblib: JobLib, name: str
) -> None:
    answer = await alice.put(
        "/rooms/room1/jobs", json={"category": "modifiers", "name": name}
    )
    assert_problem(answer, 400, "invalid-job-name")
    assert (await row_counts(joblib))["joblib_job"] == 0


@pytest.mark.parametrize("room_id", ["@global", "@internal"])
async def test_only_admins_register_in_reserved_rooms(
    alice: httpx.AsyncClient, admin: httpx.AsyncClient, room_id: str
) -> None:
    answer = await alice.put(
        f"/rooms/{room_id}/jobs", json={"category": "modifiers", "name": "Rotate"}
    )
    assert_problem(answer, 403, "forbidden")
    job = await register(admin, room_id)
    assert job["full_name"] == f"{room_id}:modifiers:Rotate"


async def test_register_with_an_unknown_or_foreign_worker_is_404(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, joblib: JobLib
) -> None:
    bobs_worker = await create_worker(bob)
    before = await row_counts(joblib)
    for worker_id in (str(uuid.uuid4()), bobs_worker):
        answer = await alice.put(
            "/rooms/room1/jobs",
            json={"category": "modifiers", "name": "Rotate", "worker_id": worker_id},
        )
        assert_problem(answer, 404, "worker-not-found")
    assert await row_counts(joblib) == before


async def test_job_is_hidden_when_its_last_worker_leaves_and_revived_later(
    alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    first = await register(alice)
    assert (await alice.delete(f"/workers/{first['worker_id']}")).status_code == 204
    assert (await job_row(joblib, "Rotate")).deleted
    answer = await alice.get("/rooms/room1/jobs/room1:modifiers:Rotate")
    assert_problem(answer, 404, "job-not-found")
    assert (await alice.get("/rooms/room1/jobs")).json()["total"] == 0
    assert_problem(
        await alice.post("/rooms/room1/tasks/room1:modifiers:Rotate", json={}),
        404,
        "job-not-found",
    )

    # Revival keeps the row (and the history of its tasks) but takes the new schema.
    revived = await register(alice, schema=OTHER_SCHEMA, expect=201)
    assert revived["id"] == first["id"]
    assert revived["schema"] == OTHER_SCHEMA
    assert not (await job_row(joblib, "Rotate")).deleted
    assert (await alice.get("/rooms/room1/jobs")).json()["total"] == 1


async def test_a_hidden_jobs_task_history_stays_readable(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    task_id, worker_id = await claimed_task(alice, bob, start=True)
    await update(alice, task_id, "completed")
    await alice.delete(f"/workers/{worker_id}")
    job_name = full_name()
    assert (await bob.get(f"/rooms/room1/jobs/{job_name}")).status_code == 404
    page = (await bob.get(f"/rooms/room1/jobs/{job_name}/tasks")).json()
    assert [t["id"] for t in page["items"]] == [task_id]
    assert (await bob.get(f"/tasks/{task_id}")).json()["status"] == "completed"


async def test_job_stays_while_it_has_pending_tasks(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, joblib: JobLib
) -> None:
    worker_id, job_name = await serving_job(alice)
    task = await submit(bob, job_name)
    await alice.delete(f"/workers/{worker_id}")
    assert not (await job_row(joblib, "Rotate")).deleted
    assert (await bob.get(f"/rooms/room1/jobs/{job_name}")).status_code == 200
    await submit(bob, job_name)  # still accepts work for a future worker

    # Once the last open task is gone, nothing holds the job any more.
    await update(bob, task["id"], "cancelled")
    assert not (await job_row(joblib, "Rotate")).deleted
    page = (await bob.get("/rooms/room1/tasks", params={"status": "pending"})).json()
    await update(bob, page["items"][0]["id"], "cancelled")
    assert (await job_row(joblib, "Rotate")).deleted


async def test_room_job_is_invisible_from_other_rooms(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    _, job_name = await serving_job(alice, "room1")
    assert_problem(await bob.get(f"/rooms/room2/jobs/{job_name}"), 404, "job-not-found")
    assert (await bob.get("/rooms/room2/jobs")).json()["total"] == 0
    answer = await bob.post(f"/rooms/room2/tasks/{job_name}", json={"payload": {}})
    assert_problem(answer, 404, "job-not-found")
    answer = await bob.get(f"/rooms/room2/jobs/{job_name}/tasks")
    assert_problem(answer, 404, "job-not-found")


async def test_room_lists_include_global_and_internal_jobs(
    alice: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    await register(alice, "room1", "Local")
    await register(alice, "room2", "Elsewhere")
    await register(admin, "@global", "Shared")
    await register(admin, "@internal", "Builtin")

    names = [
        j["full_name"] for j in (await alice.get("/rooms/room1/jobs")).json()["items"]
    ]
    assert names == [
        "@internal:modifiers:Builtin",
        "@global:modifiers:Shared",
        "room1:modifiers:Local",
    ]
    page = (await alice.get("/rooms/@global/jobs")).json()
    assert [j["full_name"] for j in page["items"]] == ["@global:modifiers:Shared"]
    assert page["total"] == 1
    assert set(page["items"][0]) == {"full_name", "category", "name", "workers"}
    got = await alice.get("/rooms/room1/jobs/@global:modifiers:Shared")
    assert got.status_code == 200
    assert got.json()["room_id"] == "@global"


async def test_job_list_pages(alice: httpx.AsyncClient) -> None:
    worker_id = await create_worker(alice)
    for name in ("A", "B", "C", "D"):
        await register(alice, name=name, worker_id=worker_id)
    page = (
        await alice.get("/rooms/room1/jobs", params={"limit": 2, "offset": 1})
    ).json()
    assert [j["name"] for j in page["items"]] == ["C", "B"]
    assert (page["total"], page["limit"], page["offset"]) == (4, 2, 1)
    page = (await alice.get("/rooms/room1/jobs", params={"offset": 10})).json()
    assert (page["items"], page["total"]) == ([], 4)


@pytest.mark.parametrize(
    "job_name",
    ["room1:modifiers:Nope", "not-a-full-name", "a:b:c:d", "room1:modifiers:"],
)
async def test_unknown_job_is_404(alice: httpx.AsyncClient, job_name: str) -> None:
    await register(alice)
    assert_problem(
        await alice.get(f"/rooms/room1/jobs/{job_name}"), 404, "job-not-found"
    )


@pytest.mark.parametrize("room_id", ["a:b", "a@b"])
async def test_job_routes_reject_bad_room_ids(
    alice: httpx.AsyncClient, room_id: str
) -> None:
    for path in (
        f"/rooms/{room_id}/jobs",
        f"/rooms/{room_id}/jobs/room1:modifiers:Rotate",
        f"/rooms/{room_id}/jobs/room1:modifiers:Rotate/tasks",
    ):
        assert_problem(await alice.get(path), 400, "invalid-room-id")


async def test_job_tasks_list_that_jobs_tasks_in_that_room(
    alice: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    worker_id, job_name = await serving_job(admin, "@global")
    _, other_job = await serving_job(alice, "room1", "Scale")
    first = await submit(alice, job_name, "room1")
    second = await submit(alice, job_name, "room1")
    await submit(alice, job_name, "room2")
    await submit(alice, other_job, "room1")
    await claim(admin, worker_id)

    page = (await alice.get(f"/rooms/room1/jobs/{job_name}/tasks")).json()
    assert [t["id"] for t in page["items"]] == [second["id"], first["id"]]
    assert page["total"] == 2
    claimed = await alice.get(
        f"/rooms/room1/jobs/{job_name}/tasks", params={"status": "claimed"}
    )
    assert [t["id"] for t in claimed.json()["items"]] == [first["id"]]
    pending = await alice.get(
        f"/rooms/room1/jobs/{job_name}/tasks", params={"status": "pending"}
    )
    # The room2 task queues behind it: positions are per job, not per room.
    assert [t["queue_position"] for t in pending.json()["items"]] == [1]


async def test_register_emits_jobs_invalidate_once_per_change(
    alice: httpx.AsyncClient, emitter: RecordingEmitter
) -> None:
    job = await register(alice)
    assert emitter.sent == [Emission(JobsInvalidate(), "room:room1")]
    emitter.clear()
    await register(alice, worker_id=job["worker_id"], expect=200)
    assert emitter.sent == []  # nothing changed: no one needs to refetch
    await register(alice, expect=200)  # a new worker joined
    assert emitter.sent == [Emission(JobsInvalidate(), "room:room1")]


async def test_sixteen_workers_register_the_same_job_at_once(
    make_client: ClientFactory, joblib: JobLib
) -> None:
    tokens = {ALICE: "alice", BOB: "bob", ADMIN: "admin"}
    answers: list[tuple[str, httpx.Response]] = []

    async def one(index: int) -> None:
        token = list(tokens)[index % len(tokens)]
        answer = await make_client(token).put(
            "/rooms/room1/jobs",
            json={"category": "modifiers", "name": "Rotate", "schema": SCHEMA},
        )
        answers.append((tokens[token], answer))

    async with anyio.create_task_group() as group:
        for index in range(16):
            group.start_soon(one, index)

    # The first registration makes the job its identity's; the others join it,
    # except another non-admin identity, whose registration is refused whole.
    [owner] = [who for who, answer in answers if answer.status_code == 201]
    joined = [a for who, a in answers if who in (owner, "admin")]
    refused = [a for who, a in answers if who not in (owner, "admin")]
    assert sorted(a.status_code for a in joined) == [200] * (len(joined) - 1) + [201]
    assert all(a.status_code == 403 for a in refused), [a.text for a in refused]
    assert len({answer.json()["id"] for answer in joined}) == 1
    assert (await job_row(joblib, "Rotate")).owner_id == owner
    counts = await row_counts(joblib)
    assert counts["joblib_job"] == 1
    assert counts["joblib_worker"] == len(joined)
    assert counts["joblib_worker_job"] == len(joined)
