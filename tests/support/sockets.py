"""Real python-socketio peers for end-to-end tests, and what the server saw of them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import socketio

from tests.support.servers import LiveServer
from tests.support.tokens import bearer

Event = tuple[str, dict[str, Any]]


@dataclass
class Peer:
    """A connected python-socketio client that records every event it receives."""

    sio: socketio.Client
    events: list[Event] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)
    sid: str | None = None
    """The connection's id on the server (kept after the connection closes)."""

    def record(self, name: str, payload: dict[str, Any]) -> None:
        with self.changed:
            self.events.append((name, payload))
            self.changed.notify_all()

    def wait_for(self, match: Callable[[Event], bool], timeout: float = 10) -> Event:
        """Block until a received event matches, or fail after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for event in self.events:
                    if match(event):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no matching event; got {self.events}")
                self.changed.wait(remaining)

    def call(self, event: str, data: dict[str, Any]) -> Any:
        return self.sio.call(event, data, timeout=10)


@contextmanager
def connect_peer(
    url: str,
    *,
    token: str | None = None,
    header_token: str | None = None,
    rooms: tuple[str, ...] = (),
) -> Iterator[Peer]:
    """Connect a Socket.IO client (auth payload or Authorization header)."""
    sio = socketio.Client(reconnection=False)
    peer = Peer(sio)
    for name in (
        "task_available",
        "task_status_event",
        "jobs_invalidate",
        "task_progress_event",
        "task_cancelled",
        "providers_invalidate",
        "provider_request",
        "provider_result_ready",
    ):
        sio.on(name, lambda data, name=name: peer.record(name, data))
    sio.connect(
        url,
        auth={"token": token} if token else None,
        headers=bearer(header_token),
        transports=["websocket"],
        wait_timeout=10,
    )
    peer.sid = sio.get_sid()
    try:
        for room in rooms:
            answer = peer.call("join_room", {"room_id": room})
            assert answer == {"ok": True}, answer
        yield peer
    finally:
        sio.disconnect()


def disconnect_handled(server: LiveServer, peer: Peer) -> bool:
    """Whether the standalone server has finished handling `peer`'s disconnect.

    python-socketio forgets a connection only after its `disconnect` handler (our
    worker cleanup) has returned, so this is true once that cleanup is done.
    """
    assert peer.sid is not None, "the peer never connected"
    sio: socketio.AsyncServer = server.app.other_asgi_app.state.sio
    return sio.manager.eio_sid_from_sid(peer.sid, "/") is None
