"""While its socket is connected and the server keeps it alive, an idle manager
sends no REST heartbeats; holding a task, after a claim without an answer, or once
the socket drops, it heartbeats over REST as before."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import pytest
from starlette.testclient import TestClient

from joblib_client import JobManager, SocketClient
from joblib_protocol import Event, JoinJobRoom
from joblib_server import Settings
from tests.client.conftest import ManagerFactory
from tests.client.extensions import Rotate
from tests.support.rest import rest
from tests.support.servers import LiveServer, make_settings
from tests.support.tokens import ADMIN
from tests.support.waiting import eventually

TIMEOUT = 1.0
BEAT = 0.05


@pytest.fixture
def settings() -> Settings:
    return make_settings(
        worker_timeout_seconds=TIMEOUT,
        sweeper_interval_seconds=0.2,
        long_poll_max_wait_seconds=60,
    )


def count_beats(manager: JobManager) -> list[UUID]:
    """Record every REST heartbeat the manager sends (the worker it was for)."""
    beats: list[UUID] = []
    rest_api = manager._rest
    original = rest_api.heartbeat

    def counted(worker_id: UUID, tasks: Any = None) -> Any:
        beats.append(worker_id)
        return original(worker_id, tasks)

    rest_api.heartbeat = counted  # type: ignore[method-assign]
    return beats


@dataclass
class KeepingTsio:
    """A connected socket whose server keeps the worker alive (`heartbeat_seconds`)."""

    connected: bool = True
    events: list[Event] = field(default_factory=list)

    def emit(self, event: Event) -> object:
        self.events.append(event)
        return {"ok": True, "heartbeat_seconds": TIMEOUT / 3}


def count_ticks(manager: JobManager) -> list[float]:
    """Record every tick of the manager's heartbeat thread, beat sent or not."""
    ticker = manager._heartbeat
    assert ticker is not None
    ticks: list[float] = []
    action = ticker.action

    def ticked() -> object:
        try:
            return action()
        finally:
            ticks.append(time.monotonic())

    ticker.action = ticked
    return ticks


def _more_than(items: list[float], count: int) -> Callable[[], bool]:
    return lambda: len(items) > count


def _beats_after_ticks(beats: list[UUID], ticks: list[float], count: int = 4) -> int:
    """The REST beats once `count` more ticks came (and went) with none of them new."""
    while True:
        before, start = len(beats), len(ticks)
        eventually(_more_than(ticks, start + count - 1), what=f"{count} more ticks")
        if len(beats) == before:
            return before


def test_an_idle_manager_leaves_its_beats_to_the_socket(
    make_manager: ManagerFactory, server: TestClient
) -> None:
    tsio = KeepingTsio()
    manager = make_manager(tsio=tsio, heartbeat_interval=BEAT)
    beats, ticks = count_beats(manager), count_ticks(manager)
    manager.register(Rotate)
    job_name = "@global:modifiers:Rotate"
    assert any(isinstance(event, JoinJobRoom) for event in tsio.events)
    # Idle and kept alive: ticks pass without a REST beat.
    settled = _beats_after_ticks(beats, ticks)

    # Holding a task: every beat goes over REST again, listing it.
    submitted = server.post(
        f"/v1/joblib/rooms/@global/tasks/{job_name}",
        json={"payload": {}},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert submitted.status_code == 202, submitted.text
    task = manager.claim()
    assert task is not None
    eventually(lambda: len(beats) >= settled + 2, what="REST beats while holding")
    manager.complete(task)
    settled = _beats_after_ticks(beats, ticks)

    # A claim that got no answer: the next two beats go over REST, then none.
    manager._owe_beats()
    eventually(lambda: len(beats) >= settled + 2, what="the two beats owed")
    assert _beats_after_ticks(beats, ticks) == settled + 2

    # The socket down: REST beats again.
    tsio.connected = False
    eventually(lambda: len(beats) >= settled + 4, what="REST beats, socket down")


def _last_heartbeat(server: LiveServer, worker_id: UUID) -> datetime | None:
    with rest(server.api, ADMIN) as client:
        items = client.get("/workers", params={"limit": 500}).json()["items"]
    for item in items:
        if item["id"] == str(worker_id):
            return datetime.fromisoformat(item["last_heartbeat"])
    return None


def test_a_socket_worker_lives_past_the_timeout_without_rest_beats(
    make_live_manager: ManagerFactory, live_server: LiveServer
) -> None:
    manager = make_live_manager(heartbeat_interval=BEAT)
    beats = count_beats(manager)
    manager.register(Rotate)
    worker_id = manager.worker_id
    assert worker_id is not None
    first = _last_heartbeat(live_server, worker_id)
    assert first is not None
    settled = len(beats)

    def lived_three_timeouts() -> bool:
        beat = _last_heartbeat(live_server, worker_id)
        assert beat is not None, "the worker expired"
        return (beat - first).total_seconds() >= 3 * TIMEOUT

    eventually(lived_three_timeouts, timeout=10, what="three timeouts to pass")
    assert len(beats) == settled  # no REST heartbeat meanwhile

    # The socket drops: the server cleans the worker up at once, as before, and
    # the manager's REST beats find that out and register it again.
    assert isinstance(manager.tsio, SocketClient)
    manager.tsio.client.disconnect()
    eventually(lambda: len(beats) > settled, what="REST beats, socket down")
    eventually(lambda: manager.worker_id != worker_id, what="a new worker")


def test_the_claim_loop_holds_long_claims_and_close_answers_them(
    make_live_manager: ManagerFactory, live_server: LiveServer
) -> None:
    manager = make_live_manager(execute=lambda task: None, heartbeat_interval=BEAT)
    manager.register(Rotate)

    def held_claims() -> int:
        return live_server.inspect(lambda joblib: len(joblib.claims))

    eventually(lambda: held_claims() == 1, what="a held claim")
    thread = manager._serving._thread
    assert thread is not None
    # Held up to 60 s here (SERVE_PARK_SECONDS, capped by the server); closing
    # removes the worker, which answers it at once.
    manager.close()
    eventually(lambda: not thread.is_alive(), timeout=3, what="the claim loop to end")
    assert held_claims() == 0
