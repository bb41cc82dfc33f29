"""Socket.IO end to end: a real uvicorn server, real python-socketio clients, real
worker processes that get killed. The heart of joblib: a worker that goes away has
its in-flight tasks failed and its jobs tidied at once."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import socketio

from joblib_protocol import (
    Emission,
    JobsInvalidate,
    ProvidersInvalidate,
    TaskAvailable,
    TaskStatus,
    TaskStatusEvent,
)
from joblib_server import SocketIOEmitter
from tests.support.processes import worker_process
from tests.support.rest import rest
from tests.support.rows import count_rows
from tests.support.servers import LiveServer, make_settings
from tests.support.sockets import Peer, connect_peer, disconnect_handled
from tests.support.tokens import ADMIN, ALICE, BOB
from tests.support.waiting import eventually

JOB = "modifiers"
DISCONNECT = "the server to finish handling the disconnect"


def _room() -> str:
    return f"room-{uuid.uuid4().hex[:8]}"


def _status_of(event: tuple[str, dict[str, object]], task_id: str, status: str) -> bool:
    name, payload = event
    return (
        name == "task_status_event"
        and payload["id"] == task_id
        and payload["status"] == status
    )


def _submit(server: LiveServer, room: str, full_name: str) -> str:
    with rest(server.api, BOB) as client:
        answer = client.post(f"/rooms/{room}/tasks/{full_name}", json={"payload": {}})
        assert answer.status_code == 202, answer.text
        return str(answer.json()["id"])


def _task(server: LiveServer, task_id: str) -> dict[str, object]:
    with rest(server.api, BOB) as client:
        return dict(client.get(f"/tasks/{task_id}").json())


def _assert_worker_cleaned(server: LiveServer, room: str, worker_id: str) -> None:
    with rest(server.api, ALICE) as client:
        assert client.patch(f"/workers/{worker_id}").status_code == 404
        assert client.get(f"/rooms/{room}/jobs").json()["total"] == 0


@pytest.fixture
def observer(live_server: LiveServer) -> Iterator[tuple[Peer, str]]:
    """An admin socket observing a fresh room."""
    room = _room()
    with connect_peer(live_server.url, token=ADMIN, rooms=(room,)) as peer:
        yield peer, room


@pytest.mark.parametrize("how", ["kill -9", "clean close"])
def test_worker_that_goes_away_fails_its_task_at_once(
    live_server: LiveServer, observer: tuple[Peer, str], how: str
) -> None:
    peer, room = observer
    full_name = f"{room}:{JOB}:Crashy"
    with worker_process(live_server.url, ALICE, room, "Crashy") as worker:
        worker_id = worker.read()["worker_id"]
        task_id = _submit(live_server, room, full_name)
        assert worker.read()["task_id"] == task_id
        peer.wait_for(lambda e: _status_of(e, task_id, "running"))

        started = time.monotonic()
        if how == "kill -9":
            os.kill(worker.process.pid, signal.SIGKILL)
        else:
            assert worker.process.stdin is not None
            worker.process.stdin.write("close\n")
            worker.process.stdin.flush()
        _, failed = peer.wait_for(lambda e: _status_of(e, task_id, "failed"), 10)
        elapsed_ms = (time.monotonic() - started) * 1000
        print(f"\n{how}: task failed {elapsed_ms:.0f} ms after the worker went away")

    assert failed["error"] == "Worker disconnected"
    assert failed["worker_id"] == worker_id
    peer.wait_for(lambda e: e[0] == "jobs_invalidate")
    task = _task(live_server, task_id)
    assert task["status"] == "failed"
    assert task["error"] == "Worker disconnected"
    assert task["worker_id"] == worker_id
    _assert_worker_cleaned(live_server, room, worker_id)


def test_frozen_worker_is_declared_dead_by_the_ping(
    live_server: LiveServer, observer: tuple[Peer, str]
) -> None:
    """A stopped process never closes its socket; the ping timeout must notice."""
    peer, room = observer
    with worker_process(live_server.url, ALICE, room, "Frozen") as worker:
        worker_id = worker.read()["worker_id"]
        task_id = _submit(live_server, room, f"{room}:{JOB}:Frozen")
        worker.read()
        os.kill(worker.process.pid, signal.SIGSTOP)
        try:
            # The tests use a 1 s ping interval and timeout.
            peer.wait_for(lambda e: _status_of(e, task_id, "failed"), 15)
        finally:
            os.kill(worker.process.pid, signal.SIGCONT)
    _assert_worker_cleaned(live_server, room, worker_id)


def _register_and_join(server: LiveServer, peer: Peer, room: str, name: str) -> str:
    with rest(server.api, ALICE) as client:
        job = client.put(
            f"/rooms/{room}/jobs", json={"category": JOB, "name": name, "schema": {}}
        ).json()
    answer = peer.call(
        "join_job_room", {"job_name": job["full_name"], "worker_id": job["worker_id"]}
    )
    assert answer["ok"] is True, answer
    return str(job["worker_id"])


def test_task_available_reaches_the_joined_worker(live_server: LiveServer) -> None:
    room = _room()
    with connect_peer(live_server.url, header_token=ALICE) as worker:
        _register_and_join(live_server, worker, room, "Notified")
        task_id = _submit(live_server, room, f"{room}:{JOB}:Notified")
        _, payload = worker.wait_for(lambda e: e[0] == "task_available")
    assert payload == {
        "job_name": f"{room}:{JOB}:Notified",
        "room_id": room,
        "task_id": task_id,
    }


def test_graceful_leave_and_delete_leave_nothing_to_clean(
    live_server: LiveServer, observer: tuple[Peer, str], database_url: str
) -> None:
    peer, room = observer
    full_name = f"{room}:{JOB}:Polite"
    with connect_peer(live_server.url, token=ALICE) as worker:
        worker_id = _register_and_join(live_server, worker, room, "Polite")
        task_id = _submit(live_server, room, full_name)
        answer = worker.call(
            "leave_job_room", {"job_name": full_name, "worker_id": worker_id}
        )
        assert answer == {"ok": True}
        with rest(live_server.api, ALICE) as client:
            assert client.delete(f"/workers/{worker_id}").status_code == 204
        workers_before = count_rows(database_url, "joblib_worker")
    # The socket closed after its worker was already gone: nothing more happens.
    eventually(lambda: disconnect_handled(live_server, worker), what=DISCONNECT)
    assert count_rows(database_url, "joblib_worker") == workers_before == 0
    assert _task(live_server, task_id)["status"] == "pending"
    assert not [e for e in peer.events if e[1].get("status") == "failed"]
    with rest(live_server.api, ALICE) as client:
        # The job still has a pending task, so it stays listed.
        assert client.get(f"/rooms/{room}/jobs").json()["total"] == 1


@pytest.mark.parametrize("case", ["other identity", "unknown worker", "unserved job"])
def test_untrusted_join_is_refused_and_changes_nothing(
    live_server: LiveServer, database_url: str, case: str
) -> None:
    room = _room()
    with rest(live_server.api, ALICE) as client:
        job = client.put(
            f"/rooms/{room}/jobs", json={"category": JOB, "name": "Mine", "schema": {}}
        ).json()
        other = client.put(
            f"/rooms/{room}/jobs", json={"category": JOB, "name": "Other", "schema": {}}
        ).json()
    join = {"job_name": job["full_name"], "worker_id": job["worker_id"]}
    token = ALICE
    if case == "other identity":
        token = BOB
    elif case == "unknown worker":
        join["worker_id"] = str(uuid.uuid4())
    else:
        join["job_name"] = other["full_name"]
    with connect_peer(live_server.url, token=token) as intruder:
        answer = intruder.call("join_job_room", join)
        assert answer["ok"] is False
        assert answer["error"]["status"] in (403, 404)
    eventually(lambda: disconnect_handled(live_server, intruder), what=DISCONNECT)
    # Disconnecting the refused socket deleted nothing.
    assert count_rows(database_url, "joblib_worker") == 2
    assert count_rows(database_url, "joblib_worker_job") == 2


def test_connection_without_valid_token_is_refused(live_server: LiveServer) -> None:
    for auth in (None, {"token": "wrong"}):
        client = socketio.Client(reconnection=False)
        reasons: list[object] = []
        client.on("connect_error", reasons.append)
        with pytest.raises(socketio.exceptions.ConnectionError):
            client.connect(
                live_server.url, auth=auth, transports=["websocket"], wait_timeout=5
            )
        client.disconnect()
        assert "unauthorized" in str(reasons)


@pytest.fixture
def settings() -> object:
    return make_settings(worker_timeout_seconds=1, sweeper_interval_seconds=0.2)


def test_rest_only_worker_is_swept_after_the_timeout(
    live_server: LiveServer, observer: tuple[Peer, str]
) -> None:
    peer, room = observer
    with rest(live_server.api, ALICE) as client:
        job = client.put(
            f"/rooms/{room}/jobs", json={"category": JOB, "name": "Quiet", "schema": {}}
        ).json()
        task_id = _submit(live_server, room, job["full_name"])
        claimed = client.post(
            "/tasks/claim", json={"worker_id": job["worker_id"], "start": True}
        ).json()
        assert claimed["task"]["id"] == task_id
    # No heartbeat from here on.
    _, failed = peer.wait_for(lambda e: _status_of(e, task_id, "failed"), 10)
    assert failed["error"] == "Worker disconnected"
    _assert_worker_cleaned(live_server, room, job["worker_id"])


def test_reconnected_worker_survives_its_old_socket(
    live_server: LiveServer, database_url: str
) -> None:
    room = _room()
    with connect_peer(live_server.url, token=ALICE) as new_socket:
        with connect_peer(live_server.url, token=ALICE) as old_socket:
            worker_id = _register_and_join(live_server, old_socket, room, "Phoenix")
            answer = new_socket.call(
                "join_job_room",
                {"job_name": f"{room}:{JOB}:Phoenix", "worker_id": worker_id},
            )
            assert answer["ok"] is True
        eventually(lambda: disconnect_handled(live_server, old_socket), what=DISCONNECT)
        # The old socket is gone, but the worker lives on through the new one.
        assert count_rows(database_url, "joblib_worker") == 1
    eventually(lambda: disconnect_handled(live_server, new_socket), what=DISCONNECT)
    assert count_rows(database_url, "joblib_worker") == 0


class _SlowNetwork(socketio.AsyncServer):
    """A real AsyncServer whose sends wait for `gate`, like a slow network."""

    def __init__(self, fail: str | None = None) -> None:
        super().__init__(async_mode="asgi")
        self.gate = asyncio.Event()
        self.fail = fail
        self.sent: list[tuple[str, str]] = []

    async def emit(self, event: str, data: Any = None, **kwargs: Any) -> None:
        await self.gate.wait()
        if event == self.fail:
            raise ConnectionError("the network is down")
        self.sent.append((event, kwargs["room"]))
        await super().emit(event, data, **kwargs)


def _status(task_id: uuid.UUID, status: TaskStatus) -> Emission:
    now = datetime.now(UTC)
    event = TaskStatusEvent(
        id=str(task_id),
        name="r:modifiers:R",
        room_id="r",
        status=status,
        created_at=now,
    )
    return Emission(event, "room:r")


@pytest.mark.anyio
async def test_the_emitter_answers_before_the_network_and_keeps_order() -> None:
    sio = _SlowNetwork()
    emitter = SocketIOEmitter(sio)
    task = uuid.uuid4()
    available = Emission(
        TaskAvailable(job_name="r:modifiers:R", room_id="r", task_id=str(task)),
        "jobs:r:modifiers:R",
    )
    # Neither call waits for the network (which is not sending at all yet).
    await emitter.emit([available, _status(task, TaskStatus.PENDING)])
    await emitter.emit([_status(task, TaskStatus.CLAIMED)])
    assert sio.sent == []
    sio.gate.set()
    await emitter.drain()
    assert sio.sent == [
        ("task_status_event", "room:r"),  # pending
        ("task_available", "jobs:r:modifiers:R"),
        ("task_status_event", "room:r"),  # claimed, after the batch before it
    ]


@pytest.mark.anyio
async def test_a_failed_emission_is_logged_and_the_rest_still_go(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sio = _SlowNetwork(fail="task_available")
    sio.gate.set()
    emitter = SocketIOEmitter(sio)
    task = uuid.uuid4()
    available = TaskAvailable(job_name="r:modifiers:R", room_id="r", task_id=str(task))
    await emitter.emit([Emission(available, "jobs:r:modifiers:R")])
    await emitter.emit([_status(task, TaskStatus.PENDING)])
    await emitter.drain()
    assert sio.sent == [("task_status_event", "room:r")]
    assert "emitting task_available failed" in caplog.text


@pytest.mark.anyio
async def test_a_list_hint_still_waiting_in_the_queue_is_sent_once() -> None:
    sio = _SlowNetwork()
    emitter = SocketIOEmitter(sio)
    task = uuid.uuid4()
    jobs = Emission(JobsInvalidate(), "room:r")
    # 1,000 workers leaving at once: each cleanup asks the room to fetch its jobs.
    for _ in range(1000):
        await emitter.emit([jobs])
    await emitter.emit([_status(task, TaskStatus.FAILED), jobs])
    await emitter.emit([Emission(ProvidersInvalidate(), "room:r")])
    sio.gate.set()
    await emitter.drain()
    assert sio.sent == [
        ("jobs_invalidate", "room:r"),
        ("task_status_event", "room:r"),
        ("providers_invalidate", "room:r"),
    ]
    # Once sent, the next change sends it again (after `HINT_INTERVAL`).
    await emitter.emit([jobs])
    await emitter.drain()
    assert sio.sent[-1] == ("jobs_invalidate", "room:r")
    assert len(sio.sent) == 4


@pytest.mark.anyio
async def test_a_hint_already_being_sent_is_queued_again() -> None:
    sio = _SlowNetwork()
    emitter = SocketIOEmitter(sio)
    jobs = Emission(JobsInvalidate(), "room:r")
    await emitter.emit([jobs])
    # The sender has taken it from the queue and waits for the network: a change
    # committed now may not be in what that copy makes the observers fetch.
    await asyncio.sleep(0)
    await emitter.emit([jobs])
    sio.gate.set()
    await emitter.drain()
    assert sio.sent == [("jobs_invalidate", "room:r")] * 2


@pytest.mark.anyio
async def test_hints_close_together_go_out_as_the_first_and_one_more() -> None:
    sio = _SlowNetwork()
    sio.gate.set()
    emitter = SocketIOEmitter(sio)
    jobs = Emission(JobsInvalidate(), "room:r")
    await emitter.emit([jobs])
    await emitter.drain()
    assert sio.sent == [("jobs_invalidate", "room:r")]  # the first at once
    # Workers leaving one after another, each change committed and sent alone.
    for _ in range(50):
        await emitter.emit([jobs])
        await asyncio.sleep(0)
    await emitter.drain()
    # One more at the end of the interval (two if this loop took over 0.1 s).
    assert 2 <= len(sio.sent) <= 3, sio.sent
    assert sio.sent[-1] == ("jobs_invalidate", "room:r")


class _Paced(SocketIOEmitter):
    HINT_INTERVAL = 0.0
    HINT_SHARE = 0.5  # the pause: twice what sending the last copy took


@pytest.mark.anyio
async def test_a_hint_slow_to_send_waits_longer_before_the_next() -> None:
    sio = _SlowNetwork()
    emitter = _Paced(sio)
    jobs = Emission(JobsInvalidate(), "room:r")
    started = time.monotonic()
    await emitter.emit([jobs])
    await asyncio.sleep(0.05)  # the network takes 50 ms to send the first copy
    sio.gate.set()
    await emitter.emit([jobs])
    await emitter.drain()
    assert sio.sent == [("jobs_invalidate", "room:r")] * 2
    # The second copy waited twice the first one's sending time after its start.
    assert time.monotonic() - started >= 0.1


class _PerSocket(SocketIOEmitter):
    HINT_INTERVAL = 0.0
    HINT_SHARE = 1.0
    SEND_SECONDS = 0.02  # so 10 sockets in the room: a pause of 0.2 s


@pytest.mark.anyio
async def test_a_hint_to_a_big_room_waits_by_the_sockets_in_it() -> None:
    sio = _SlowNetwork()
    sio.gate.set()
    for n in range(10):
        sio.manager.basic_enter_room(f"s{n}", "/", None, eio_sid=f"e{n}")
        sio.manager.basic_enter_room(f"s{n}", "/", "room:r")
    emitter = _PerSocket(sio)
    jobs = Emission(JobsInvalidate(), "room:r")
    started = time.monotonic()
    await emitter.emit([jobs])
    await emitter.drain()
    await emitter.emit([jobs])
    await emitter.drain()
    assert sio.sent == [("jobs_invalidate", "room:r")] * 2
    assert time.monotonic() - started >= 0.2
