"""Unit tests of the waiting logic: held claims and long-polls, without a database.

The loops take their database work as callables; here those are scripted, so each
test drives one path of the loop and checks what it claims, when it parks, and
whom it wakes.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime

import anyio
import pytest

from joblib_protocol import (
    Emission,
    TaskAvailable,
    TaskResponse,
    TaskStatus,
    TaskStatusEvent,
)
from joblib_server.dispatch import (
    Claim,
    ClaimWaiters,
    TaskWaiters,
    hold_claim,
    recheck_claims,
    wait_until_terminal,
)
from tests.support import aeventually

pytestmark = pytest.mark.anyio

JOB_A = "room1:modifiers:A"
JOB_B = "room1:modifiers:B"
WORKER = uuid.uuid4()


def _task(job: str = JOB_A, status: TaskStatus = TaskStatus.CLAIMED) -> TaskResponse:
    return TaskResponse(
        id=uuid.uuid4(),
        job_name=job,
        room_id="room1",
        status=status,
        created_at=datetime.now(UTC),
    )


class Script:
    """A claim callable that answers from a list, then with nothing for `jobs`."""

    def __init__(self, answers: Iterable[Claim], jobs: tuple[str, ...]) -> None:
        self.answers = list(answers)
        self.jobs = jobs
        self.calls = 0

    async def __call__(self) -> Claim:
        self.calls += 1
        if self.answers:
            return self.answers.pop(0)
        return Claim(None, self.jobs)


async def _never_gone() -> bool:
    return False


async def _gone() -> bool:
    return True


async def _hold(
    claim: Callable[[], Awaitable[Claim]],
    claims: ClaimWaiters,
    *,
    wait: float = 10,
    client_gone: Callable[[], Awaitable[bool]] = _never_gone,
    worker_id: uuid.UUID = WORKER,
) -> Claim | None:
    return await hold_claim(
        claim,
        claims,
        worker_id,
        wait=wait,
        client_gone=client_gone,
    )


async def test_a_task_found_at_once_is_returned_without_parking() -> None:
    task = _task()
    claims = ClaimWaiters()
    script = Script([Claim(task)], (JOB_A,))
    found = await _hold(script, claims)
    assert found == Claim(task)
    assert script.calls == 1
    assert len(claims) == 0


async def test_a_first_empty_claim_learns_the_jobs_and_claims_again_parked() -> None:
    claims = ClaimWaiters()
    script = Script([], (JOB_A, JOB_B))
    result: list[Claim | None] = []
    async with anyio.create_task_group() as group:

        async def hold() -> None:
            result.append(await _hold(script, claims))

        group.start_soon(hold)
        await aeventually(lambda: len(claims) == 1, what="the claim to park")
        # Claimed once unparked, then once parked on the jobs it learned.
        assert script.calls == 2
        assert claims.known_jobs(WORKER) == (JOB_A, JOB_B)
        task = _task(JOB_B)
        script.answers.append(Claim(task))
        claims.wake(JOB_B)
    assert result == [Claim(task)]
    assert len(claims) == 0


async def test_a_known_worker_parks_before_its_first_claim() -> None:
    claims = ClaimWaiters()
    claims.remember(WORKER, (JOB_A,))
    script = Script([], (JOB_A,))
    async with anyio.create_task_group() as group:
        group.start_soon(_hold, script, claims)
        await aeventually(lambda: len(claims) == 1, what="the claim to park")
        assert script.calls == 1
        script.answers.append(Claim(_task()))
        claims.wake(JOB_A)


async def test_a_wake_for_another_job_does_not_wake_the_claim() -> None:
    claims = ClaimWaiters()
    claims.remember(WORKER, (JOB_A,))
    script = Script([], (JOB_A,))
    with anyio.move_on_after(0.2):
        async with anyio.create_task_group() as group:
            group.start_soon(_hold, script, claims)
            await aeventually(lambda: len(claims) == 1, what="the claim to park")
            claims.wake(JOB_B)
    assert script.calls == 1


async def test_without_a_wake_the_claim_answers_empty_at_the_cap() -> None:
    claims = ClaimWaiters()
    claims.remember(WORKER, (JOB_A,))
    script = Script([], (JOB_A,))
    found = await _hold(script, claims, wait=0.25)
    assert found == Claim(None, (JOB_A,))
    # One claim: no timer of its own in between, and none again at the cap.
    assert script.calls == 1
    assert len(claims) == 0


async def test_the_recheck_wakes_only_claims_whose_jobs_have_tasks() -> None:
    claims = ClaimWaiters()
    other = uuid.uuid4()
    claims.remember(WORKER, (JOB_A,))
    claims.remember(other, (JOB_B,))
    on_a, on_b = Script([], (JOB_A,)), Script([], (JOB_B,))
    asked: list[set[str]] = []

    async def pending() -> set[str]:
        asked.append(claims.parked_jobs())
        return {JOB_A, "room1:modifiers:nobody-waits"}

    async with anyio.create_task_group() as group:
        group.start_soon(recheck_claims, claims, pending, 0.05)
        group.start_soon(lambda: _hold(on_a, claims, wait=10))
        group.start_soon(lambda: _hold(on_b, claims, wait=0.5, worker_id=other))
        await aeventually(lambda: on_a.calls >= 3, what="re-checks to wake A")
        group.cancel_scope.cancel()
    # B's job has nothing pending: its claim only claims at the start and the cap.
    assert on_b.calls <= 2
    assert asked
    assert all(jobs <= {JOB_A, JOB_B} for jobs in asked)


async def test_a_claim_whose_client_left_hands_its_wake_up_on() -> None:
    claims = ClaimWaiters()
    for worker in (WORKER, uuid.uuid4()):
        claims.remember(worker, (JOB_A,))
    gone = Script([], (JOB_A,))
    staying = Script([], (JOB_A,))
    results: dict[str, Claim | None] = {}
    async with anyio.create_task_group() as group:

        async def hold(name: str, script: Script, **kwargs: object) -> None:
            results[name] = await _hold(script, claims, **kwargs)  # type: ignore[arg-type]

        group.start_soon(lambda: hold("gone", gone, client_gone=_gone))
        await aeventually(lambda: len(claims) == 1)
        group.start_soon(lambda: hold("staying", staying, worker_id=uuid.uuid4()))
        await aeventually(lambda: len(claims) == 2)
        task = _task()
        staying.answers.append(Claim(task))
        # The oldest parked claim is woken; its client is gone, so it passes on.
        claims.wake(JOB_A)
    assert results == {"gone": None, "staying": Claim(task)}
    assert gone.calls == 1


async def test_taking_another_jobs_task_passes_the_wake_up_on() -> None:
    claims = ClaimWaiters()
    claims.remember(WORKER, (JOB_A, JOB_B))
    other = uuid.uuid4()
    claims.remember(other, (JOB_B,))
    first = Script([], (JOB_A, JOB_B))
    second = Script([], (JOB_B,))
    async with anyio.create_task_group() as group:
        group.start_soon(_hold, first, claims)
        await aeventually(lambda: len(claims) == 1)
        group.start_soon(lambda: _hold(second, claims, worker_id=other))
        await aeventually(lambda: len(claims) == 2)
        # Woken for B, the first claim takes an older task of A instead...
        first.answers.append(Claim(_task(JOB_A)))
        second.answers.append(Claim(_task(JOB_B)))
        claims.wake(JOB_B)
    # ...so the B task's wake-up reached the second claim, which claimed again.
    assert second.calls == 2


async def test_releasing_a_worker_wakes_its_claims_only() -> None:
    claims = ClaimWaiters()
    other = uuid.uuid4()
    for worker in (WORKER, other):
        claims.remember(worker, (JOB_A,))
    mine = Script([], (JOB_A,))
    theirs = Script([], (JOB_A,))
    with anyio.move_on_after(0.3):
        async with anyio.create_task_group() as group:
            group.start_soon(_hold, mine, claims)
            group.start_soon(lambda: _hold(theirs, claims, worker_id=other))
            await aeventually(lambda: len(claims) == 2)
            claims.release(WORKER)
            await aeventually(lambda: mine.calls == 2, what="the released claim")
    assert theirs.calls == 1
    assert claims.known_jobs(WORKER) == ()


async def test_claims_are_woken_one_per_announced_task() -> None:
    claims = ClaimWaiters()
    parked = [claims.park(uuid.uuid4(), [JOB_A]) for _ in range(3)]
    entered = [p.__enter__() for p in parked]
    announce = Emission(
        TaskAvailable(job_name=JOB_A, room_id="room1", task_id=str(uuid.uuid4())),
        f"jobs:{JOB_A}",
    )
    claims.notify([announce])
    assert [p.woken.is_set() for p in entered] == [True, False, False]
    for p in reversed(parked):
        p.__exit__(None, None, None)
    assert len(claims) == 0


def _status(task: TaskResponse, status: TaskStatus) -> Emission:
    event = TaskStatusEvent(
        id=str(task.id),
        name=task.job_name,
        room_id=task.room_id,
        status=status,
        created_at=task.created_at,
    )
    return Emission(event, "room:room1")


async def test_a_long_poll_returns_a_terminal_task_at_once() -> None:
    task = _task(status=TaskStatus.COMPLETED)
    reads = 0

    async def read() -> TaskResponse:
        nonlocal reads
        reads += 1
        return task

    waiters = TaskWaiters()
    assert await wait_until_terminal(read, waiters, task.id, wait=10, recheck=30) == (
        task
    )
    assert reads == 1
    assert len(waiters) == 0


async def test_a_long_poll_is_woken_by_its_task_turning_terminal() -> None:
    running = _task(status=TaskStatus.RUNNING)
    current = running
    waiters = TaskWaiters()

    async def read() -> TaskResponse:
        return current

    result: list[TaskResponse] = []
    async with anyio.create_task_group() as group:

        async def poll() -> None:
            result.append(
                await wait_until_terminal(
                    read, waiters, running.id, wait=10, recheck=30
                )
            )

        group.start_soon(poll)
        await aeventually(lambda: len(waiters) == 1, what="the long-poll to wait")
        # A non-terminal change does not wake it.
        waiters.notify([_status(running, TaskStatus.RUNNING)])
        current = running.model_copy(update={"status": TaskStatus.FAILED})
        waiters.notify([_status(running, TaskStatus.FAILED)])
    assert [t.status for t in result] == [TaskStatus.FAILED]
    assert len(waiters) == 0


async def test_a_long_poll_rereads_and_answers_the_last_state_at_the_cap() -> None:
    task = _task(status=TaskStatus.RUNNING)
    reads = 0

    async def read() -> TaskResponse:
        nonlocal reads
        reads += 1
        return task

    found = await wait_until_terminal(
        read, TaskWaiters(), task.id, wait=0.25, recheck=0.1
    )
    assert found.status == TaskStatus.RUNNING
    assert reads >= 3
