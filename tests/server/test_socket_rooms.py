"""`IndexedManager`: python-socketio's room bookkeeping, with each socket's rooms
kept so that a disconnect does not walk every room of the server."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import socketio

from joblib_protocol import job_channel, room_channel, worker_channel
from joblib_server.socket_rooms import IndexedManager, IndexedRedisManager
from tests.support.rest import rest
from tests.support.servers import LiveServer
from tests.support.sockets import connect_peer, disconnect_handled
from tests.support.tokens import ADMIN, ALICE
from tests.support.waiting import eventually


def _steps(manager: Any) -> None:
    """Enter, leave and disconnect as the server does, on three sockets."""
    for n, sid in enumerate(("a", "b", "c")):
        manager.basic_enter_room(sid, "/", None, eio_sid=f"eio-{sid}")
        manager.basic_enter_room(sid, "/", sid)
        manager.basic_enter_room(sid, "/", "room:r")
        manager.basic_enter_room(sid, "/", f"workers:{n}")
    manager.basic_enter_room("a", "/", "jobs:r:modifiers:J")
    manager.basic_leave_room("b", "/", "room:r")
    manager.basic_leave_room("b", "/", "never-entered")
    manager.basic_disconnect("a", "/")
    manager.basic_disconnect("c", "/")
    manager.basic_disconnect("nobody", "/")


def test_the_rooms_end_as_python_socketio_leaves_them() -> None:
    plain, indexed = socketio.AsyncManager(), IndexedManager()
    _steps(plain)
    _steps(indexed)
    assert indexed.rooms == plain.rooms
    assert sorted(indexed.get_rooms("b", "/")) == ["b", "workers:1"]
    assert sorted(plain.get_rooms("b", "/")) == ["b", "workers:1"]
    assert indexed.get_rooms("a", "/") == []
    # Only the socket still connected is indexed.
    assert set(indexed.rooms_of) == {("/", "b")}
    indexed.basic_disconnect("b", "/")
    assert indexed.rooms == {}
    assert indexed.rooms_of == {}


def test_the_redis_manager_keeps_the_index_too() -> None:
    manager = IndexedRedisManager("redis://127.0.0.1:6379/0", write_only=True)
    _steps(manager)
    assert set(manager.rooms_of) == {("/", "b")}


def _manager(server: LiveServer) -> IndexedManager:
    sio: socketio.AsyncServer = server.app.other_asgi_app.state.sio
    assert isinstance(sio.manager, IndexedManager)
    return sio.manager


def _rooms_holding(server: LiveServer, sid: str) -> list[str | None]:
    """The rooms `sid` is in; None is python-socketio's room of all connections."""

    def read(_: object) -> list[str | None]:
        rooms = _manager(server).rooms.get("/", {})
        return [name for name, members in dict(rooms).items() if sid in members]

    return server.inspect(read)


def test_a_closed_socket_leaves_its_rooms_and_the_others_keep_theirs(
    live_server: LiveServer,
) -> None:
    room = f"room-{uuid.uuid4().hex[:8]}"
    with rest(live_server.api, ALICE) as client:
        job = client.put(
            f"/rooms/{room}/jobs",
            json={"category": "modifiers", "name": "J", "schema": {}},
        ).json()
    name, worker_id = job["full_name"], job["worker_id"]
    with connect_peer(live_server.url, token=ADMIN, rooms=(room,)) as watcher:
        with connect_peer(live_server.url, token=ALICE, rooms=(room,)) as worker:
            answer = worker.call(
                "join_job_room", {"job_name": name, "worker_id": worker_id}
            )
            assert answer["ok"] is True, answer
            assert worker.sid is not None
            assert set(_rooms_holding(live_server, worker.sid)) == {
                None,
                worker.sid,
                room_channel(room),
                job_channel(name),
                worker_channel(uuid.UUID(worker_id)),
            }
        eventually(lambda: disconnect_handled(live_server, worker), what="the close")
        assert _rooms_holding(live_server, worker.sid) == []
        assert ("/", worker.sid) not in live_server.inspect(
            lambda _: dict(_manager(live_server).rooms_of)
        )
        # The watcher is still in the room: the worker's cleanup reaches it.
        watcher.wait_for(lambda event: event[0] == "jobs_invalidate")
        assert watcher.sid is not None
        assert set(_rooms_holding(live_server, watcher.sid)) == {
            None,
            watcher.sid,
            room_channel(room),
        }
    # Its close is logged by the server's thread: within this test, not the next.
    eventually(lambda: disconnect_handled(live_server, watcher), what="the close")


class _Server:
    """What a manager needs of its server to emit: the packet class and sending."""

    packet_class = socketio.packet.Packet

    def __init__(self) -> None:
        self.eio = self
        self.sent: list[tuple[str, str]] = []

    async def send_packet(self, eio_sid: str, pkt: Any) -> None:
        self.sent.append((eio_sid, pkt.encode()))

    async def _send_eio_packet(self, eio_sid: str, pkt: Any) -> None:
        await self.send_packet(eio_sid, pkt)


@pytest.mark.anyio
async def test_an_event_reaches_the_same_sockets_as_python_socketio_sends_it() -> None:
    sent: list[list[tuple[str, str]]] = []
    for manager in (socketio.AsyncManager(), IndexedManager()):
        server = _Server()
        manager.server = server
        _steps(manager)
        manager.basic_enter_room("d", "/", None, eio_sid="eio-d")
        manager.basic_enter_room("d", "/", "room:r")
        await manager.emit("jobs_invalidate", {}, "/", room="room:r")
        await manager.emit("two", ("a", 1), "/", room="room:r", skip_sid="d")
        await manager.emit("to_b", None, "/", to="b")
        await manager.emit("nobody", {}, "/", room="room:empty")
        sent.append(sorted(server.sent))
    assert sent[0] == sent[1]
    assert sent[1] == [
        ("eio-b", '42["to_b"]'),
        ("eio-d", '42["jobs_invalidate",{}]'),
    ]
