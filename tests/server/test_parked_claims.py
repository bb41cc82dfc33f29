"""Claims parked with `Prefer: wait=N`: answered when a task comes, one per task."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from functools import partial

import anyio
import httpx
import pytest

from joblib_protocol import Emission, TaskStatusEvent
from joblib_server import JobLib, RecordingEmitter, Settings
from joblib_server.emitter import ordered
from tests.support.rest import (
    assert_problem,
    create_worker,
    register,
    serving_job,
    submit,
)
from tests.support.servers import LiveServer, make_settings
from tests.support.tokens import ALICE, BOB
from tests.support.waiting import aeventually

pytestmark = pytest.mark.anyio

CAP = 1.5


@pytest.fixture
def settings() -> Settings:
    # The long re-check interval shows that an early answer came from the
    # wake-up, not from a re-read.
    return make_settings(long_poll_max_wait_seconds=CAP, long_poll_recheck_seconds=30)


Answers = list[tuple[dict, float]]
"""Claim answers, each with the time it came."""


async def _parked_claim(
    client: httpx.AsyncClient, worker_id: str, answers: Answers
) -> None:
    """Claim with `Prefer: wait=5`; record the answer and when it came."""
    answer = await client.post(
        "/tasks/claim",
        json={"worker_id": worker_id, "start": True},
        headers={"Prefer": "wait=5"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["preference-applied"] == f"wait={CAP:g}"
    answers.append((answer.json(), anyio.current_time()))


async def _hold_then_submit(
    parked: Callable[[], int],
    claimer: httpx.AsyncClient,
    worker_ids: list[str],
    submitter: httpx.AsyncClient,
    job_name: str,
    count: int = 1,
    while_held: Callable[[], None] | None = None,
) -> tuple[Answers, list[dict], float]:
    """Hold a claim per worker, then submit `count` tasks; wait for every answer.

    `parked` counts the server's parked claims: the tasks are submitted once every
    new claim is parked. Returns the answers with their times, the tasks, and when
    submitting began.
    """
    answers: Answers = []
    held = parked() + len(worker_ids)
    async with anyio.create_task_group() as group:
        for worker_id in worker_ids:
            group.start_soon(_parked_claim, claimer, worker_id, answers)
        await aeventually(lambda: parked() == held, what=f"{held} parked claims")
        if while_held is not None:
            while_held()
        submitted_at = anyio.current_time()
        tasks = [await submit(submitter, job_name) for _ in range(count)]
    return answers, tasks, submitted_at


async def _another_worker(client: httpx.AsyncClient) -> str:
    """A new worker of `client`'s, serving the job of `serving_job`."""
    registered = await register(
        client, worker_id=await create_worker(client), expect=200
    )
    return str(registered["worker_id"])


async def test_a_parked_claim_gets_the_next_task_at_once(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, joblib: JobLib
) -> None:
    worker_id, job_name = await serving_job(alice)
    answers, [task], submitted_at = await _hold_then_submit(
        partial(len, joblib.claims), alice, [worker_id], bob, job_name
    )
    [(answer, at)] = answers
    assert answer["task"]["id"] == task["id"]
    assert answer["task"]["status"] == "running"
    assert answer["task"]["worker_id"] == worker_id
    assert at - submitted_at < CAP / 2  # woken, not timed out


async def test_a_parked_claim_with_nothing_to_do_answers_at_the_cap(
    alice: httpx.AsyncClient,
) -> None:
    worker_id, _ = await serving_job(alice)
    answers: Answers = []
    started = anyio.current_time()
    await _parked_claim(alice, worker_id, answers)
    [(answer, at)] = answers
    assert answer == {"task": None}
    assert CAP - 0.1 <= at - started < CAP + 1


async def test_one_task_wakes_one_parked_claim(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, joblib: JobLib
) -> None:
    """Three idle workers, one task: one gets it, the others stay parked."""
    first, job_name = await serving_job(alice)
    workers = [first, await _another_worker(alice), await _another_worker(alice)]

    def all_three_held() -> None:
        assert len(joblib.claims) == 3

    answers, [task], submitted_at = await _hold_then_submit(
        partial(len, joblib.claims),
        alice,
        workers,
        bob,
        job_name,
        while_held=all_three_held,
    )
    got = [(answer, at) for answer, at in answers if answer["task"] is not None]
    assert [answer["task"]["id"] for answer, _ in got] == [task["id"]]
    assert got[0][1] - submitted_at < CAP / 2
    empty = [at for answer, at in answers if answer["task"] is None]
    assert len(empty) == 2
    assert all(at - submitted_at > CAP / 2 for at in empty)  # not woken for nothing
    assert len(joblib.claims) == 0


