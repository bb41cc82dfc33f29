"""The worker through a server outage, a restart, or a socket blip.

`listen()` keeps trying, `run()`'s reports land once the server is back, and the
manager comes back under its old worker id when the server still knows it. The
servers are real uvicorn threads; a restart starts a new app on the same port and
database, run as the CLI runs it (`JobLibServer`: its shutdown keeps the workers).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import httpx
import pytest

from joblib_client import Category, Extension, JobManager, SocketClient
from joblib_protocol import TaskStatus
from joblib_server import Settings
from tests.client.conftest import (
    InProcessApi,
    Listener,
    ManagerFactory,
    RequestCounter,
    in_thread,
    standalone_app,
)
from tests.client.extensions import Rotate
from tests.support import eventually
from tests.support.servers import free_port, serve_in_thread
from tests.support.tokens import ADMIN, ALICE

POLLING_INTERVAL = 0.3


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def socket_of(manager: JobManager) -> SocketClient:
    assert isinstance(manager.tsio, SocketClient)
    return manager.tsio


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    """What joblib_client logged at exactly `level`."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "joblib_client" and record.levelno == level
    ]


def test_listen_pauses_longer_and_longer_while_the_server_is_down(
    database_url: str, settings: Settings
) -> None:
    with serve_in_thread(standalone_app(database_url, settings)) as server:
        manager = JobManager.connect(
            server.url, token=ADMIN, socket=False, heartbeat_interval=None
        )
        manager.register(Rotate)
    # The server is gone: every claim fails to connect.
    claims = RequestCounter("/tasks/claim")
    manager.api.http.event_hooks["request"].append(claims)
    try:
        with Listener(manager, polling_interval=POLLING_INTERVAL):  # exit: no error
            eventually(lambda: len(claims) >= 4, what="four claims without a server")
    finally:
        manager.close()
    # Pauses from the polling interval, doubling: 0.3, 0.6, 1.2 s (up to 5 s).
    gaps = claims.gaps()
    for gap, pause in zip(gaps, [0.3, 0.6, 1.2], strict=False):
        assert gap >= pause * 0.95, gaps
    assert gaps[0] < 0.6, gaps


