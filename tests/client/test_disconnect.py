"""JobManager.disconnect() and the context manager: leave rooms, remove the worker."""

from __future__ import annotations

import logging
from uuid import UUID

import httpx
import pytest
from starlette.testclient import TestClient

from joblib_client import JobLibError, JobManager, SocketClient
from joblib_protocol import LeaveJobRoom, TaskStatus
from joblib_server import Settings
from tests.client.conftest import (
    InProcessApi,
    Listener,
    ManagerFactory,
    RecordingTsio,
    RequestCounter,
    auth,
    heartbeat_threads,
    standalone_app,
)
from tests.client.extensions import Rotate, Select
from tests.support import eventually
from tests.support.servers import LiveServer, free_port, serve_in_thread
from tests.support.tokens import ADMIN, ALICE


def assert_worker_gone(server: TestClient, worker_id: UUID | None) -> None:
    assert worker_id is not None
    answer = server.patch(f"/v1/joblib/workers/{worker_id}", headers=auth(ADMIN))
    assert answer.status_code == 404, answer.text


def assert_cleared(manager: JobManager) -> None:
    assert len(manager) == 0
    assert list(manager) == []
    assert manager.worker_id is None


def test_disconnect_leaves_every_room_and_removes_the_worker(
    make_manager: ManagerFactory, server: TestClient
) -> None:
    tsio = RecordingTsio()
    manager = make_manager(ADMIN, tsio)
    manager.register(Rotate)
    manager.register(Select)
    worker_id = manager.worker_id

    manager.disconnect()

    leaves = tsio.of(LeaveJobRoom)
    assert {leave.job_name for leave in leaves} == {
        "@global:modifiers:Rotate",
        "@global:selections:Select",
    }
    assert len(leaves) == 2
    assert {leave.worker_id for leave in leaves} == {str(worker_id)}
    assert_cleared(manager)
    assert_worker_gone(server, worker_id)


def test_disconnect_without_a_socket_uses_rest_only(
    make_manager: ManagerFactory, server: TestClient
) -> None:
    manager = make_manager(ADMIN)
    manager.register(Rotate)
    worker_id = manager.worker_id

    manager.disconnect()

    assert_cleared(manager)
    assert_worker_gone(server, worker_id)


def test_disconnect_without_a_worker_sends_nothing(
    make_manager: ManagerFactory, count_requests: RequestCounter
) -> None:
    tsio = RecordingTsio()
    manager = make_manager(ADMIN, tsio)

    manager.disconnect()

    assert len(count_requests) == 0
    assert tsio.events == []
    assert_cleared(manager)


def test_disconnect_twice_is_a_no_op_the_second_time(
    make_manager: ManagerFactory, count_requests: RequestCounter
) -> None:
    tsio = RecordingTsio()
    manager = make_manager(ADMIN, tsio)
    manager.register(Rotate)
    manager.disconnect()
    sent, emitted = len(count_requests), len(tsio.events)
    assert (sent, emitted) == (2, 2)  # register and delete; join and leave

    manager.disconnect()

    assert len(count_requests) == sent
    assert len(tsio.events) == emitted