async def test_each_task_reaches_a_different_parked_claim(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, joblib: JobLib
) -> None:
    first, job_name = await serving_job(alice)
    workers = [first, await _another_worker(alice), await _another_worker(alice)]
    answers, tasks, submitted_at = await _hold_then_submit(
        partial(len, joblib.claims), alice, workers, bob, job_name, count=len(workers)
    )
    assert sorted(answer["task"]["id"] for answer, _ in answers) == sorted(
        task["id"] for task in tasks
    )
    assert sorted(answer["task"]["worker_id"] for answer, _ in answers) == sorted(
        workers
    )
    assert all(at - submitted_at < CAP / 2 for _, at in answers)


async def test_deleting_the_worker_ends_its_parked_claim(
    alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    worker_id, _ = await serving_job(alice)
    answers: list[httpx.Response] = []

    async def parked() -> None:
        answers.append(
            await alice.post(
                "/tasks/claim",
                json={"worker_id": worker_id},
                headers={"Prefer": "wait=5"},
            )
        )

    async with anyio.create_task_group() as group:
        group.start_soon(parked)
        await aeventually(lambda: len(joblib.claims) == 1, what="the claim to park")
        deleted_at = anyio.current_time()
        assert (await alice.delete(f"/workers/{worker_id}")).status_code == 204
    assert anyio.current_time() - deleted_at < CAP / 2
    [answer] = answers
    assert_problem(answer, 404, "worker-not-found")


async def test_a_parked_claim_of_another_identitys_worker_is_refused_at_once(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    worker_id, _ = await serving_job(alice)
    started = anyio.current_time()
    answer = await bob.post(
        "/tasks/claim", json={"worker_id": worker_id}, headers={"Prefer": "wait=5"}
    )
    assert_problem(answer, 403, "forbidden")
    assert anyio.current_time() - started < CAP / 2


class NetworkEmitter(RecordingEmitter):
    """Records like RecordingEmitter, but suspends while each event goes out, as a
    socket or Redis emitter does; the submit's events take longest."""

    async def emit(self, emissions: Iterable[Emission]) -> None:
        for emission in ordered(emissions):
            event = emission.event
            slow = isinstance(event, TaskStatusEvent) and event.status == "pending"
            await anyio.sleep(0.1 if slow else 0.001)
            self.sent.append(emission)


@pytest.fixture
def emitter() -> RecordingEmitter:
    return NetworkEmitter()


async def test_observers_see_pending_before_a_held_claim_takes_the_task(
    alice: httpx.AsyncClient,
    bob: httpx.AsyncClient,
    emitter: RecordingEmitter,
    joblib: JobLib,
) -> None:
    worker_id, job_name = await serving_job(alice)
    answers, [task], _ = await _hold_then_submit(
        partial(len, joblib.claims), alice, [worker_id], bob, job_name
    )
    [(answer, _)] = answers
    assert answer["task"]["id"] == task["id"]
    statuses = [
        e.event.status
        for e in emitter.sent
        if isinstance(e.event, TaskStatusEvent) and e.event.id == task["id"]
    ]
    assert statuses == ["pending", "claimed", "running"]


async def test_a_claim_whose_client_left_hands_its_task_to_the_next(
    live_server: LiveServer,
) -> None:
    """The oldest held claim's client hung up: the task goes to the next one."""
    async with (
        httpx.AsyncClient(base_url=live_server.api, headers=_auth(ALICE)) as alice,
        httpx.AsyncClient(base_url=live_server.api, headers=_auth(BOB)) as bob,
    ):
        gone, job_name = await serving_job(alice)
        staying = await _another_worker(alice)
        host, port = live_server.url.removeprefix("http://").split(":")
        stream = await anyio.connect_tcp(host, int(port))
        body = json.dumps({"worker_id": gone, "start": True}).encode()
        await stream.send(
            b"POST /v1/joblib/tasks/claim HTTP/1.1\r\nHost: test\r\n"
            + f"Authorization: Bearer {ALICE}\r\n".encode()
            + b"Content-Type: application/json\r\nPrefer: wait=5\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        parked = partial(live_server.inspect, lambda joblib: len(joblib.claims))
        await aeventually(lambda: parked() == 1, what="the claim to park")
        await stream.aclose()  # held first, so the first in line for a task
        answers, [task], submitted_at = await _hold_then_submit(
            parked, alice, [staying], bob, job_name
        )
        [(answer, at)] = answers
        assert answer["task"]["id"] == task["id"]
        assert answer["task"]["worker_id"] == staying
        assert at - submitted_at < CAP / 2  # handed on, not found at a re-check


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
