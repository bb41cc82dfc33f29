"""Slow-loris clients against a live server: headers and bodies that come too
slowly are cut off (uvicorn's httptools and h11 protocols both), what arrived in
time is served however long its answer takes."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from joblib_server import StandaloneSettings, TokenAuth, create_app
from tests.support.rest import rest
from tests.support.servers import LiveServer, make_settings, serve_in_thread
from tests.support.tokens import ALICE, BOB, TOKENS
from tests.support.waiting import eventually

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
PATIENCE = 15.0
"""How long a test waits for the server's move: far more than any deadline."""


@pytest.fixture(params=["httptools", "h11"])
def server(request: pytest.FixtureRequest, database_url: str) -> Iterator[LiveServer]:
    settings = make_settings(
        header_timeout_seconds=HEADER_TIMEOUT, body_timeout_seconds=BODY_TIMEOUT
    )
    standalone = StandaloneSettings(database_url=database_url, joblib=settings)
    app = create_app(standalone, TokenAuth(TOKENS))
    with serve_in_thread(app, http=request.param) as live:
        yield live


@pytest.fixture
def connection(server: LiveServer) -> Iterator[socket.socket]:
    """A raw TCP connection to the server."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=PATIENCE) as sock:
        yield sock


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def _request_head(method: str, path: str, *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: testserver", *headers, "", ""]
    return "\r\n".join(lines).encode()


def test_a_connection_that_sends_nothing_is_closed(
    connection: socket.socket,
) -> None:
    opened = time.monotonic()
    assert _read_until_closed(connection) == b""
    assert time.monotonic() - opened >= HEADER_TIMEOUT * 0.9


def test_headers_that_never_finish_close_the_connection(
    connection: socket.socket,
) -> None:
    connection.sendall(b"GET /v1/joblib/workers HTTP/1.1\r\nHost: testserver\r\n")
    assert _read_until_closed(connection) == b""


def test_a_rest_body_too_slow_is_a_408_problem(connection: socket.socket) -> None:
    head = _request_head(
        "POST",
        "/v1/joblib/rooms/room1/tasks/room1:modifiers:Rotate",
        f"Authorization: Bearer {ALICE}",
        "Content-Type: application/json",
        "Content-Length: 100",
    )
    connection.sendall(head + b'{"payload": ')  # and then nothing more
    answer = _read_until_closed(connection)
    status, _, rest_of_it = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 408 Request Timeout"
    headers, _, body = rest_of_it.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in headers.lower()
    assert b"connection: close" in headers.lower()
    problem = json.loads(body)
    assert problem["type"] == "/v1/problems/request-timeout"
    assert problem["status"] == 408


def test_a_long_polling_post_too_slow_is_cut(
    server: LiveServer, connection: socket.socket
) -> None:
    # Engine.IO reads its own bodies: the connection's body deadline covers it.
    opening = httpx.get(f"{server.url}/socket.io/?EIO=4&transport=polling").text
    sid = json.loads(opening[1:])["sid"]
    head = _request_head(
        "POST",
        f"/socket.io/?EIO=4&transport=polling&sid={sid}",
        "Content-Type: text/plain",
        "Content-Length: 100",
    )
    connection.sendall(head + b"40")
    assert _read_until_closed(connection) == b""


def test_an_answer_may_take_longer_than_the_deadlines(server: LiveServer) -> None:
    with rest(server.api, ALICE) as alice, rest(server.api, BOB) as bob:
        body = {"category": "modifiers", "name": "Rotate", "schema": {}}
        job = alice.put("/rooms/room1/jobs", json=body).json()
        task = bob.post(f"/rooms/room1/tasks/{job['full_name']}", json={}).json()
        started = time.monotonic()
        answer = bob.get(f"/tasks/{task['id']}", headers={"Prefer": "wait=3"})
        assert answer.status_code == 200
        assert answer.headers["preference-applied"] == "wait=3"
        assert time.monotonic() - started >= 3 * 0.9
        # The same keep-alive connection serves the next request as well.
        assert bob.get(f"/tasks/{task['id']}").status_code == 200


def test_a_client_that_leaves_mid_body_is_no_error(
    connection: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="joblib_server")
    head = _request_head(
        "PUT",
        "/v1/joblib/rooms/room1/jobs",
        f"Authorization: Bearer {ALICE}",
        "Content-Length: 100",
    )
    connection.sendall(head + b'{"category": ')
    connection.close()

    def gone() -> bool:
        return any("the client went away" in r.getMessage() for r in caplog.records)

    eventually(gone, what="the server to notice")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