def test_a_report_retried_through_an_outage_lands_once_the_server_is_back(
    database_url: str, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with serve_in_thread(standalone_app(database_url, settings)) as server:
        worker = JobManager.connect(
            server.url, token=ADMIN, socket=False, heartbeat_interval=None
        )
        submitter = JobManager.connect(server.url, token=ALICE, socket=False)
        worker.register(Rotate)
        task_id = submitter.submit(Rotate(angle=4), "room1")
        task = worker.claim()
        assert task is not None
        worker_id = worker.worker_id
    reports = RequestCounter(f"/tasks/{task_id}")
    worker.api.http.event_hooks["request"].append(reports)

    # The task finishes while the server is down.
    with caplog.at_level(logging.INFO, logger="joblib_client"):
        thread, outcome = in_thread(lambda: worker.run(task))
        eventually(lambda: len(reports) >= 2, what="the report tried again")
        app = standalone_app(database_url, settings)
        with serve_in_thread(app, port=port_of(server.url)):
            try:
                thread.join(timeout=15)
                shown = submitter.wait(task_id, timeout=5)
            finally:
                worker.close()
                submitter.close()

    assert outcome == [TaskStatus.COMPLETED]  # run() returned, it did not raise
    assert shown.status == TaskStatus.COMPLETED
    assert shown.worker_id == task.worker_id == worker_id
    retries = messages(caplog, logging.WARNING)
    assert retries
    assert all(f"reporting task {task_id}" in m for m in retries)
    assert messages(caplog, logging.ERROR) == []


def test_a_report_that_never_gets_through_is_given_up_without_raising(
    make_manager: ManagerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    worker = make_manager(ADMIN, report_retry_seconds=1.0)
    worker.register(Rotate)
    task_id = make_manager(ALICE).submit(Rotate(), "room1")
    task = worker.claim()
    assert task is not None
    assert isinstance(worker.api, InProcessApi)
    reports = RequestCounter(f"/tasks/{task_id}")
    with httpx.Client(timeout=2, event_hooks={"request": [reports]}) as unreachable:
        worker.api.http = unreachable
        worker.api.base_url = f"http://127.0.0.1:{free_port()}"

        with caplog.at_level(logging.WARNING, logger="joblib_client"):
            status = worker.run(task)

        worker.disconnect()  # while the server is still unreachable

    assert status == TaskStatus.RUNNING  # the last status the server acknowledged
    assert len(reports) >= 2
    (gave_up, *_removal) = messages(caplog, logging.ERROR)
    assert (
        f"gave up reporting task {task_id} completed (tried for up to 1 s)" in gave_up
    )
    assert all(record.exc_info is None for record in caplog.records)


def test_a_report_whose_answer_was_lost_is_not_reported_twice(
    make_manager: ManagerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The first report lands, its answer does not: the retry's 409 is a success."""
    worker = make_manager(ADMIN)
    worker.register(Rotate)
    submitter = make_manager(ALICE)
    task_id = submitter.submit(Rotate(), "room1")
    task = worker.claim()
    assert task is not None
    dropped: list[httpx.Response] = []

    def drop_the_first_answer(response: httpx.Response) -> None:
        if response.request.method == "PATCH" and not dropped:
            dropped.append(response)
            raise httpx.ReadError("connection reset", request=response.request)

    worker.api.http.event_hooks["response"].append(drop_the_first_answer)
    with caplog.at_level(logging.INFO, logger="joblib_client"):
        assert worker.run(task) == TaskStatus.COMPLETED

    assert dropped
    assert submitter.wait(task_id, timeout=5).status == TaskStatus.COMPLETED
    assert any("had landed" in m for m in messages(caplog, logging.INFO))
    assert messages(caplog, logging.ERROR) == []


def test_after_a_server_restart_the_worker_comes_back_under_its_id(
    database_url: str, settings: Settings
) -> None:
    app = standalone_app(database_url, settings, realtime=True)
    with serve_in_thread(app) as server:
        worker = JobManager.connect(server.url, token=ADMIN, heartbeat_interval=None)
        worker.register(Rotate)
        old = worker.worker_id
        sock = socket_of(worker)
        dropped = sock.client.eio.ws
    eventually(lambda: not sock.connected, what="the socket to notice")
    # Handlers run in the order they were added: the manager's comeback first.
    back = threading.Event()
    sock.on("connect", back.set)
    sent = RequestCounter()
    worker.api.http.event_hooks["request"].append(sent)

    app = standalone_app(database_url, settings, realtime=True)
    with serve_in_thread(app, port=port_of(server.url)):
        try:
            assert back.wait(15), "the socket did not reconnect"
            assert worker.worker_id == old
            # One heartbeat asked whether the server still knows the worker;
            # nothing was registered again.
            assert [(r.method, r.url.path) for r in sent.requests] == [
                ("PATCH", f"/v1/joblib/workers/{old}")
            ]
            # The rooms are joined again: a submitted task wakes listen() at once.
            claims = RequestCounter("/tasks/claim")
            worker.api.http.event_hooks["request"].append(claims)
            with Listener(worker, polling_interval=30, park_claims=False) as listener:
                eventually(lambda: len(claims), what="the first claim")
                submitter = JobManager.connect(server.url, token=ALICE, socket=False)
                with submitter:
                    task_id = submitter.submit(Rotate(), "room1")
                    assert listener.next_task(timeout=5).id == task_id
        finally:
            worker.close()
            dropped.shutdown()  # python-engineio leaves it to the garbage collector


class Hold(Extension):
    """Runs until the test releases it."""

    category: ClassVar[Category] = Category.MODIFIER
    running: ClassVar[threading.Event] = threading.Event()
    release: ClassVar[threading.Event] = threading.Event()

    def run(self, **kwargs: Any) -> None:
        Hold.running.set()
        assert Hold.release.wait(10)


@pytest.fixture
def hold() -> Iterator[type[Hold]]:
    Hold.running.clear()
    Hold.release.clear()
    yield Hold
    Hold.release.set()


@pytest.mark.parametrize("grace", [0, 30])
def test_a_non_admin_worker_survives_a_socket_blip(
    database_url: str,
    settings: Settings,
    hold: type[Hold],
    grace: float,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The README's loop with a non-admin token, a task running when the socket drops.

    Within the grace time the worker comes back as itself and its report lands.
    Without one the server fails the task at once and forgets the worker: the
    manager registers again, and the refused report is logged, not raised.
    """
    app = standalone_app(database_url, settings, realtime=True)
    with serve_in_thread(app) as server:
        worker = JobManager.connect(server.url, token=ALICE, heartbeat_interval=None)
        submitter = JobManager.connect(server.url, token=ALICE, socket=False)
        worker.register(hold, room="my_room", on_disconnect={"grace_seconds": grace})
        old = worker.worker_id
        sock = socket_of(worker)
        back = threading.Event()
        sock.on("connect", back.set)
        try:
            with (
                caplog.at_level(logging.WARNING, logger="joblib_client"),
                Listener(worker, polling_interval=0.2) as listener,
            ):
                held = submitter.submit(hold(), "my_room", job_room="my_room")
                assert hold.running.wait(10)
                dropped = sock.client.eio.ws
                dropped.abort()  # a network blip under python-socketio's feet
                assert back.wait(10), "the socket did not reconnect"
                dropped.shutdown()
                hold.release.set()
                assert listener.next_task(timeout=10).id == held
                after = submitter.submit(hold(), "my_room", job_room="my_room")
                assert listener.next_task(timeout=10).id == after
                now = worker.worker_id
            shown = submitter.wait(held, timeout=5)
        finally:
            worker.close()
            submitter.close()

    warnings = messages(caplog, logging.WARNING)
    if grace:
        assert now == old
        assert shown.status == TaskStatus.COMPLETED
        assert shown.worker_id == old
        assert warnings == []
    else:
        assert now not in (None, old)
        assert shown.status == TaskStatus.FAILED
        assert shown.error == "Worker disconnected"
        (refused,) = [m for m in warnings if str(held) in m]
        assert "no longer this worker's to report completed" in refused
