"""Batch submit: `POST /rooms/{room_id}/tasks/{full_name}/batch` (issue 18, part 4)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from anyio import create_task_group, fail_after

from joblib_protocol import TaskAvailable, TaskStatusEvent
from joblib_server import JobLib, RecordingEmitter, Settings
from joblib_server.auth import Identity
from joblib_server.policy import Action, OpenRooms
from joblib_server.tables import TASK_TABLE
from tests.support.rest import (
    ROOM,
    assert_problem,
    claim,
    create_worker,
    get_task,
    held_claim,
    register,
    serving_job,
    submit,
)
from tests.support.rows import row_counts, snapshot
from tests.support.servers import LiveServer, make_settings
from tests.support.sockets import connect_peer
from tests.support.tokens import ALICE, bearer
from tests.support.waiting import aeventually

pytestmark = pytest.mark.anyio

LIMIT = 20
WAIT = 30


@pytest.fixture
def settings() -> Settings:
    # Held claims re-check only after a minute: an answer must come from a wake-up.
    return make_settings(
        max_batch_size=LIMIT,
        max_body_bytes=4096,
        long_poll_max_wait_seconds=WAIT,
        long_poll_recheck_seconds=60,
    )


def _batch(job_name: str, room_id: str = ROOM) -> str:
    return f"/rooms/{room_id}/tasks/{job_name}/batch"


async def _submit_batch(
    client: httpx.AsyncClient, job_name: str, payloads: list[dict], **extra: object
) -> list[dict]:
    answer = await client.post(_batch(job_name), json={"payloads": payloads, **extra})
    assert answer.status_code == 202, answer.text
    assert answer.headers["content-type"] == "application/json"
    items: list[dict] = answer.json()["items"]
    return items


async def _stored(joblib: JobLib) -> list[tuple[str, int, dict]]:
    """Every task row, by sequence number: (id, seq, payload)."""
    task = TASK_TABLE
    async with joblib.database.read() as session:
        rows = await session.execute(
            sa.select(task.c.id, task.c.seq, task.c.payload).order_by(task.c.seq)
        )
        return [(str(row.id), row.seq, row.payload) for row in rows]


async def test_a_batch_answers_its_tasks_in_order(
    alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    _, job_name = await serving_job(alice)
    payloads = [{"angle": angle} for angle in (10, 20, 30, 40)]
    items = await _submit_batch(alice, job_name, payloads)
    assert [item["payload"] for item in items] == payloads
    assert [item["queue_position"] for item in items] == [1, 2, 3, 4]
    assert {item["status"] for item in items} == {"pending"}
    assert {item["job_name"] for item in items} == {job_name}
    assert {item["room_id"] for item in items} == {ROOM}
    for item in items:
        assert await get_task(alice, item["id"]) == item
    stored = await _stored(joblib)
    assert [row[0] for row in stored] == [item["id"] for item in items]
    seqs = [row[1] for row in stored]
    assert seqs == list(range(seqs[0], seqs[0] + 4))
    assert [row[2] for row in stored] == payloads


async def test_a_batch_joins_the_end_of_the_queue_between_single_submits(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    worker_id, job_name = await serving_job(alice)
    first = await submit(bob, job_name, payload={"angle": 0})
    batch = await _submit_batch(bob, job_name, [{"angle": 1}, {"angle": 2}])
    last = await submit(bob, job_name, payload={"angle": 3})
    second = await _submit_batch(bob, job_name, [{"angle": 4}])
    assert first["queue_position"] == 1
    assert [item["queue_position"] for item in batch] == [2, 3]
    assert last["queue_position"] == 4
    assert second[0]["queue_position"] == 5
    queued = [first, *batch, last, *second]
    # The queue moves on: each position is one less after a claim.
    assert (await claim(alice, worker_id))["id"] == first["id"]  # type: ignore[index]
    positions = [(await get_task(bob, t["id"]))["queue_position"] for t in queued[1:]]
    assert positions == [1, 2, 3, 4]
    claimed = [(await claim(alice, worker_id)) for _ in queued[1:]]
    assert [task["id"] for task in claimed if task] == [t["id"] for t in queued[1:]]
    assert await claim(alice, worker_id) is None


async def test_one_bad_payload_stores_nothing(
    alice: httpx.AsyncClient, joblib: JobLib, emitter: RecordingEmitter
) -> None:
    _, job_name = await serving_job(alice)
    await submit(alice, job_name, payload={"angle": 1})
    before = await row_counts(joblib)
    sent = len(emitter.sent)
    payloads = [{"angle": 1}, {"angle": "left"}, {"angle": 2}, {"angle": [3]}]
    answer = await alice.post(_batch(job_name), json={"payloads": payloads})
    body = assert_problem(answer, 422, "invalid-payload")
    assert [error["loc"] for error in body["errors"]] == [
        ["body", "payloads", 1, "angle"],
        ["body", "payloads", 3, "angle"],
    ]
    assert body["detail"].startswith("2 of 4 payloads do not match")
    assert "payloads[1]" in body["detail"]
    assert await row_counts(joblib) == before
    assert len(emitter.sent) == sent
    # The job's numbering went back with the rest: the next task is second in line.
    assert (await submit(alice, job_name))["queue_position"] == 2


async def test_every_task_is_announced_and_offered(
    alice: httpx.AsyncClient, emitter: RecordingEmitter
) -> None:
    _, job_name = await serving_job(alice)
    await submit(alice, job_name)
    emitter.sent.clear()
    items = await _submit_batch(alice, job_name, [{"angle": n} for n in range(5)])
    statuses = {
        e.event.id: (e.event.status, e.event.queue_position, e.room)
        for e in emitter.sent
        if isinstance(e.event, TaskStatusEvent)
    }
    assert statuses == {
        item["id"]: ("pending", index + 2, f"room:{ROOM}")
        for index, item in enumerate(items)
    }
    offered = [e for e in emitter.sent if isinstance(e.event, TaskAvailable)]
    assert sorted(
        e.event.task_id for e in offered if isinstance(e.event, TaskAvailable)
    ) == sorted(i["id"] for i in items)
    assert {e.room for e in offered} == {f"jobs:{job_name}"}


async def test_each_task_wakes_a_held_claim(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, joblib: JobLib
) -> None:
    worker_id, job_name = await serving_job(alice)
    workers = [worker_id]
    for _ in range(3):
        other = await create_worker(alice)
        await register(alice, worker_id=other, expect=200)
        workers.append(other)
    answers: list[httpx.Response] = []
    with fail_after(WAIT / 2):  # not the cap, nor the minute's re-check
        async with create_task_group() as group:
            for worker in workers:
                group.start_soon(held_claim, alice, worker, answers, WAIT)
            await aeventually(
                lambda: len(joblib.claims) == len(workers), what="held claims"
            )
            items = await _submit_batch(bob, job_name, [{"angle": n} for n in range(4)])
    assert [answer.status_code for answer in answers] == [200] * 4
    taken = {answer.json()["task"]["id"] for answer in answers}
    assert taken == {item["id"] for item in items}


async def test_time_limits_apply_to_every_task(alice: httpx.AsyncClient) -> None:
    _, job_name = await serving_job(alice)
    items = await _submit_batch(
        alice,
        job_name,
        [{}, {}],
        timeout_seconds=5,
        pending_timeout_seconds=60,
    )
    assert {item["timeout_seconds"] for item in items} == {5}
    assert None not in {item["expires_at"] for item in items}
    assert len({item["created_at"] for item in items}) == 1


async def test_too_many_or_no_payloads_is_422(
    alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    _, job_name = await serving_job(alice)
    before = await snapshot(joblib)
    answer = await alice.post(_batch(job_name), json={"payloads": [{}] * (LIMIT + 1)})
    body = assert_problem(answer, 422, "validation-error")
    assert f"over this server's limit of {LIMIT} (max_batch_size)" in body["detail"]
    assert body["errors"][0]["loc"] == ["body", "payloads"]
    bad: dict[str, Any]
    for bad in ({"payloads": []}, {}, {"payloads": [1]}):
        answer = await alice.post(_batch(job_name), json=bad)
        assert_problem(answer, 422, "validation-error")
    assert await snapshot(joblib) == before
    await _submit_batch(alice, job_name, [{}] * LIMIT)


async def test_a_batch_body_may_be_sixteen_times_a_submits(
    alice: httpx.AsyncClient,
) -> None:
    _, job_name = await serving_job(alice)
    filler = "x" * 3000  # 4096 bytes a body (settings): one payload nearly fills it
    items = await _submit_batch(alice, job_name, [{"note": filler}] * LIMIT)
    assert len(items) == LIMIT
    answer = await alice.post(
        _batch(job_name), json={"payloads": [{"note": "x" * 70_000}]}
    )
    assert_problem(answer, 413, "payload-too-large")


async def test_an_idempotency_key_is_refused(
    alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    _, job_name = await serving_job(alice)
    before = await snapshot(joblib)
    answer = await alice.post(
        _batch(job_name), json={"payloads": [{}]}, headers={"Idempotency-Key": "k1"}
    )
    body = assert_problem(answer, 422, "validation-error")
    assert body["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    assert await snapshot(joblib) == before


class _Refusing(OpenRooms):
    """Submits refused in `closed`, writes locked in `frozen`."""

    def restricts(self, identity: Identity) -> bool:
        return True

    async def allows(self, identity: Identity, room_id: str, action: Action) -> bool:
        return not (room_id == "closed" and action == Action.SUBMIT)

    async def locked(self, identity: Identity, room_id: str) -> bool:
        return room_id == "frozen"


async def test_refusals_are_a_submits(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, joblib: JobLib
) -> None:
    _, job_name = await serving_job(alice)
    _, elsewhere = await serving_job(alice, "room2")
    await serving_job(alice, "closed")
    await serving_job(alice, "frozen")
    joblib.policy = _Refusing()
    before = await snapshot(joblib)
    body: dict[str, Any] = {"payloads": [{}]}
    cases = [
        ("closed", "closed:modifiers:Rotate", 403, "forbidden"),
        ("frozen", "frozen:modifiers:Rotate", 423, "room-locked"),
        (ROOM, "room1:modifiers:Unknown", 404, "job-not-found"),
        (ROOM, elsewhere, 404, "job-not-found"),  # another room's job
        (ROOM, "not a name", 404, "job-not-found"),
    ]
    for room_id, name, status, slug in cases:
        answer = await bob.post(_batch(name, room_id), json=body)
        assert_problem(answer, status, slug)
    assert await snapshot(joblib) == before
    assert len(await _submit_batch(bob, job_name, [{}])) == 1


async def test_a_global_job_takes_batches_from_any_room(
    admin: httpx.AsyncClient, alice: httpx.AsyncClient
) -> None:
    await register(admin, "@global", "Everywhere")
    name = "@global:modifiers:Everywhere"
    answer = await alice.post(
        _batch(name, "room7"), json={"payloads": [{"angle": 1}, {"angle": 2}]}
    )
    assert answer.status_code == 202, answer.text
    assert {item["room_id"] for item in answer.json()["items"]} == {"room7"}


async def test_an_observer_hears_of_every_task(live_server: LiveServer) -> None:
    async with httpx.AsyncClient(
        base_url=live_server.api, headers=bearer(ALICE)
    ) as alice:
        with connect_peer(live_server.url, token=ALICE, rooms=(ROOM,)) as observer:
            _, job_name = await serving_job(alice)
            payloads = [{"angle": n} for n in range(10)]
            items = await _submit_batch(alice, job_name, payloads)
            ids = {item["id"] for item in items}

            def heard() -> bool:
                seen = {
                    payload["id"]
                    for name, payload in list(observer.events)
                    if name == "task_status_event" and payload["status"] == "pending"
                }
                return seen == ids

            await aeventually(heard, what="a pending event for each of the 10 tasks")
