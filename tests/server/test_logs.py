"""Logs: tokens never reach a handler, a client's garbage is one line, text or JSON
lines, one line per worker event and none per idle claim."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import socketio

from joblib_server.logs import (
    REDACTED,
    ClientGarbage,
    JsonFormatter,
    RedactSecrets,
    TextFormatter,
    protect,
    redact,
)
from tests.support.command import COMMAND, Served, command_env, serve
from tests.support.tokens import ALICE, TOKENS_JSON
from tests.support.waiting import eventually


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("< authorization: Bearer s3cr3t", f"< authorization: {REDACTED}"),
        ("Authorization=Bearer s3cr3t, next", f"Authorization={REDACTED}, next"),
        ('< TEXT \'40{"token":"s3cr3t"}\'', f'< TEXT \'40{{"token":"{REDACTED}"}}\''),
        ("auth {'token': 's3cr3t'}", f"auth {{'token': '{REDACTED}'}}"),
        ("nothing to hide here", "nothing to hide here"),
    ],
)
def test_redact_hides_tokens_and_nothing_else(line: str, expected: str) -> None:
    assert redact(line) == expected


def _record(
    msg: str, *args: object, exc: BaseException | None = None
) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord(
        "engineio", logging.ERROR, __file__, 1, msg, args, exc_info
    )


def test_a_record_with_a_token_in_its_arguments_is_rewritten() -> None:
    record = _record(
        "%s: Received packet %s data %s", "sid", "MESSAGE", '0{"token":"x"}'
    )
    assert RedactSecrets().filter(record)
    assert 'x"' not in record.getMessage()
    assert REDACTED in record.getMessage()


def test_an_undecodable_payload_is_one_warning_line() -> None:
    try:
        int("x")
    except ValueError as exc:
        record = _record("post request handler error", exc=exc)
    assert ClientGarbage().filter(record)
    assert record.levelno == logging.WARNING
    assert record.exc_info is None
    assert record.getMessage() == (
        "bad Engine.IO payload from a client: "
        "invalid literal for int() with base 10: 'x'"
    )


def test_engineios_first_complaint_of_a_kind_is_a_warning() -> None:
    record = _record(
        "Invalid session abc (further occurrences of this error will be logged "
        "with level INFO)"
    )
    assert ClientGarbage().filter(record)
    assert record.levelno == logging.WARNING


def test_the_servers_own_errors_keep_their_level_and_traceback() -> None:
    try:
        raise RuntimeError("a bug")
    except RuntimeError as exc:
        record = _record("message async handler error", exc=exc)
    assert ClientGarbage().filter(record)
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None


def test_protect_adds_each_filter_once() -> None:
    logger = logging.getLogger("joblib_test.protected")
    protect(protect(logger))
    kinds = sorted(type(f).__name__ for f in logger.filters)
    assert kinds == ["ClientGarbage", "RedactSecrets"]


def _logged(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "joblib_server.realtime", logging.INFO, __file__, 1, msg, args, None
    )
    record.__dict__.update(extra)
    return record


def test_a_json_line_holds_the_record_and_its_extras() -> None:
    record = _logged(
        "worker %s joined", "w-1", worker_id="w-1", identity="alice", count=3
    )
    line = json.loads(JsonFormatter().format(record))
    assert line == {
        "time": line["time"],
        "level": "INFO",
        "logger": "joblib_server.realtime",
        "message": "worker w-1 joined",
        "worker_id": "w-1",
        "identity": "alice",
        "count": 3,
    }
    assert line["time"].endswith("+00:00")


def test_both_formats_redact_tokens_in_messages_and_tracebacks() -> None:
    try:
        raise RuntimeError("Authorization: Bearer s3cr3t")
    except RuntimeError as exc:
        record = _logged("auth {'token': 's3cr3t'}", reason='{"token":"s3cr3t"}')
        record.exc_info = (type(exc), exc, exc.__traceback__)
    for formatter in (JsonFormatter(), TextFormatter()):
        written = formatter.format(record)
        assert "s3cr3t" not in written
        assert REDACTED in written
    line = json.loads(JsonFormatter().format(record))
    assert "RuntimeError" in line["exception"]


def _worker_joins_and_leaves(served: Served, token: str) -> str:
    """A worker registers a job, joins its room over a socket and disconnects."""
    with served.client(token) as client:
        job = client.put(
            "/rooms/room1/jobs", json={"category": "modifiers", "name": "Rotate"}
        ).json()
    sio = socketio.Client(reconnection=False)
    sio.connect(served.url, auth={"token": token}, transports=["websocket"])
    joined = sio.call(
        "join_job_room", {"job_name": job["full_name"], "worker_id": job["worker_id"]}
    )
    assert joined["ok"] is True
    sio.disconnect()
    return str(job["worker_id"])


def test_json_logs_tell_a_workers_story(database_url: str, tmp_path: Path) -> None:
    env = command_env(
        JOBLIB_DATABASE_URL=database_url,
        JOBLIB_TOKENS=TOKENS_JSON,
        JOBLIB_LOG_FORMAT="json",
    )
    with serve([COMMAND], env, tmp_path) as served:
        worker_id = _worker_joins_and_leaves(served, ALICE)

        def told(event: str) -> list[dict[str, Any]]:
            return [
                line
                for line in served.json_lines()
                if line.get("event") == event and line.get("worker_id") == worker_id
            ]

        eventually(lambda: told("cleaned_up"), what="the cleanup line")
    lines = served.json_lines()  # every line is JSON, uvicorn's too
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert any(line["logger"].startswith("uvicorn") for line in lines)
    [connected] = [line for line in lines if line.get("event") == "connected"]
    assert connected["identity"] == "alice"
    [joined] = told("joined")
    assert (joined["identity"], joined["job"]) == ("alice", "room1:modifiers:Rotate")
    [disconnected] = told("disconnected")
    assert disconnected["identity"] == "alice"
    assert disconnected["reason"]  # python-socketio's, e.g. "client disconnect"
    [cleaned] = told("cleaned_up")
    assert cleaned["identity"] == "alice"
    assert cleaned["reason"] == "worker_disconnected"
    assert all(line["level"] == "INFO" for line in (joined, disconnected, cleaned))
    assert ALICE not in served.log.read_text()


def _claims_idly(served: Served, token: str) -> None:
    with served.client(token) as client:
        job = client.put(
            "/rooms/room1/jobs", json={"category": "modifiers", "name": "Idle"}
        ).json()
        body = {"worker_id": job["worker_id"]}
        for _ in range(5):
            assert client.post("/tasks/claim", json=body).json() == {"task": None}
        held = client.post("/tasks/claim", json=body, headers={"Prefer": "wait=0.2"})
        assert held.json() == {"task": None}
        assert client.patch(f"/workers/{job['worker_id']}").status_code == 200
    # A line the server writes after the claims: once it is there, so would be
    # any line about them.
    sio = socketio.Client(reconnection=False)
    sio.connect(served.url, auth={"token": token}, transports=["websocket"])
    sio.disconnect()
    eventually(
        lambda: any("disconnected" in line for line in served.lines()),
        what="the socket's lines",
    )


def test_idle_claims_write_no_log_lines(tmp_path: Path) -> None:
    env = command_env(
        JOBLIB_DATABASE_URL=f"sqlite:///{tmp_path / 'joblib.db'}",
        JOBLIB_TOKENS=TOKENS_JSON,
    )
    with serve([COMMAND], env, tmp_path) as served:  # at the default level, info
        _claims_idly(served, ALICE)
        text = served.log.read_text()
    assert "/tasks/claim" not in text
    assert "/workers" not in text  # no access log at all: requests are DEBUG


def test_requests_are_logged_at_debug(tmp_path: Path) -> None:
    env = command_env(
        JOBLIB_DATABASE_URL=f"sqlite:///{tmp_path / 'joblib.db'}",
        JOBLIB_TOKENS=TOKENS_JSON,
    )
    extra = ["--log-level", "debug", "--log-format", "json"]
    with serve([COMMAND], env, tmp_path, extra) as served:
        _claims_idly(served, ALICE)
        requests = [
            line
            for line in served.json_lines()
            if line["logger"] == "uvicorn.access" and "/tasks/claim" in line["message"]
        ]
    assert len(requests) == 6
    assert {line["level"] for line in requests} == {"DEBUG"}
