"""Idempotency-Key on submits: a submit sent again makes no second task."""

from __future__ import annotations

from datetime import timedelta

import anyio
import httpx
import pytest
import sqlalchemy as sa

from joblib_protocol import TaskAvailable
from joblib_server import JobLib, RecordingEmitter, sweep_once
from joblib_server.idempotency import forget_expired_keys
from joblib_server.tables import IDEMPOTENCY_TABLE, utcnow
from tests.support.rest import assert_problem, claim, serving_job
from tests.support.rows import row_counts

pytestmark = pytest.mark.anyio

DAY = timedelta(days=1)


async def _submit(
    client: httpx.AsyncClient, job_name: str, key: str, payload: int = 1
) -> httpx.Response:
    answer = await client.post(
        f"/rooms/room1/tasks/{job_name}",
        json={"payload": {"n": payload}},
        headers={"Idempotency-Key": key},
    )
    assert answer.status_code == 202, answer.text
    return answer


async def _keys(joblib: JobLib) -> list[tuple[str, str]]:
    async with joblib.database.read() as session:
        rows = await session.execute(
            sa.select(IDEMPOTENCY_TABLE.c.owner_id, IDEMPOTENCY_TABLE.c.key)
        )
        return sorted((owner, key) for owner, key in rows)


async def _age_keys(joblib: JobLib, by: timedelta) -> None:
    async with joblib.database.write() as session:
        await session.execute(
            sa.update(IDEMPOTENCY_TABLE).values(created_at=utcnow() - by)
        )


async def test_the_same_key_answers_the_first_task_as_it_is_now(
    joblib: JobLib,
    alice: httpx.AsyncClient,
    bob: httpx.AsyncClient,
    emitter: RecordingEmitter,
) -> None:
    worker_id, job_name = await serving_job(alice)
    first = await _submit(bob, job_name, "order-17")
    assert "idempotent-replayed" not in first.headers
    await claim(alice, worker_id)

    again = await _submit(bob, job_name, "order-17", payload=2)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == first.headers["location"]
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["status"] == "claimed"  # the task now, not a copy
    assert again.json()["payload"] == {"n": 1}
    assert (await row_counts(joblib))["joblib_task"] == 1
    available = [e for e in emitter.sent if isinstance(e.event, TaskAvailable)]
    assert len(available) == 1  # announced once


async def test_a_key_is_the_identitys_own(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    _, job_name = await serving_job(alice)
    mine = await _submit(alice, job_name, "k")
    theirs = await _submit(bob, job_name, "k")
    assert mine.json()["id"] != theirs.json()["id"]
    other = await _submit(bob, job_name, "k2")
    assert other.json()["id"] != theirs.json()["id"]


async def test_concurrent_submits_with_one_key_make_one_task(
    joblib: JobLib, alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    _, job_name = await serving_job(alice)
    ids: list[str] = []

    async def submit() -> None:
        ids.append((await _submit(bob, job_name, "once")).json()["id"])

    async with anyio.create_task_group() as group:
        for _ in range(12):
            group.start_soon(submit)
    assert len(set(ids)) == 1
    assert (await row_counts(joblib))["joblib_task"] == 1


async def test_a_key_older_than_its_time_to_live_makes_a_new_task(
    joblib: JobLib, alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    _, job_name = await serving_job(alice)
    first = await _submit(bob, job_name, "daily")
    await _age_keys(joblib, DAY + timedelta(seconds=1))
    second = await _submit(bob, job_name, "daily")
    assert second.json()["id"] != first.json()["id"]
    assert "idempotent-replayed" not in second.headers
    third = await _submit(bob, job_name, "daily")
    assert third.json()["id"] == second.json()["id"]


async def test_the_sweeper_forgets_expired_keys_in_batches(
    joblib: JobLib, alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    _, job_name = await serving_job(alice)
    for key in ("a", "b", "c"):
        await _submit(bob, job_name, key)
    await _age_keys(joblib, DAY + timedelta(seconds=1))
    await _submit(bob, job_name, "fresh")
    ttl = joblib.settings.idempotency_key_ttl_seconds
    assert await joblib.execute(forget_expired_keys, ttl, 2) == 2
    assert await joblib.execute(forget_expired_keys, ttl, 2) == 1
    assert await joblib.execute(forget_expired_keys, ttl, 2) == 0
    assert await _keys(joblib) == [("bob", "fresh")]

    await _age_keys(joblib, DAY + timedelta(seconds=1))
    sweep = await sweep_once(joblib)
    assert sweep.idempotency_keys == 1
    assert await _keys(joblib) == []


@pytest.mark.parametrize(
    "key",
    ["", '""', "x" * 256, "tab\there", "ünïcode"],
    ids=["empty", "quotes", "long", "control", "non-ascii"],
)
async def test_a_key_that_cannot_be_one_is_422(
    joblib: JobLib, alice: httpx.AsyncClient, key: str
) -> None:
    _, job_name = await serving_job(alice)
    answer = await alice.post(
        f"/rooms/room1/tasks/{job_name}",
        json={},
        headers={b"Idempotency-Key": key.encode()},
    )
    body = assert_problem(answer, 422, "validation-error")
    assert body["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    assert (await row_counts(joblib))["joblib_task"] == 0


async def test_a_quoted_key_is_the_same_key(alice: httpx.AsyncClient) -> None:
    _, job_name = await serving_job(alice)
    plain = await _submit(alice, job_name, "q-1")
    quoted = await _submit(alice, job_name, '"q-1"')
    assert quoted.json()["id"] == plain.json()["id"]
