"""Threads sharing a manager: its lock guards state, never a request or an emit.

A request is held back at a `Gate` (an httpx hook on the real server's client) or
in the socket stand-in, while another thread reads the state or disconnects.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.testclient import TestClient

from joblib_client import JobLibError
from joblib_protocol import Event, JoinJobRoom
from tests.client.conftest import (
    Gate,
    Listener,
    ManagerFactory,
    RecordingTsio,
    auth,
    heartbeat_threads,
    in_thread,
)
from tests.client.extensions import Rotate, Select
from tests.support.tokens import ADMIN

T = TypeVar("T")

PROMPT = 5.0
"""Seconds a call that waits on no request may take, at most."""


def promptly(function: Callable[[], T]) -> T:
    """Call `function` in another thread; fail unless it returns within `PROMPT`."""
    thread, outcome = in_thread(function)
    thread.join(PROMPT)
    assert not thread.is_alive(), f"{function} waited on another thread"
    (result,) = outcome
    if isinstance(result, BaseException):
        raise result
    return result


def worker_count(server: TestClient) -> int:
    answer = server.get("/v1/joblib/workers", headers=auth(ADMIN))
    total: int = answer.json()["total"]
    return total


def test_a_first_registration_under_way_blocks_neither_state_nor_disconnect(
    make_manager: ManagerFactory, server: TestClient
) -> None:
    manager = make_manager(ADMIN)
    before = heartbeat_threads()
    with Gate(server, "PUT", "/jobs") as gate:
        registering, outcome = in_thread(lambda: manager.register(Rotate))
        assert gate.entered.wait(PROMPT)

        assert promptly(lambda: list(manager)) == []
        assert manager.worker_id is None
        promptly(manager.disconnect)

        assert registering.is_alive()
        gate.open()
        registering.join(PROMPT)

    # The server created the worker after disconnect(): the registration removes
    # it again, says so, and starts no heartbeat.
    (error,) = outcome
    assert isinstance(error, JobLibError)
    assert "disconnected" in str(error)
    assert worker_count(server) == 0
    assert heartbeat_threads() - before == set()
    assert manager.worker_id is None


def test_a_registration_under_way_blocks_neither_state_requests_nor_disconnect(
    make_manager: ManagerFactory, server: TestClient
) -> None:
    manager = make_manager(ADMIN)
    manager.register(Rotate)
    worker_id = manager.worker_id
    with Gate(server, "PUT", "/jobs") as gate:
        registering, outcome = in_thread(lambda: manager.register(Select))
        assert gate.entered.wait(PROMPT)

        assert promptly(lambda: list(manager)) == ["@global:modifiers:Rotate"]
        assert manager.worker_id == worker_id
        assert promptly(manager.heartbeat) == manager.last_heartbeat
        promptly(manager.disconnect)

        gate.open()
        registering.join(PROMPT)

    # Sent after the worker was removed: the server no longer knows it.
    (error,) = outcome
    assert isinstance(error, JobLibError)
    assert len(manager) == 0
    assert worker_count(server) == 0


class SlowJoinTsio(RecordingTsio):
    """Holds every `join_job_room` until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.joining = threading.Event()
        self.release = threading.Event()

    def emit(self, event: Event) -> object:
        if isinstance(event, JoinJobRoom):
            self.joining.set()
            self.release.wait(30)
        return super().emit(event)


def test_a_join_under_way_blocks_neither_state_nor_disconnect(
    make_manager: ManagerFactory, server: TestClient
) -> None:
    tsio = SlowJoinTsio()
    manager = make_manager(ADMIN, tsio)
    try:
        registering, outcome = in_thread(lambda: manager.register(Rotate))
        assert tsio.joining.wait(PROMPT)

        assert promptly(lambda: list(manager)) == ["@global:modifiers:Rotate"]
        promptly(manager.disconnect)
    finally:
        tsio.release.set()
    registering.join(PROMPT)

    assert outcome == [Rotate]
    assert worker_count(server) == 0


def test_a_heartbeat_under_way_neither_holds_up_disconnect_nor_starts_again(
    make_manager: ManagerFactory, server: TestClient
) -> None:
    before = heartbeat_threads()
    manager = make_manager(ADMIN, heartbeat_interval=0.05)
    manager.register(Rotate)
    (heartbeat,) = heartbeat_threads() - before
    with Gate(server, "PATCH", "/workers/") as gate:
        assert gate.entered.wait(PROMPT)  # a beat waits at the gate

        promptly(manager.disconnect)

        assert heartbeat.is_alive()
        gate.open()
        # The beat finds the worker gone; the thread ends and nothing restarts.
        heartbeat.join(PROMPT)
    assert not heartbeat.is_alive()
    assert heartbeat_threads() - before == set()
    assert manager.worker_id is None
    assert worker_count(server) == 0


def test_a_recovery_under_way_at_disconnect_leaves_no_worker_and_no_heartbeat(
    make_manager: ManagerFactory, server: TestClient
) -> None:
    before = heartbeat_threads()
    manager = make_manager(ADMIN)  # the default heartbeat: its thread runs
    manager.register(Rotate)
    (heartbeat,) = heartbeat_threads() - before
    forgotten = server.delete(
        f"/v1/joblib/workers/{manager.worker_id}", headers=auth(ADMIN)
    )
    assert forgotten.status_code == 204
    with (
        Gate(server, "PUT", "/jobs") as gate,
        Listener(manager, polling_interval=0.05),  # its exit: no error, stopped
    ):
        # listen() finds the worker gone and registers again: held at the gate.
        assert gate.entered.wait(PROMPT)

        promptly(manager.disconnect)

        gate.open()
    heartbeat.join(PROMPT)
    assert not heartbeat.is_alive()
    assert heartbeat_threads() - before == set()
    assert manager.worker_id is None
    # The worker the recovery created after disconnect() was removed again.
    assert worker_count(server) == 0


def test_threads_registering_at_once_share_one_worker(
    make_manager: ManagerFactory, server: TestClient
) -> None:
    manager = make_manager(ADMIN)
    with Gate(server, "PUT", "/jobs") as gate:
        first, first_outcome = in_thread(lambda: manager.register(Rotate))
        assert gate.entered.wait(PROMPT)
        # The second waits for the worker the first is creating.
        second, second_outcome = in_thread(lambda: manager.register(Select))
        gate.open()
        first.join(PROMPT)
        second.join(PROMPT)

    outcomes: list[Any] = [*first_outcome, *second_outcome]
    assert outcomes == [Rotate, Select]
    assert sorted(manager) == ["@global:modifiers:Rotate", "@global:selections:Select"]
    assert worker_count(server) == 1
