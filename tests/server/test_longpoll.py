"""Long-polling `GET /tasks/{id}` with `Prefer: wait=N`."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from functools import partial

import anyio
import httpx
import pytest

from joblib_server import JobLib, Settings, Task
from joblib_server.tables import utcnow
from tests.support.rest import assert_problem, claimed_task, update
from tests.support.rows import recorded_statements
from tests.support.servers import make_settings
from tests.support.waiting import aeventually

pytestmark = pytest.mark.anyio

CAP = 1.5


@pytest.fixture
def settings() -> Settings:
    # A small cap keeps the tests that wait it out short; the long re-check
    # interval shows that an early answer came from the wake-up, not a re-read.
    return make_settings(long_poll_max_wait_seconds=CAP, long_poll_recheck_seconds=30)


async def _poll(
    client: httpx.AsyncClient, task_id: str, prefer: str
) -> tuple[httpx.Response, float]:
    """GET the task with a Prefer header: the answer and how long it took."""
    started = anyio.current_time()
    answer = await client.get(f"/tasks/{task_id}", headers={"Prefer": prefer})
    return answer, anyio.current_time() - started


async def _poll_during(
    client: httpx.AsyncClient,
    joblib: JobLib,
    task_id: str,
    change: Callable[[], Awaitable[object]],
) -> tuple[httpx.Response, float]:
    """Long-poll the task with `wait=5` while `change` runs once the poll waits."""
    answers: list[tuple[httpx.Response, float]] = []

    async def poll() -> None:
        answers.append(await _poll(client, task_id, "wait=5"))

    with recorded_statements(joblib.database.engine) as statements:

        def waiting() -> bool:
            # Registered for the wake-up, and past its read of the task.
            read = any("joblib_task" in statement for statement in statements)
            return len(joblib.waiters) == 1 and read

        async with anyio.create_task_group() as group:
            group.start_soon(poll)
            await aeventually(waiting, what="the long-poll to wait")
            await change()
    [answer] = answers
    return answer


async def test_answers_as_soon_as_the_task_finishes(
    alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    task_id, _ = await claimed_task(alice, alice, start=True)
    answer, elapsed = await _poll_during(
        alice, joblib, task_id, partial(update, alice, task_id, "completed")
    )
    assert answer.status_code == 200
    assert answer.json()["status"] == "completed"
    assert elapsed < CAP - 0.5
    # wait=5 was asked for; the server applied its cap.
    assert answer.headers["preference-applied"] == "wait=1.5"


async def test_without_a_change_answers_at_the_cap(alice: httpx.AsyncClient) -> None:
    task_id, _ = await claimed_task(alice, alice, start=True)
    answer, elapsed = await _poll(alice, task_id, "wait=999999")
    assert answer.status_code == 200
    assert answer.json()["status"] == "running"
    assert CAP - 0.1 <= elapsed < CAP + 1
    assert answer.headers["preference-applied"] == "wait=1.5"


async def test_a_shorter_wait_is_honoured(alice: httpx.AsyncClient) -> None:
    task_id, _ = await claimed_task(alice, alice, start=True)
    answer, elapsed = await _poll(alice, task_id, "respond-async, wait=1")
    assert 0.9 <= elapsed < CAP
    assert answer.headers["preference-applied"] == "wait=1"


async def test_a_terminal_task_answers_at_once(alice: httpx.AsyncClient) -> None:
    task_id, _ = await claimed_task(alice, alice, start=True)
    await update(alice, task_id, "failed", "boom")
    answer, elapsed = await _poll(alice, task_id, "wait=5")
    assert elapsed < 0.5
    assert answer.json()["error"] == "boom"
    # Nothing waited, so no preference was applied (as zndraw-joblib answers).
    assert "preference-applied" not in answer.headers


@pytest.mark.parametrize(
    "prefer", [None, "wait=abc", "return=minimal", "wait=-3", "wait=0"]
)
async def test_without_a_wait_to_apply_answers_at_once(
    alice: httpx.AsyncClient, prefer: str | None
) -> None:
    task_id, _ = await claimed_task(alice, alice, start=True)
    headers = {"Prefer": prefer} if prefer else {}
    started = anyio.current_time()
    answer = await alice.get(f"/tasks/{task_id}", headers=headers)
    assert anyio.current_time() - started < 0.5
    assert answer.status_code == 200
    assert "preference-applied" not in answer.headers


async def test_an_unknown_task_is_404_at_once(alice: httpx.AsyncClient) -> None:
    answer, elapsed = await _poll(alice, str(uuid.uuid4()), "wait=5")
    assert_problem(answer, 404, "task-not-found")
    assert elapsed < 0.5


async def test_a_change_made_elsewhere_is_seen_at_the_recheck(
    alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    # Another server process would change the row without waking our waiters.
    joblib.settings.long_poll_recheck_seconds = 0.3
    task_id, _ = await claimed_task(alice, alice, start=True)

    async def complete_behind_our_back() -> None:
        async with joblib.database.write() as session:
            task = await session.get_one(Task, uuid.UUID(task_id))
            task.status = "completed"
            task.completed_at = utcnow()

    answer, elapsed = await _poll_during(
        alice, joblib, task_id, complete_behind_our_back
    )
    assert answer.json()["status"] == "completed"
    assert elapsed < 1.0


async def test_many_waiters_all_wake(alice: httpx.AsyncClient, joblib: JobLib) -> None:
    task_id, _ = await claimed_task(alice, alice, start=True)
    statuses: list[str] = []

    async def poll() -> None:
        answer, _ = await _poll(alice, task_id, "wait=5")
        statuses.append(answer.json()["status"])

    with anyio.fail_after(CAP - 0.3):
        async with anyio.create_task_group() as group:
            for _ in range(10):
                group.start_soon(poll)
            await aeventually(lambda: len(joblib.waiters) == 10, what="10 long-polls")
            await update(alice, task_id, "cancelled")
    assert statuses == ["cancelled"] * 10
    assert len(joblib.waiters) == 0  # nobody left registered