def test_disconnect_after_the_server_removed_the_worker(
    make_manager: ManagerFactory,
    server: TestClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager = make_manager(ADMIN)
    manager.register(Rotate)
    removed = server.delete(
        f"/v1/joblib/workers/{manager.worker_id}", headers=auth(ADMIN)
    )
    assert removed.status_code == 204

    with caplog.at_level(logging.WARNING, logger="joblib_client"):
        manager.disconnect()

    assert_cleared(manager)
    assert caplog.records == []


def test_disconnect_with_the_server_unreachable_still_clears_local_state(
    make_manager: ManagerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    tsio = RecordingTsio()
    manager = make_manager(ADMIN, tsio)
    manager.register(Rotate)
    worker_id = manager.worker_id
    assert isinstance(manager.api, InProcessApi)
    with httpx.Client(timeout=2) as unreachable:
        manager.api.http = unreachable
        manager.api.base_url = f"http://127.0.0.1:{free_port()}"

        with caplog.at_level(logging.ERROR, logger="joblib_client"):
            manager.disconnect()

    assert_cleared(manager)
    assert len(tsio.of(LeaveJobRoom)) == 1
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    assert str(worker_id) in record.getMessage()


def test_context_manager_cleans_up(
    make_manager: ManagerFactory, server: TestClient
) -> None:
    with make_manager(ADMIN) as manager:
        manager.register(Rotate)
        worker_id = manager.worker_id

    assert_cleared(manager)
    assert_worker_gone(server, worker_id)


def test_context_manager_cleans_up_when_the_block_raises(
    make_manager: ManagerFactory, server: TestClient
) -> None:
    manager = make_manager(ADMIN, RecordingTsio())
    seen: list[UUID | None] = []

    def block() -> None:
        with manager as entered:
            assert entered is manager
            manager.register(Rotate)
            seen.append(manager.worker_id)
            raise RuntimeError("in the block")

    with pytest.raises(RuntimeError, match="in the block"):
        block()

    assert_cleared(manager)
    assert_worker_gone(server, seen[0])


def test_disconnect_fails_the_task_in_flight(
    make_manager: ManagerFactory, server: TestClient
) -> None:
    manager = make_manager(ADMIN)
    manager.register(Rotate)
    task_id = make_manager(ALICE).submit(Rotate(angle=1), "room1")
    task = manager.claim(start=False)
    assert task is not None
    assert task.id == task_id
    manager.start(task)
    assert task.status == TaskStatus.RUNNING

    manager.disconnect()

    shown = server.get(f"/v1/joblib/tasks/{task_id}", headers=auth(ALICE)).json()
    assert shown["status"] == "failed"
    assert shown["error"] == "Worker disconnected"


def test_disconnect_stops_listen_and_the_heartbeat(
    make_manager: ManagerFactory,
) -> None:
    manager = make_manager(ADMIN, heartbeat_interval=0.05)
    manager.register(Rotate)
    listener = Listener(manager, polling_interval=30)

    with listener:
        manager.disconnect()
        listener.thread.join(timeout=5)
        assert not listener.thread.is_alive()

    assert_cleared(manager)


def test_a_disconnected_manager_does_not_become_a_worker_again(
    make_manager: ManagerFactory, server: TestClient, count_requests: RequestCounter
) -> None:
    manager = make_manager(ADMIN)
    manager.register(Rotate)
    manager.disconnect()
    before = heartbeat_threads()
    count_requests.clear()

    with pytest.raises(JobLibError, match="disconnected"):
        manager.register(Select)
    with pytest.raises(JobLibError, match="disconnected"):
        manager.create_worker()
    with pytest.raises(JobLibError, match="disconnected"):
        next(manager.listen())

    assert len(count_requests) == 0
    assert heartbeat_threads() - before == set()
    assert_cleared(manager)


def socket_of(manager: JobManager) -> SocketClient:
    assert isinstance(manager.tsio, SocketClient)
    return manager.tsio


def test_close_closes_socket_and_http_client_when_the_server_is_gone(
    database_url: str, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    app = standalone_app(database_url, settings, realtime=True)
    with serve_in_thread(app) as live:
        manager = JobManager.connect(live.url, token=ADMIN)
        manager.register(Rotate)
        worker_id = manager.worker_id
        sock = socket_of(manager)
        dropped = sock.client.eio.ws
    eventually(lambda: not sock.connected, what="the socket to notice")

    with caplog.at_level(logging.WARNING, logger="joblib_client"):
        manager.close()  # leaving the room and removing the worker both fail

    # python-engineio leaves a dropped websocket to the garbage collector.
    dropped.shutdown()
    assert manager.api.http.is_closed
    assert not sock.connected
    assert sock.client.eio.state == "disconnected"
    assert_cleared(manager)
    messages = [record.getMessage() for record in caplog.records]
    assert any(f"could not remove worker {worker_id}" in m for m in messages)


def test_close_closes_the_socket_when_removing_the_worker_raises(
    live_server: LiveServer,
) -> None:
    manager = JobManager.connect(live_server.url, token=ADMIN)
    manager.register(Rotate)
    sock = socket_of(manager)
    manager.api.http.close()  # closed behind the manager's back: not a JobLibError

    with pytest.raises(RuntimeError, match="closed"):
        manager.close()

    assert not sock.connected
    assert_cleared(manager)


def test_disconnect_logs_what_became_of_the_tasks_in_flight(
    make_manager: ManagerFactory, server: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    manager = make_manager(ADMIN)
    manager.register(Rotate, on_disconnect={"action": "requeue"})
    task_id = make_manager(ALICE).submit(Rotate(angle=1), "room1")
    task = manager.claim()
    assert task is not None
    worker_id = manager.worker_id

    with caplog.at_level(logging.INFO, logger="joblib_client"):
        manager.disconnect()

    (record,) = [r for r in caplog.records if str(worker_id) in r.getMessage()]
    assert record.levelno == logging.INFO
    assert "0 failed, 1 requeued" in record.getMessage()
    shown = server.get(f"/v1/joblib/tasks/{task_id}", headers=auth(ALICE)).json()
    assert (shown["status"], shown["attempt"]) == ("pending", 2)
