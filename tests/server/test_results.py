"""Task results: sent with `completed`, stored, read back, capped in size."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest

from joblib_server import JobLib, RecordingEmitter, Settings
from tests.support.rest import (
    assert_problem,
    claim,
    claimed_task,
    events,
    full_name,
    get_task,
    submit,
    update,
)
from tests.support.rows import snapshot
from tests.support.servers import make_settings
from tests.support.waiting import aeventually

pytestmark = pytest.mark.anyio

MAX_RESULT = 1000
MAX_BODY = 1500


@pytest.fixture
def settings() -> Settings:
    # A long re-check: a long-poll answered early was woken by the PATCH.
    return make_settings(
        max_result_bytes=MAX_RESULT,
        max_body_bytes=MAX_BODY,
        long_poll_max_wait_seconds=10,
        long_poll_recheck_seconds=30,
    )


async def _complete(
    client: httpx.AsyncClient, task_id: str, result: Any, **extra: Any
) -> httpx.Response:
    body = {"status": "completed", "result": result, **extra}
    return await client.patch(f"/tasks/{task_id}", json=body)


async def test_a_result_comes_back_from_patch_get_and_the_long_poll(
    alice: httpx.AsyncClient,
    bob: httpx.AsyncClient,
    joblib: JobLib,
    emitter: RecordingEmitter,
) -> None:
    task_id, worker_id = await claimed_task(alice, bob, start=True)
    result = {"mesh": [[0, 1, 2], [2, 3, 0]], "scale": 1.5, "name": "ü"}
    polled: list[httpx.Response] = []

    async def poll() -> None:
        prefer = {"Prefer": "wait=10"}
        polled.append(await bob.get(f"/tasks/{task_id}", headers=prefer))

    started = anyio.current_time()
    async with anyio.create_task_group() as group:
        group.start_soon(poll)
        await aeventually(lambda: len(joblib.waiters) == 1, what="the long-poll")
        answer = await _complete(alice, task_id, result, worker_id=worker_id)

    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "completed"
    assert answer.json()["result"] == result
    [woken] = polled
    assert anyio.current_time() - started < 5  # woken, not re-read after 30 s
    assert woken.json()["status"] == "completed"
    assert woken.json()["result"] == result
    assert (await get_task(bob, task_id))["result"] == result
    listed = (await bob.get("/rooms/room1/tasks")).json()["items"]
    assert [task["result"] for task in listed] == [result]
    # Results can be large: status events never carry them.
    for emission in events(emitter, "task_status_event"):
        assert "result" not in emission.event.payload()


@pytest.mark.parametrize(
    "result",
    [None, [1, "two", None], 42, -0.5, "done", True, {}, {"nested": {"deep": [{}]}}],
    ids=repr,
)
async def test_any_json_value_is_a_result(
    alice: httpx.AsyncClient, result: Any
) -> None:
    task_id, _ = await claimed_task(alice, alice, start=True)
    answer = await _complete(alice, task_id, result)
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"] == result
    task = await get_task(alice, task_id)
    assert (task["status"], task["result"]) == ("completed", result)


async def test_completed_without_a_result_has_none(alice: httpx.AsyncClient) -> None:
    task_id, _ = await claimed_task(alice, alice, start=True)
    assert (await update(alice, task_id, "completed"))["result"] is None
    assert (await get_task(alice, task_id))["result"] is None


async def test_a_result_over_the_limit_is_413_and_changes_nothing(
    alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    task_id, _ = await claimed_task(alice, alice, start=True)
    before = await snapshot(joblib)
    too_big = "x" * (MAX_RESULT - 1)  # 2 bytes more for the quotes
    answer = await _complete(alice, task_id, too_big)
    body = assert_problem(answer, 413, "payload-too-large")
    assert f"{MAX_RESULT + 1} bytes" in body["detail"]
    assert f"limit of {MAX_RESULT} bytes" in body["detail"]
    assert await snapshot(joblib) == before
    assert (await get_task(alice, task_id))["status"] == "running"

    just_fits = "x" * (MAX_RESULT - 2)
    assert json.dumps(just_fits).encode().__len__() == MAX_RESULT
    answer = await _complete(alice, task_id, just_fits)
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"] == just_fits


async def test_the_limit_counts_utf8_bytes(alice: httpx.AsyncClient) -> None:
    task_id, _ = await claimed_task(alice, alice, start=True)
    answer = await _complete(alice, task_id, "é" * (MAX_RESULT // 2))  # 2 bytes each
    assert_problem(answer, 413, "payload-too-large")


async def test_a_patch_body_may_hold_a_result_besides_the_usual_limit(
    alice: httpx.AsyncClient,
) -> None:
    task_id, worker_id = await claimed_task(alice, alice, start=True)
    result = "r" * (MAX_RESULT - 2)
    error = "e" * (MAX_BODY - 100)  # with the result, over max_body_bytes
    answer = await _complete(alice, task_id, result, error=error)
    assert answer.status_code == 200, answer.text
    assert len(answer.request.content) > MAX_BODY

    other = (await submit(alice, full_name()))["id"]
    assert (await claim(alice, worker_id, start=True) or {}).get("id") == other
    huge = {"status": "completed", "error": "e" * (MAX_BODY + MAX_RESULT)}
    answer = await alice.patch(f"/tasks/{other}", json=huge)
    assert_problem(answer, 413, "payload-too-large")
    # Elsewhere the usual limit holds.
    answer = await alice.post(
        f"/rooms/room1/tasks/{full_name()}", json={"payload": {"x": "y" * MAX_BODY}}
    )
    assert_problem(answer, 413, "payload-too-large")


@pytest.mark.parametrize(
    ("start", "status"),
    [(False, "running"), (True, "failed"), (True, "cancelled")],
)
@pytest.mark.parametrize("result", [{"partial": 1}, None], ids=["value", "null"])
async def test_a_result_with_another_status_is_422_and_changes_nothing(
    alice: httpx.AsyncClient, joblib: JobLib, start: bool, status: str, result: Any
) -> None:
    task_id, _ = await claimed_task(alice, alice, start=start)
    before = await snapshot(joblib)
    answer = await alice.patch(
        f"/tasks/{task_id}", json={"status": status, "result": result}
    )
    body = assert_problem(answer, 422, "validation-error")
    assert body["errors"][0]["loc"] == ["body", "result"]
    assert f"not {status!r}" in body["detail"]
    assert await snapshot(joblib) == before
