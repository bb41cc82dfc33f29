"""The Socket.IO side of the server under test: peers that record what they get.

A `Peer` is one python-socketio connection. It records every event it receives
and, when given a REST client, reads the resource the event is about the moment
the event arrives (`Received.snapshot`): an event must describe a change that is
already visible over REST.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import socketio

from joblib_conformance.checks import CheckFailed
from joblib_conformance.rest import Rest, bearer, segment
from joblib_protocol import JobsInvalidate, JoinRoom, TaskAvailable, TaskStatusEvent


@dataclass(frozen=True)
class Snapshot:
    """A REST answer read right after an event arrived."""

    status: int
    body: Any


@dataclass(frozen=True)
class Received:
    """One event a peer received."""

    name: str
    payload: Any
    at: float
    """`time.monotonic()` when it arrived."""
    snapshot: Snapshot | None = None


class ConnectionRefused(Exception):
    """The server refused the Socket.IO handshake (or could not be reached)."""


@dataclass
class Peer:
    """A Socket.IO connection to the server under test.

    `via="header"` authenticates the handshake with `Authorization: Bearer`
    (the zndraw-joblib way), `via="auth"` with the `auth` payload `{"token"}`
    (ours, for browsers). With `snapshots`, each `task_status_event` and
    `task_available` is followed at once by `GET /tasks/{id}`, and each
    `jobs_invalidate` by `GET /rooms/{room}/jobs` of the room joined last.
    """

    url: str
    token: str | None
    via: str = "header"
    socketio_path: str = "socket.io"
    timeout: float = 10.0
    snapshots: Rest | None = None
    events: list[Received] = field(default_factory=list)
    watching: str | None = None
    """The room of the last `join_room`: whose jobs a `jobs_invalidate` is about."""

    def __post_init__(self) -> None:
        self.sio = socketio.Client(reconnection=False, handle_sigint=False)
        self._changed = threading.Condition()
        self.sio.on("*", self._record)

    def connect(self) -> Peer:
        """Connect, or raise `ConnectionRefused`."""
        headers = bearer(self.token) if self.via == "header" else {}
        auth = {"token": self.token} if self.via == "auth" and self.token else None
        try:
            self.sio.connect(
                self.url,
                headers=headers,
                auth=auth,
                transports=["websocket"],
                socketio_path=self.socketio_path,
                wait_timeout=self.timeout,
            )
        except socketio.exceptions.ConnectionError as exc:
            raise ConnectionRefused(str(exc) or type(exc).__name__) from None
        return self

    @property
    def connected(self) -> bool:
        """Whether the connection is up."""
        return bool(self.sio.connected)

    def _record(self, name: str, *args: Any) -> None:
        payload = args[0] if args else None
        arrived = time.monotonic()
        snapshot = self._snapshot(name, payload)
        with self._changed:
            self.events.append(Received(name, payload, arrived, snapshot))
            self._changed.notify_all()

    def _snapshot(self, name: str, payload: Any) -> Snapshot | None:
        rest = self.snapshots
        if rest is None or not isinstance(payload, dict):
            return None
        if name == TaskStatusEvent.event_name:
            path = f"/tasks/{payload.get('id')}"
        elif name == TaskAvailable.event_name:
            path = f"/tasks/{payload.get('task_id')}"
        elif name == JobsInvalidate.event_name and self.watching is not None:
            path = f"/rooms/{segment(self.watching)}/jobs?limit=500"
        else:
            return None
        try:
            answer = rest.get(path)
        except Exception as exc:
            return Snapshot(0, f"{type(exc).__name__}: {exc}")
        try:
            body = answer.json()
        except ValueError:
            body = answer.text
        return Snapshot(answer.status_code, body)

    def call(self, event: str, data: Any) -> Any:
        """Send `event` and return the server's acknowledgement."""
        try:
            return self.sio.call(event, data, timeout=self.timeout)
        except socketio.exceptions.TimeoutError:
            raise CheckFailed(
                f"an acknowledgement of {event}", f"none within {self.timeout:g} s"
            ) from None

    def join_room(self, room_id: str) -> Any:
        """Observe `room:{room_id}` (ours: `join_room`); the ack must be ok."""
        ack = self.call(JoinRoom.event_name, {"room_id": room_id})
        if not (isinstance(ack, dict) and ack.get("ok") is True):
            raise CheckFailed(f'join_room {room_id!r} acknowledged {{"ok": true}}', ack)
        self.watching = room_id
        return ack

    def received(self, name: str | None = None) -> list[Received]:
        """The events received so far (of one name)."""
        with self._changed:
            return [e for e in self.events if name is None or e.name == name]

    def wait_for(
        self,
        name: str,
        match: Callable[[Any], bool] = lambda payload: True,
        *,
        timeout: float | None = None,
        what: str | None = None,
    ) -> Received:
        """The first `name` event whose payload matches, received or to come."""
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        with self._changed:
            while True:
                for event in self.events:
                    if event.name == name and _safely(match, event.payload):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [(e.name, e.payload) for e in self.events][-8:]
                    raise CheckFailed(
                        what or f"a {name} event", f"none in {limit:g} s; got {seen}"
                    )
                self._changed.wait(remaining)

    def close(self) -> None:
        """Disconnect (if connected)."""
        if self.sio.connected:
            self.sio.disconnect()
        self.sio.shutdown()


def _safely(match: Callable[[Any], bool], payload: Any) -> bool:
    try:
        return bool(match(payload))
    except (KeyError, TypeError, AttributeError):
        return False
