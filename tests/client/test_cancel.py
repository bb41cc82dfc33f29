"""A cancel, or a deadline, reaches the job's running code; run() then reports nothing.

Each case runs twice: with a socket worker on a live server, told by the socket's
`task_cancelled` (its heartbeat off), and with a REST-only worker, told by the
answer to its heartbeat (every 0.2 s).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar
from uuid import UUID

import httpx
import pytest

from joblib_client import (
    Category,
    Extension,
    JobManager,
    SocketClient,
    current_task,
)
from joblib_client._http import Rest
from joblib_protocol import CancelReason, ErrorCode, TaskResponse, TaskStatus
from tests.client.conftest import Listener, ManagerFactory
from tests.support.tokens import ADMIN, ALICE

HEARTBEAT = 0.2
GIVE_UP = 10.0
"""A job still looping this long after it started was never told to stop."""


@dataclass
class Probe:
    """What the job's code saw, per task."""

    started: dict[UUID, float] = field(default_factory=dict)
    stopped: dict[UUID, float] = field(default_factory=dict)
    reasons: dict[UUID, CancelReason | None] = field(default_factory=dict)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def mark(self, into: dict[UUID, float], task_id: UUID) -> None:
        with self.changed:
            into[task_id] = time.monotonic()
            self.changed.notify_all()

    def wait_for(self, into: dict[UUID, float], task_id: UUID) -> float:
        with self.changed:
            assert self.changed.wait_for(lambda: task_id in into, timeout=GIVE_UP)
            return into[task_id]


class Loop(Extension):
    """Works in small steps until told to stop; `steps=0` returns at once."""

    category: ClassVar[Category] = Category.ANALYSIS

    steps: int = 10_000

    def run(self, **kwargs: Any) -> Any:
        probe: Probe = kwargs["probe"]
        task = current_task()
        probe.mark(probe.started, task.id)
        for _ in range(self.steps):
            if task.cancelled.is_set():
                probe.reasons[task.id] = task.cancel_reason
                probe.mark(probe.stopped, task.id)
                # Whatever the code does now is not reported: it may even return.
                return "finished anyway"
            time.sleep(0.01)
        return "done"


@dataclass
class Setup:
    transport: str
    worker: JobManager
    submitter: JobManager
    # Reports the worker sent, by task id (the submitter's cancel is no report).
    reports: dict[str, int]

    def reason(self, reason: CancelReason) -> CancelReason | None:
        """The reason the code sees: the socket says it, a heartbeat answer not."""
        return reason if self.transport == "socket" else None

    def cancel(self, task_id: UUID) -> TaskResponse:
        return Rest(self.submitter.api).update_task(task_id, TaskStatus.CANCELLED)


def count_reports(http: httpx.Client) -> dict[str, int]:
    """Count the reports a worker sends (as a worker: its id in the body)."""
    reports: dict[str, int] = {}

    def hook(request: httpx.Request) -> None:
        path = request.url.path
        if request.method != "PATCH" or "/tasks/" not in path:
            return
        if "worker_id" in json.loads(request.content or b"{}"):
            task_id = path.rsplit("/", 1)[-1]
            reports[task_id] = reports.get(task_id, 0) + 1

    http.event_hooks["request"].append(hook)
    return reports


@pytest.fixture(params=["socket", "rest"])
def setup(request: pytest.FixtureRequest) -> Setup:
    factory: ManagerFactory
    if request.param == "socket":
        factory = request.getfixturevalue("make_live_manager")
        worker = factory(ADMIN, heartbeat_interval=None)
        submitter = factory(ALICE, socket=False, heartbeat_interval=None)
    else:
        factory = request.getfixturevalue("make_manager")
        worker = factory(ADMIN, heartbeat_interval=HEARTBEAT)
        submitter = factory(ALICE, heartbeat_interval=None)
    return Setup(request.param, worker, submitter, count_reports(worker.api.http))


def listening(setup: Setup, probe: Probe) -> Listener:
    return Listener(setup.worker, 0.05, run_kwargs={"probe": probe})


def test_a_cancelled_task_stops_within_a_second_and_is_not_reported(
    setup: Setup,
) -> None:
    setup.worker.register(Loop)
    probe = Probe()

    with listening(setup, probe) as listener:
        task_id = setup.submitter.submit(Loop(), "room1")
        probe.wait_for(probe.started, task_id)

        cancelled_at = time.monotonic()
        assert setup.cancel(task_id).status == TaskStatus.CANCELLED

        assert probe.wait_for(probe.stopped, task_id) - cancelled_at < 1.0
        assert probe.reasons[task_id] == setup.reason(CancelReason.CANCELLED)
        ran = listener.next_task(timeout=5)
        assert (ran.id, ran.status) == (task_id, TaskStatus.CANCELLED)
        # listen() goes on with the next task.
        next_id = setup.submitter.submit(Loop(steps=0), "room1")
        following = listener.next_task(timeout=5)
        assert (following.id, following.status) == (next_id, TaskStatus.COMPLETED)

    shown = setup.submitter.wait(task_id, timeout=5)
    assert (shown.status, shown.result, shown.error) == (
        TaskStatus.CANCELLED,
        None,
        None,
    )
    # The task was claimed already running: the worker never reported on it.
    assert setup.reports.get(str(task_id), 0) == 0
    assert setup.reports.get(str(next_id)) == 1


def test_a_task_past_its_deadline_is_failed_and_its_code_told_to_stop(
    setup: Setup,
) -> None:
    setup.worker.register(Loop, timeout_seconds=1)
    probe = Probe()

    with listening(setup, probe) as listener:
        task_id = setup.submitter.submit(Loop(), "room1")
        started = probe.wait_for(probe.started, task_id)

        stopped = probe.wait_for(probe.stopped, task_id)
        ran = listener.next_task(timeout=5)

    # The server's clock started it at the claim, a little before the code ran.
    assert 0.9 <= stopped - started < 2.0 + HEARTBEAT
    assert probe.reasons[task_id] == setup.reason(CancelReason.DEADLINE_EXCEEDED)
    assert (ran.id, ran.status) == (task_id, TaskStatus.FAILED)
    shown = setup.submitter.wait(task_id, timeout=5)
    assert shown.status == TaskStatus.FAILED
    assert shown.error_code == ErrorCode.DEADLINE_EXCEEDED
    assert shown.started_at is not None
    assert shown.completed_at is not None
    ran_for = (shown.completed_at - shown.started_at).total_seconds()
    assert 1.0 <= ran_for < 2.0
    assert shown.result is None
    assert setup.reports.get(str(task_id), 0) == 0


def test_a_task_cancelled_between_its_claim_and_run_does_not_run(
    make_live_manager: ManagerFactory,
) -> None:
    worker = make_live_manager(ADMIN, heartbeat_interval=None)
    submitter = make_live_manager(ALICE, socket=False, heartbeat_interval=None)
    worker.register(Loop)
    reports = count_reports(worker.api.http)
    # Handlers run in the order they were added: the manager's first.
    assert isinstance(worker.tsio, SocketClient)
    heard = threading.Event()
    worker.tsio.on("task_cancelled", lambda *args: heard.set())
    task_id = submitter.submit(Loop(), "room1")
    task = worker.claim()
    assert task is not None
    assert task.id == task_id

    Rest(submitter.api).update_task(task_id, TaskStatus.CANCELLED)
    assert heard.wait(5)
    probe = Probe()

    assert worker.run(task, probe=probe) == TaskStatus.CANCELLED

    assert probe.started == {}
    assert reports == {}
