"""Claiming, running and reporting tasks; listen(), submit() and wait()."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid

import httpx
import pytest
from starlette.testclient import TestClient

from joblib_client import (
    InvalidTaskTransitionError,
    JobManager,
    JobNotFoundError,
    TaskNotFoundError,
    WaitTimeoutError,
    WorkerNotFoundError,
)
from joblib_protocol import TaskStatus
from joblib_server import Settings
from tests.client.conftest import Listener, ManagerFactory, RequestCounter, auth
from tests.client.extensions import Explode, Picky, Rotate
from tests.support import eventually
from tests.support.servers import make_settings
from tests.support.tokens import ADMIN, ALICE


@pytest.fixture
def worker(make_manager: ManagerFactory) -> JobManager:
    manager = make_manager(ADMIN)
    manager.register(Rotate)
    manager.register(Explode)
    return manager


@pytest.fixture
def submitter(make_manager: ManagerFactory) -> JobManager:
    return make_manager(ALICE)


def test_claim_answers_none_when_nothing_waits(worker: JobManager) -> None:
    assert worker.claim() is None


def test_claim_builds_the_extension_and_starts_the_task(
    worker: JobManager, submitter: JobManager
) -> None:
    task_id = submitter.submit(Rotate(angle=90), "room1")

    task = worker.claim()

    assert task is not None
    assert (task.id, task.job_name, task.room_id) == (
        task_id,
        "@global:modifiers:Rotate",
        "room1",
    )
    assert task.extension == Rotate(angle=90)
    assert task.status == TaskStatus.RUNNING


def test_claim_without_start_then_start(
    worker: JobManager, submitter: JobManager
) -> None:
    submitter.submit(Rotate(), "room1")
    task = worker.claim(start=False)
    assert task is not None
    assert task.status == TaskStatus.CLAIMED

    worker.start(task)

    assert task.status == TaskStatus.RUNNING


def test_run_completes_and_passes_keyword_arguments(
    worker: JobManager, submitter: JobManager
) -> None:
    task_id = submitter.submit(Rotate(angle=45), "room1")
    task = worker.claim(start=False)
    assert task is not None
    seen: list[float] = []

    assert worker.run(task, seen=seen) == TaskStatus.COMPLETED

    assert seen == [45]
    assert submitter.wait(task_id, timeout=5).status == TaskStatus.COMPLETED


def test_run_reports_the_error_of_a_failing_extension(
    worker: JobManager, submitter: JobManager
) -> None:
    task_id = submitter.submit(Explode(), "room1")
    task = worker.claim()
    assert task is not None

    assert worker.run(task) == TaskStatus.FAILED

    shown = submitter.wait(task_id, timeout=5)
    assert shown.status == TaskStatus.FAILED
    assert shown.error == "ValueError: boom"


def test_run_keeps_a_cancelled_task_cancelled(
    worker: JobManager, submitter: JobManager, server: TestClient
) -> None:
    task_id = submitter.submit(Rotate(), "room1")
    task = worker.claim()
    assert task is not None
    cancelled = server.patch(
        f"/v1/joblib/tasks/{task_id}", json={"status": "cancelled"}, headers=auth(ALICE)
    )
    assert cancelled.status_code == 200, cancelled.text

    assert worker.run(task) == TaskStatus.CANCELLED


def test_a_payload_that_does_not_fit_fails_the_task(
    worker: JobManager, submitter: JobManager, server: TestClient
) -> None:
    # The server checks the payload against the job's schema; the worker's
    # validator refuses it.
    worker.register(Picky)
    answer = server.post(
        "/v1/joblib/rooms/room1/tasks/@global:modifiers:Picky",
        json={"payload": {"angle": -1}},
        headers=auth(ALICE),
    )
    assert answer.status_code == 202, answer.text

    assert worker.claim() is None

    shown = submitter.wait(answer.json()["id"], timeout=5)
    assert shown.status == TaskStatus.FAILED
    assert "invalid payload" in (shown.error or "")


def test_a_task_cancelled_before_its_invalid_payload_is_reported_is_skipped(
    worker: JobManager, submitter: JobManager, server: TestClient
) -> None:
    """The failure report answers 409: listen() goes on with the next task."""
    # The server checks the payload against the job's schema; the worker's
    # validator refuses it.
    worker.register(Picky)
    answer = server.post(
        "/v1/joblib/rooms/room1/tasks/@global:modifiers:Picky",
        json={"payload": {"angle": -1}},
        headers=auth(ALICE),
    )
    assert answer.status_code == 202, answer.text
    invalid = answer.json()["id"]
    valid = submitter.submit(Rotate(angle=5), "room1")
    cancelled: list[int] = []

    def cancel_once_claimed(response: httpx.Response) -> None:
        # Runs in the worker's thread between its claim and its failure report.
        if not response.request.url.path.endswith("/tasks/claim") or cancelled:
            return
        response.read()
        task = response.json()["task"]
        if task is not None and task["id"] == invalid:
            cancelled.append(
                server.patch(
                    f"/v1/joblib/tasks/{invalid}",
                    json={"status": "cancelled"},
                    headers=auth(ALICE),
                ).status_code
            )

    server.event_hooks["response"].append(cancel_once_claimed)
    with Listener(worker, polling_interval=0.05) as listener:  # exit: no error
        assert listener.next_task(timeout=10).id == valid

    assert cancelled == [200]
    shown = submitter.wait(invalid, timeout=5)
    assert shown.status == TaskStatus.CANCELLED


def test_complete_twice_is_an_invalid_transition(
    worker: JobManager, submitter: JobManager
) -> None:
    submitter.submit(Rotate(), "room1")
    task = worker.claim()
    assert task is not None
    worker.complete(task)

    with pytest.raises(InvalidTaskTransitionError) as caught:
        worker.complete(task)
    assert caught.value.status == 409


def test_listen_run_complete_takes_at_most_three_requests_per_task(
    worker: JobManager, submitter: JobManager, count_requests: RequestCounter
) -> None:
    ids = [submitter.submit(Rotate(angle=n), "room1") for n in range(3)]
    stop = threading.Event()
    done = []
    count_requests.clear()

    for task in worker.listen(stop_event=stop, polling_interval=0.05):
        worker.run(task)
        done.append(task.id)
        if len(done) == len(ids):
            stop.set()

    assert done == ids
    # One claim that comes back running, one report: within the budget of three.
    assert len(count_requests) == 2 * len(ids)


def test_listen_polls_without_a_socket(
    worker: JobManager, submitter: JobManager
) -> None:
    with Listener(worker, polling_interval=0.05) as listener:
        task_id = submitter.submit(Rotate(angle=7), "room1")
        assert listener.next_task(timeout=10).id == task_id


def test_listen_registers_again_when_the_server_forgot_the_worker(
    worker: JobManager, submitter: JobManager, server: TestClient
) -> None:
    old = worker.worker_id
    removed = server.delete(f"/v1/joblib/workers/{old}", headers=auth(ADMIN))
    assert removed.status_code == 204
    with pytest.raises(WorkerNotFoundError):
        worker.claim()

    with Listener(worker, polling_interval=0.05) as listener:
        # Until the listener registered again, the job is gone with the worker.
        while worker.worker_id == old:
            assert listener.thread.is_alive()
            listener.stop.wait(0.02)
        task_id = submitter.submit(Rotate(), "room1")
        assert listener.next_task(timeout=10).id == task_id

    assert worker.worker_id not in (None, old)
    assert sorted(worker) == ["@global:analysis:Explode", "@global:modifiers:Rotate"]


def test_wait_times_out_on_a_pending_task(
    worker: JobManager, submitter: JobManager
) -> None:
    task_id = submitter.submit(Rotate(), "room1")
    with pytest.raises(WaitTimeoutError, match="pending") as caught:
        submitter.wait(task_id, timeout=1)
    assert isinstance(caught.value, TimeoutError)


def test_wait_answers_once_the_task_ends(
    worker: JobManager, submitter: JobManager
) -> None:
    task_id = submitter.submit(Rotate(), "room1")
    waiting = threading.Event()

    def long_poll_sent(request: httpx.Request) -> None:
        if request.method == "GET" and "prefer" in request.headers:
            waiting.set()

    submitter.api.http.event_hooks["request"].append(long_poll_sent)

    def work() -> None:
        assert waiting.wait(10)  # the task ends while wait() waits
        task = worker.claim()
        assert task is not None
        worker.run(task)

    thread = threading.Thread(target=work)
    thread.start()
    try:
        assert submitter.wait(task_id, timeout=10).status == TaskStatus.COMPLETED
    finally:
        thread.join()


def test_a_submit_sent_again_with_its_key_makes_no_second_task(
    worker: JobManager, submitter: JobManager
) -> None:
    first = submitter.submit(Rotate(angle=1), "room1", idempotency_key="order-1")
    again = submitter.submit(Rotate(angle=1), "room1", idempotency_key="order-1")
    other = submitter.submit(Rotate(angle=1), "room1", idempotency_key="order-2")
    assert again == first
    assert other != first
    claimed = [worker.claim(), worker.claim(), worker.claim()]
    assert [t.id if t else None for t in claimed] == [first, other, None]


def test_submit_and_wait_raise_not_found(submitter: JobManager) -> None:
    with pytest.raises(JobNotFoundError):
        submitter.submit(Rotate(), "room1")
    with pytest.raises(TaskNotFoundError):
        submitter.wait(uuid.uuid4(), timeout=1)


def test_listen_parks_its_claims_and_gets_a_task_at_once(
    worker: JobManager, submitter: JobManager
) -> None:
    """No socket, a 30 s polling interval: the held claim brings the task."""
    claims = RequestCounter("/tasks/claim")
    worker.api.http.event_hooks["request"].append(claims)
    with Listener(worker, polling_interval=30) as listener:
        # Idle, it claims again only once the server answered the held claim
        # (after 2 s: the longest listen() asks for).
        eventually(lambda: len(claims) >= 2, what="a second claim")
        assert claims.gaps()[0] >= 1.0
        started = time.monotonic()
        task_id = submitter.submit(Rotate(angle=7), "room1")
        assert listener.next_task(timeout=5).id == task_id
        assert time.monotonic() - started < 1.5
        worker.disconnect()  # the server answers its next held claim at once


@pytest.mark.parametrize(
    "settings", [make_settings(long_poll_max_wait_seconds=0)], indirect=False
)
def test_listen_pauses_between_claims_when_the_server_does_not_hold_them(
    worker: JobManager, settings: Settings
) -> None:
    """A server that answers claims at once: listen() falls back to polling."""
    claims = RequestCounter("/tasks/claim")
    worker.api.http.event_hooks["request"].append(claims)
    with Listener(worker, polling_interval=0.2):
        eventually(lambda: len(claims) >= 3, what="three claims")
    # One claim per polling interval, not a claim loop without pauses.
    assert min(claims.gaps()[:2]) >= 0.2 * 0.95


def test_every_report_is_sent_as_the_worker_that_claimed_the_task(
    worker: JobManager, submitter: JobManager
) -> None:
    submitter.submit(Rotate(), "room1")
    reports: list[dict[str, object]] = []

    def record(request: httpx.Request) -> None:
        if request.method == "PATCH" and "/tasks/" in request.url.path:
            reports.append(json.loads(request.content))

    worker.api.http.event_hooks["request"].append(record)
    task = worker.claim(start=False)
    assert task is not None
    assert task.worker_id == worker.worker_id

    assert worker.run(task) == TaskStatus.COMPLETED

    assert reports == [
        {"status": "running", "worker_id": str(worker.worker_id)},
        {"status": "completed", "worker_id": str(worker.worker_id)},
    ]


def test_a_task_requeued_to_another_worker_is_logged_and_listen_goes_on(
    make_manager: ManagerFactory,
    submitter: JobManager,
    server: TestClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An admin removes the first worker; its task goes to a second one: 409."""
    requeue = {"action": "requeue", "max_attempts": 3}
    first, second = make_manager(ADMIN), make_manager(ADMIN)
    first.register(Rotate, on_disconnect=requeue)
    second.register(Rotate, on_disconnect=requeue)
    lost = submitter.submit(Rotate(angle=1), "room1")
    statuses: dict[uuid.UUID, TaskStatus] = {}
    stop = threading.Event()

    with caplog.at_level(logging.INFO, logger="joblib_client"):
        for task in first.listen(stop, polling_interval=0.05):
            if task.id == lost:
                removed = server.delete(
                    f"/v1/joblib/workers/{first.worker_id}", headers=auth(ADMIN)
                )
                assert removed.status_code == 204
                taken = second.claim()
                assert taken is not None
                assert (taken.id, taken.worker_id) == (lost, second.worker_id)
                statuses[task.id] = first.run(task)
                following = submitter.submit(Rotate(angle=2), "room1")
            else:
                statuses[task.id] = first.run(task)
                stop.set()

    # The second worker holds it: the first's report changed nothing.
    assert statuses == {lost: TaskStatus.RUNNING, following: TaskStatus.COMPLETED}
    shown = submitter.wait(following, timeout=5)
    assert shown.worker_id == first.worker_id  # registered again, under a new id
    refused = [r for r in caplog.records if str(lost) in r.getMessage()]
    assert [r.levelno for r in refused] == [logging.WARNING]
    assert "task-worker-mismatch" in refused[0].getMessage()
    assert refused[0].exc_info is None
    assert taken is not None
    second.complete(taken)
    assert submitter.wait(lost, timeout=5).attempt == 2
