"""End to end on a live server with a real socket: wakeups, reconnects, errors."""

from __future__ import annotations

import threading
import time
from typing import ClassVar

import httpx
import pytest

from joblib_client import (
    Category,
    Extension,
    JobManager,
    SchemaConflictError,
    SocketClient,
    TransportError,
)
from joblib_protocol import TaskStatus
from tests.client.conftest import Listener, ManagerFactory
from tests.client.extensions import Rotate
from tests.support.servers import LiveServer
from tests.support.tokens import ADMIN, ALICE

SLOW_POLL = 30.0
"""A polling interval no test waits for: a task arriving sooner came by socket
(the listeners here do not park their claims, as against a server that cannot)."""

PROMPT = 5.0


def claimed_once(manager: JobManager) -> threading.Event:
    """An event set once the manager has sent its first claim."""
    seen = threading.Event()

    def hook(response: httpx.Response) -> None:
        if response.request.url.path.endswith("/tasks/claim"):
            seen.set()

    manager.api.http.event_hooks["response"].append(hook)
    return seen


def socket_of(manager: JobManager) -> SocketClient:
    assert isinstance(manager.tsio, SocketClient)
    return manager.tsio


def assert_wakes_listen(
    listener: Listener, submitter: JobManager, room: str = "room1"
) -> None:
    started = time.monotonic()
    task_id = submitter.submit(Rotate(angle=3), room)
    task = listener.next_task(timeout=PROMPT)
    assert task.id == task_id
    assert time.monotonic() - started < PROMPT


@pytest.fixture
def worker(make_live_manager: ManagerFactory) -> JobManager:
    """A socket-connected worker serving `Rotate`."""
    manager = make_live_manager(ADMIN)
    manager.register(Rotate)
    return manager


@pytest.fixture
def submitter(make_live_manager: ManagerFactory) -> JobManager:
    """A REST-only manager that submits tasks."""
    return make_live_manager(ALICE, socket=False)


def test_task_available_wakes_listen_at_once(
    worker: JobManager, submitter: JobManager
) -> None:
    first_claim = claimed_once(worker)

    with Listener(worker, polling_interval=SLOW_POLL, park_claims=False) as listener:
        assert first_claim.wait(PROMPT)
        assert_wakes_listen(listener, submitter)


def test_a_reconnected_socket_joins_the_rooms_again(
    worker: JobManager, submitter: JobManager
) -> None:
    sock = socket_of(worker)
    # Handlers run in the order they were added: the manager's rejoin first.
    rejoined = threading.Event()
    sock.on("connect", rejoined.set)
    first_claim = claimed_once(worker)

    with Listener(worker, polling_interval=SLOW_POLL, park_claims=False) as listener:
        assert first_claim.wait(PROMPT)
        # A network drop: shut the transport under python-socketio's feet.
        dropped = sock.client.eio.ws
        dropped.abort()
        try:
            assert rejoined.wait(10), "the socket did not reconnect"
        finally:
            dropped.shutdown()
        assert worker.worker_id is not None
        assert_wakes_listen(listener, submitter)


def test_schema_conflict_raises_the_conflict_error(
    worker: JobManager, make_live_manager: ManagerFactory
) -> None:
    other = make_live_manager(ADMIN)

    class Rotate2(Extension):
        category: ClassVar[Category] = Category.MODIFIER
        degrees: int = 0

    Rotate2.__name__ = "Rotate"

    with pytest.raises(SchemaConflictError) as caught:
        other.register(Rotate2)
    assert caught.value.status == 409
    assert caught.value.type == "/v1/problems/schema-conflict"
    assert len(other) == 0


def test_submit_and_wait_for_a_task_run_by_a_worker(
    worker: JobManager, submitter: JobManager
) -> None:
    with Listener(worker, polling_interval=SLOW_POLL, park_claims=False):
        task_id = submitter.submit(Rotate(angle=12), "room1")
        done = submitter.wait(task_id, timeout=10)

    assert done.status == TaskStatus.COMPLETED
    assert done.payload == {"angle": 12}


def test_connect_with_a_bad_token_raises_and_closes(live_server: LiveServer) -> None:
    with pytest.raises(TransportError):
        JobManager.connect(live_server.url, token="wrong", heartbeat_interval=None)


def test_leaving_the_block_removes_the_worker_and_closes_the_clients(
    live_server: LiveServer,
) -> None:
    with JobManager.connect(live_server.url, token=ADMIN) as manager:
        manager.register(Rotate)
        worker_id = manager.worker_id
        sock = socket_of(manager)
        assert sock.connected

    assert not sock.connected
    assert manager.api.http.is_closed
    with httpx.Client(base_url=live_server.api) as http:
        answer = http.patch(
            f"/workers/{worker_id}", headers={"Authorization": f"Bearer {ADMIN}"}
        )
    assert answer.status_code == 404
