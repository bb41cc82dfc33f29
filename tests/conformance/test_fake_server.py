"""The client side of the kit: our JobManager against the fake server passes every
worker check, and a worker with one bad habit fails exactly the check about it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, ClassVar

import pytest

from joblib_client import Category, Extension, JobManager
from joblib_conformance import ServerTarget, run_server_checks
from joblib_conformance.fake import (
    FakeServer,
    WorkerScenario,
    WorkerSession,
    check_worker,
    drive_worker,
)
from joblib_conformance.fake.app import FakeApp
from joblib_conformance.fake.state import Identity
from tests.conformance.sloppy_worker import Manners, run_sloppy_worker
from tests.conformance.test_against_our_server import SMOKE
from tests.support.servers import serve_in_thread
from tests.support.tokens import ADMIN, ALICE, BOB

SCENARIO = WorkerScenario(
    tasks=2, heartbeat_within=1.0, startup=10, join_within=1.0, timeout=10
)


class Rotate(Extension):
    category: ClassVar[Category] = Category.MODIFIER
    angle: float = 0.0

    def run(self, **kwargs: Any) -> None:
        pass


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
    report = check_worker(session)
    assert report.failed == [], "\n".join(r.line() for r in report.results)
    assert report.ok
    assert len(session.tasks) == 2


@pytest.mark.parametrize(
    ("manners", "expected"),
    [
        (Manners(), []),
        (Manners(joins=False), ["worker.join-after-register"]),
        (Manners(heartbeats=False), ["worker.heartbeat"]),
        (Manners(says_goodbye=False), ["worker.leave-and-delete"]),
        (Manners(fences=False), ["worker-ours.fenced-reports"]),
    ],
    ids=["well-behaved", "never-joins", "never-heartbeats", "no-goodbye", "unfenced"],
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


def server_kit_on_the_fake(only: list[str] | None) -> list[str]:
    app = FakeApp(
        {ADMIN: Identity("admin", True), ALICE: Identity("alice"), BOB: Identity("bob")}
    )
    with serve_in_thread(app.asgi) as server:
        report = run_server_checks(
            ServerTarget(server.url, ADMIN, ALICE, BOB), only=only
        )
    for result in report.results:
        print(result.line())
    return report.failed


def test_the_fake_server_passes_the_server_kit_smoke_checks() -> None:
    assert server_kit_on_the_fake(SMOKE) == []


NOT_IN_THE_FAKE = [
    "ours.workers.heartbeat-tasks",
    "ours.disconnect.grace-return",
    "ours.disconnect.grace-expires",
]
"""The fake keeps no claim times and knows no grace times (see its docstring)."""


@pytest.mark.slow
def test_the_fake_server_is_a_reference_the_whole_server_kit_accepts() -> None:
    assert server_kit_on_the_fake(None) == NOT_IN_THE_FAKE
