"""The client side of the kit: our JobManager against the fake server passes every
worker check, and a worker with one bad habit fails exactly the check about it.
The fake server passes the server kit, and without one of its features fails
exactly the checks of that feature."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, ClassVar
from unittest import mock

import pytest

from joblib_client import Category, Extension, JobManager, current_task
from joblib_conformance import ServerTarget, Status, run_server_checks
from joblib_conformance.fake import (
    FakeServer,
    WorkerScenario,
    WorkerSession,
    check_worker,
    drive_worker,
    state,
)
from joblib_conformance.fake import app as fake_app
from joblib_conformance.fake.app import FakeApp
from joblib_conformance.fake.state import MAX_RESULT_BYTES, Identity
from tests.conformance.sloppy_worker import Manners, run_sloppy_worker
from tests.conformance.test_against_our_server import CALLS, SMOKE
from tests.support.servers import serve_in_thread
from tests.support.tokens import ADMIN, ALICE, BOB

SCENARIO = WorkerScenario(
    tasks=2, heartbeat_within=1.0, startup=10, join_within=1.0, timeout=10
)


class Rotate(Extension):
    category: ClassVar[Category] = Category.MODIFIER
    angle: float = 0.0

    def run(self, **kwargs: Any) -> dict[str, float]:
        task = current_task()
        task.progress(1, total=2, message="rotating")
        task.progress(2, total=2, message="done")
        return {"angle": self.angle}


def in_thread(
    target: Callable[[threading.Event], None],
) -> tuple[Callable[[], None], threading.Thread]:
    """Run `target(stop)` in a thread; the returned `stop()` sets it and joins."""
    stop = threading.Event()
    thread = threading.Thread(target=target, args=(stop,), daemon=True)
    thread.start()

    def stopping() -> None:
        stop.set()
        thread.join(15)

    return stopping, thread


def drive_job_manager(fake: FakeServer) -> WorkerSession:
    def work(stop: threading.Event) -> None:
        with JobManager.connect(
            fake.url, token=fake.worker_token, heartbeat_interval=0.2
        ) as manager:
            manager.register(Rotate)
            for task in manager.listen(stop_event=stop, polling_interval=0.2):
                manager.run(task)

    stop, _thread = in_thread(work)
    return drive_worker(fake, SCENARIO, stop)


def test_our_job_manager_passes_every_worker_check() -> None:
    with FakeServer() as fake:
        session = drive_job_manager(fake)
        tasks = [fake.task(task_id) for task_id in session.tasks]
    report = check_worker(session)
    assert report.failed == [], "\n".join(r.line() for r in report.results)
    assert report.ids(Status.SKIP) == []
    assert report.ok
    assert len(session.tasks) == 2
    # Its result and its last progress, kept by the fake and shown by GET.
    assert [(t["status"], t["result"]) for t in tasks] == [
        ("completed", {"angle": 0.0}),
        ("completed", {"angle": 0.0}),
    ]
    assert [t["progress"] for t in tasks] == [
        {"current": 2.0, "total": 2.0, "message": "done"}
    ] * 2


@pytest.mark.parametrize(
    ("manners", "expected"),
    [
        (Manners(), []),
        (Manners(joins=False), ["worker.join-after-register"]),
        (Manners(heartbeats=False), ["worker.heartbeat"]),
        (Manners(says_goodbye=False), ["worker.leave-and-delete"]),
        (
            Manners(fences=False),
            ["worker-ours.fenced-reports", "worker-ours.progress"],
        ),
        (Manners(progress_on_time=False), ["worker-ours.progress"]),
    ],
    ids=[
        "well-behaved",
        "never-joins",
        "never-heartbeats",
        "no-goodbye",
        "unfenced",
        "late-progress",
    ],
)
def test_a_bad_habit_fails_its_check(manners: Manners, expected: list[str]) -> None:
    with FakeServer() as fake:
        stop, _thread = in_thread(
            lambda stop: run_sloppy_worker(fake.url, fake.worker_token, manners, stop)
        )
        session = drive_worker(fake, SCENARIO, stop)
    report = check_worker(session)
    for result in report.results:
        print(result.line())
    assert report.failed == expected


def server_kit_on_the_fake(only: list[str] | None, timeout: float = 10) -> list[str]:
    app = FakeApp(
        {ADMIN: Identity("admin", True), ALICE: Identity("alice"), BOB: Identity("bob")}
    )
    with serve_in_thread(app.asgi) as server:
        target = ServerTarget(
            server.url,
            ADMIN,
            ALICE,
            BOB,
            timeout=timeout,
            max_result_bytes=MAX_RESULT_BYTES,
        )
        report = run_server_checks(target, only=only)
    for result in report.results:
        print(result.line())
    return report.failed


def test_the_fake_server_passes_the_server_kit_smoke_checks() -> None:
    assert server_kit_on_the_fake(SMOKE) == []


@pytest.mark.slow  # over ~5 s
def test_the_fake_server_passes_the_checks_of_tasks_as_calls() -> None:
    assert server_kit_on_the_fake(CALLS) == []


def _nobody_told(world: state.World, task: state.Task, reason: Any) -> list[Any]:
    return []


def _nothing_due(world: state.World, at: Any) -> list[Any]:
    return []


def _payload_unchecked(schema: Any, payload: Any) -> None:
    return None


def _without_cancelled(world: state.World, *args: Any) -> tuple[Any, list[Any]]:
    beat, emissions = HEARTBEAT(world, *args)
    return beat.model_copy(update={"cancelled": []}), emissions


HEARTBEAT = state.World.heartbeat

LACKS: dict[str, tuple[str, str, Any, list[str], list[str]]] = {
    "no-throttle": (
        "app",
        "PROGRESS_INTERVAL",
        0.0,
        ["progress"],
        ["progress.coalesced"],
    ),
    "no-cancel-notices": (
        "World",
        "_cancelled",
        _nobody_told,
        ["ours.cancel", "ours.limits.deadline"],
        ["ours.limits.deadline", "ours.cancel.notice"],
    ),
    "no-heartbeat-cancelled": (
        "World",
        "heartbeat",
        _without_cancelled,
        ["ours.cancel"],
        ["ours.cancel.heartbeat"],
    ),
    "no-time-limits": (
        "World",
        "expire_due",
        _nothing_due,
        ["ours.limits"],
        ["ours.limits.deadline", "ours.limits.expiry"],
    ),
    "no-payload-checks": (
        "state",
        "check_payload",
        _payload_unchecked,
        ["ours.payloads"],
        ["ours.payloads.invalid-payload"],
    ),
}
"""A feature taken out of the fake: (where, what, instead), the checks near it,
and those that must fail."""

_OWNERS: dict[str, Any] = {"app": fake_app, "World": state.World, "state": state}


@pytest.mark.slow  # over ~5 s
@pytest.mark.parametrize("lacking", list(LACKS))
def test_a_fake_without_a_feature_fails_exactly_its_checks(lacking: str) -> None:
    owner, name, instead, near, expected = LACKS[lacking]
    with mock.patch.object(_OWNERS[owner], name, instead):
        assert server_kit_on_the_fake(near, timeout=3) == expected


NOT_IN_THE_FAKE = [
    "ours.workers.heartbeat-tasks",
    "ours.disconnect.grace-return",
    "ours.disconnect.grace-expires",
]
"""The fake keeps no claim times and knows no grace times (see its docstring)."""


@pytest.mark.slow
def test_the_fake_server_is_a_reference_the_whole_server_kit_accepts() -> None:
    assert server_kit_on_the_fake(None) == NOT_IN_THE_FAKE
