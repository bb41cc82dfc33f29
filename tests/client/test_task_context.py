"""`current_task()` inside a job: who it runs for, its progress, its stop signal."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any, ClassVar

import httpx
import pytest
from starlette.testclient import TestClient

from joblib_client import (
    Category,
    ClaimedTask,
    Extension,
    JobLibError,
    JobManager,
    TaskCancelledError,
    TaskContext,
    current_task,
)
from joblib_protocol import TaskStatus
from tests.client.conftest import Gate, ManagerFactory, auth, in_thread
from tests.support import eventually
from tests.support.tokens import ADMIN, ALICE

PROGRESS_CALLS = 1000


class Probe(Extension):
    """Does what `steps` says, seen by the test through the `probe` keyword."""

    category: ClassVar[Category] = Category.ANALYSIS

    steps: str = "context"

    def run(self, **kwargs: Any) -> Any:
        probe: ProbeState = kwargs["probe"]
        task = current_task()
        probe.context = task
        if self.steps == "context":
            return {"id": str(task.id), "attempt": task.attempt}
        if self.steps == "progress-then-wait":
            task.progress(3, 10, "three of ten")
            probe.started.set()
            assert probe.release.wait(10)
            return None
        if self.steps == "many-progress":
            started = time.monotonic()
            for i in range(1, PROGRESS_CALLS + 1):
                task.progress(i, PROGRESS_CALLS, f"step {i}")
            probe.seconds = time.monotonic() - started
            probe.started.set()
            assert probe.release.wait(10)
            return None
        if self.steps == "progress-until-cancelled":
            probe.started.set()
            i = 0
            while not task.cancelled.wait(0.02):
                i += 1
                task.progress(i)
            task.raise_if_cancelled()
        raise AssertionError(self.steps)


class ProbeState:
    def __init__(self) -> None:
        self.context: TaskContext | None = None
        self.started = threading.Event()
        self.release = threading.Event()
        self.seconds = 0.0


@pytest.fixture
def worker(make_manager: ManagerFactory) -> JobManager:
    # No heartbeat and no socket: only what the test looks at tells a task to stop.
    manager = make_manager(ADMIN, heartbeat_interval=None)
    manager.register(Probe)
    return manager


@pytest.fixture
def submitter(make_manager: ManagerFactory) -> JobManager:
    return make_manager(ALICE, heartbeat_interval=None)


def claim(worker: JobManager) -> ClaimedTask:
    task = worker.claim()
    assert task is not None
    return task


def progress_of(server: TestClient, task_id: object) -> Any:
    answer = server.get(f"/v1/joblib/tasks/{task_id}", headers=auth(ALICE))
    assert answer.status_code == 200, answer.text
    return answer.json()["progress"]


def test_current_task_outside_a_task_raises_a_clear_error() -> None:
    with pytest.raises(JobLibError, match="outside a task"):
        current_task()


def test_current_task_tells_the_job_which_task_it_runs(
    worker: JobManager, submitter: JobManager
) -> None:
    task_id = submitter.submit(Probe(), "room1")
    task = claim(worker)
    probe = ProbeState()

    assert worker.run(task, probe=probe) == TaskStatus.COMPLETED

    context = probe.context
    assert context is not None
    assert (context.id, context.job_name, context.room_id) == (
        task_id,
        "@global:analysis:Probe",
        "room1",
    )
    assert context.attempt == task.attempt == 1
    assert not context.cancelled.is_set()
    context.raise_if_cancelled()  # not cancelled: nothing happens
    assert submitter.result(task_id, timeout=5) == {"id": str(task_id), "attempt": 1}
    # Once run() returns, the task is no longer current.
    with pytest.raises(JobLibError):
        current_task()


def test_progress_from_the_job_reaches_the_task(
    worker: JobManager, submitter: JobManager, server: TestClient
) -> None:
    task_id = submitter.submit(Probe(steps="progress-then-wait"), "room1")
    probe = ProbeState()
    thread, outcome = in_thread(lambda: worker.run(claim(worker), probe=probe))
    assert probe.started.wait(5)

    shown = eventually(lambda: progress_of(server, task_id), what="the progress")

    assert shown == {"current": 3, "total": 10, "message": "three of ten"}
    probe.release.set()
    thread.join(10)
    assert outcome == [TaskStatus.COMPLETED]


def test_many_quick_progress_calls_do_not_block_and_the_last_wins(
    worker: JobManager, submitter: JobManager, server: TestClient
) -> None:
    task_id = submitter.submit(Probe(steps="many-progress"), "room1")
    probe = ProbeState()
    # The server takes no progress until the job made all its calls: none of
    # them may wait for it.
    with Gate(server, "PUT", "/progress") as gate:
        thread, outcome = in_thread(lambda: worker.run(claim(worker), probe=probe))
        assert probe.started.wait(10), "the progress calls blocked the job"
        assert gate.entered.wait(5), "no progress was sent"
        assert progress_of(server, task_id) is None
    assert probe.seconds < 1.0

    last = {"current": PROGRESS_CALLS, "total": PROGRESS_CALLS, "message": "step 1000"}
    eventually(lambda: progress_of(server, task_id) == last, what="the last value")
    probe.release.set()
    thread.join(10)
    assert outcome == [TaskStatus.COMPLETED]
    assert progress_of(server, task_id) == last


def test_the_last_progress_is_sent_before_the_task_completes(
    worker: JobManager, submitter: JobManager, server: TestClient
) -> None:
    task_id = submitter.submit(Probe(steps="many-progress"), "room1")
    probe = ProbeState()
    probe.release.set()

    assert worker.run(claim(worker), probe=probe) == TaskStatus.COMPLETED

    assert progress_of(server, task_id)["current"] == PROGRESS_CALLS


def test_progress_refused_as_not_running_tells_the_job_to_stop(
    worker: JobManager, submitter: JobManager, server: TestClient
) -> None:
    task_id = submitter.submit(Probe(steps="progress-until-cancelled"), "room1")
    next_id = submitter.submit(Probe(), "room1")
    probe = ProbeState()
    thread, outcome = in_thread(lambda: worker.run(claim(worker), probe=probe))
    assert probe.started.wait(5)

    cancelled = server.patch(
        f"/v1/joblib/tasks/{task_id}", json={"status": "cancelled"}, headers=auth(ALICE)
    )
    assert cancelled.status_code == 200, cancelled.text

    thread.join(5)
    assert outcome == [TaskStatus.CANCELLED]
    assert probe.context is not None
    assert probe.context.cancelled.is_set()
    shown = submitter.wait(task_id, timeout=5)
    assert (shown.status, shown.error) == (TaskStatus.CANCELLED, None)
    # The manager is done with it: the next task is taken and runs.
    following = claim(worker)
    assert following.id == next_id
    assert worker.run(following, probe=ProbeState()) == TaskStatus.COMPLETED


def test_raise_if_cancelled_raises_task_cancelled() -> None:
    context = TaskContext(uuid.uuid4(), "@global:analysis:Probe", attempt=2)
    context.raise_if_cancelled()

    context.cancel()

    with pytest.raises(TaskCancelledError) as caught:
        context.raise_if_cancelled()
    assert caught.value.task_id == context.id


@pytest.mark.parametrize(
    ("current", "total"), [(-1, None), (1, 0), (float("nan"), None), (1, -5)]
)
def test_progress_out_of_range_raises_value_error(
    current: float, total: float | None
) -> None:
    context = TaskContext(uuid.uuid4(), "@global:analysis:Probe")
    with pytest.raises(ValueError, match="validation error"):
        context.progress(current, total)


def test_a_long_progress_message_is_cut() -> None:
    sent: list[Any] = []
    context = TaskContext(
        uuid.uuid4(),
        "@global:analysis:Probe",
        sink=lambda _context, progress: sent.append(progress),
    )

    context.progress(1, message="x" * 5000)

    assert len(sent[0].message) == 1000


def progress_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "joblib progress"}


def test_the_progress_thread_starts_at_the_first_progress_and_ends_with_close(
    worker: JobManager, submitter: JobManager
) -> None:
    before = progress_threads()
    submitter.submit(Probe(), "room1")
    assert worker.run(claim(worker), probe=ProbeState()) == TaskStatus.COMPLETED
    assert progress_threads() == before, "started without any progress"

    submitter.submit(Probe(steps="progress-then-wait"), "room1")
    probe = ProbeState()
    probe.release.set()
    assert worker.run(claim(worker), probe=probe) == TaskStatus.COMPLETED
    (thread,) = progress_threads() - before

    worker.close()

    assert not thread.is_alive()


class Outage:
    """An httpx hook failing the progress reports as if the server were away."""

    def __init__(self) -> None:
        self.on = True
        self.failed = threading.Event()

    def __call__(self, request: httpx.Request) -> None:
        if self.on and request.url.path.endswith("/progress"):
            self.failed.set()
            raise httpx.ConnectError("no route to the server", request=request)


def test_progress_in_an_outage_is_logged_not_raised_and_sent_once_it_ends(
    worker: JobManager,
    submitter: JobManager,
    server: TestClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    outage = Outage()
    server.event_hooks["request"].append(outage)
    task_id = submitter.submit(Probe(steps="progress-then-wait"), "room1")
    probe = ProbeState()
    with caplog.at_level(logging.WARNING, logger="joblib_client"):
        thread, outcome = in_thread(lambda: worker.run(claim(worker), probe=probe))
        assert probe.started.wait(5)
        assert outage.failed.wait(5)
        eventually(
            lambda: any("not sent" in r.getMessage() for r in caplog.records),
            what="the outage logged",
        )
        assert progress_of(server, task_id) is None

        outage.on = False

        shown = eventually(lambda: progress_of(server, task_id), what="the progress")
        assert shown["current"] == 3
        probe.release.set()
        thread.join(10)
    assert outcome == [TaskStatus.COMPLETED]
