"""Socket.IO's front door on a live server: unnamed sessions closed, caps on
sessions, bad packets logged as one line. Raw Engine.IO handshakes, no client
library between the test and the wire."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import socketio
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from joblib_server import Settings
from tests.support.servers import LiveServer, make_settings
from tests.support.sockets import connect_peer, disconnect_handled
from tests.support.tokens import ALICE, BOB
from tests.support.waiting import eventually

MAX_SOCKETS = 4
PER_IDENTITY = 2


@pytest.fixture
def settings() -> Settings:
    return make_settings(
        handshake_timeout_seconds=1,
        max_sockets=MAX_SOCKETS,
        max_sockets_per_identity=PER_IDENTITY,
    )


def _sio(server: LiveServer) -> socketio.AsyncServer:
    sio: socketio.AsyncServer = server.app.other_asgi_app.state.sio
    return sio


def _sessions(server: LiveServer) -> set[str]:
    return set(server.inspect(lambda _: dict(_sio(server).eio.sockets)))


def _polling_handshake(server: LiveServer) -> httpx.Response:
    """The first request of an Engine.IO session over long-polling, and no more."""
    return httpx.get(f"{server.url}/socket.io/?EIO=4&transport=polling", timeout=10)


def _session_id(answer: httpx.Response) -> str:
    assert answer.status_code == 200, answer.text
    assert answer.text.startswith("0")  # Engine.IO OPEN
    sid: str = json.loads(answer.text[1:])["sid"]
    return sid


@contextmanager
def _websocket(server: LiveServer) -> Iterator[ClientConnection]:
    """A raw Engine.IO WebSocket, its OPEN packet read."""
    url = (
        server.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    )
    with connect(url, open_timeout=10) as ws:
        assert _text(ws).startswith("0")  # Engine.IO OPEN
        yield ws


def _text(ws: ClientConnection) -> str:
    message = ws.recv(timeout=10)
    assert isinstance(message, str)
    return message


def _connect_packet(token: str) -> str:
    """Socket.IO CONNECT to `/` with the `auth` payload, in its Engine.IO MESSAGE."""
    return "40" + json.dumps({"token": token})


def _closed_within(ws: ClientConnection, seconds: float) -> list[str | bytes]:
    """Read until the server closes the WebSocket; what it sent before that."""
    received: list[str | bytes] = []
    try:
        while True:
            received.append(ws.recv(timeout=seconds))
    except ConnectionClosed:
        return received


def test_a_polling_session_that_never_connects_is_closed(
    live_server: LiveServer,
) -> None:
    sid = _session_id(_polling_handshake(live_server))
    assert sid in _sessions(live_server)
    eventually(lambda: sid not in _sessions(live_server), what="the session to close")
    answer = httpx.get(
        f"{live_server.url}/socket.io/?EIO=4&transport=polling&sid={sid}", timeout=10
    )
    assert answer.status_code == 400


def test_a_websocket_that_never_connects_is_closed(live_server: LiveServer) -> None:
    with _websocket(live_server) as ws:
        # Engine.IO's CLOSE packet, then the close frame: well before any ping
        # timeout (8 s here), so the file descriptor is free at once.
        assert _closed_within(ws, seconds=5) == ["1"]
    assert _sessions(live_server) == set()


def test_a_connected_session_is_kept(live_server: LiveServer) -> None:
    with connect_peer(live_server.url, token=ALICE) as peer:
        unnamed = _session_id(_polling_handshake(live_server))
        eventually(lambda: unnamed not in _sessions(live_server), what="the close")
        assert peer.sio.connected
        assert peer.call("join_room", {"room_id": "room1"}) == {"ok": True}
    eventually(lambda: disconnect_handled(live_server, peer), what="the disconnect")


def test_sessions_beyond_max_sockets_are_refused_with_the_reason(
    live_server: LiveServer,
) -> None:
    opened = [_session_id(_polling_handshake(live_server)) for _ in range(MAX_SOCKETS)]
    refused = _polling_handshake(live_server)
    assert refused.status_code == 401
    assert "max_sockets=4" in refused.json()["message"]
    # The unnamed ones close on their own, and make room for new ones.
    eventually(lambda: not set(opened) & _sessions(live_server), what="the closes")
    _session_id(_polling_handshake(live_server))


def test_connections_beyond_the_cap_per_identity_are_refused_with_the_reason(
    live_server: LiveServer,
) -> None:
    with (
        connect_peer(live_server.url, token=ALICE),
        connect_peer(live_server.url, token=ALICE),
    ):
        with _websocket(live_server) as ws:
            ws.send(_connect_packet(ALICE))
            answer = _text(ws)
        assert answer.startswith("44")  # CONNECT_ERROR
        assert "max_sockets_per_identity=2" in json.loads(answer[2:])["message"]
        with connect_peer(live_server.url, token=BOB) as bob:
            assert bob.sio.connected  # another identity is not held up
    # Once one of alice's closes, she may connect again.
    with connect_peer(live_server.url, token=ALICE) as again:
        assert again.sio.connected


GARBAGE = ["4x", "42[", "42{}", '4{"a', "47", "44{}"]


def test_bad_packets_are_one_warning_line_each(
    live_server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with _websocket(live_server) as ws:
        ws.send(_connect_packet(ALICE))
        assert _text(ws).startswith("40")
        for packet in GARBAGE:
            ws.send(packet)
        ws.send("x")  # not even Engine.IO: the server drops the connection
        _closed_within(ws, seconds=10)
    sid = _session_id(_polling_handshake(live_server))
    posted = httpx.post(
        f"{live_server.url}/socket.io/?EIO=4&transport=polling&sid={sid}",
        content="x",
        timeout=10,
    )
    assert posted.status_code == 200

    def complaints() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "bad " in r.getMessage()]

    eventually(
        lambda: len(complaints()) == len(GARBAGE) + 2, what="a line per bad packet"
    )
    for record in complaints():
        assert record.levelno == logging.WARNING
        assert record.exc_info is None
        assert "\n" not in record.getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
