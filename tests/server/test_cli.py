"""The `joblib-server` command: create tokens, and serve in a real subprocess."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio

from joblib_server.cli import default_tokens_file, main
from tests.support.processes import stop_process
from tests.support.servers import free_port
from tests.support.tokens import ALICE, TOKENS_JSON

START_LINE = "joblib-server on http://"
# The installed command of the environment running the tests, found without PATH.
COMMAND = str(Path(sys.executable).parent / "joblib-server")


@dataclass
class Served:
    """A `joblib-server serve` subprocess that answers HTTP."""

    api: str
    log: Path

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.api, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )

    def start_lines(self) -> list[str]:
        return [
            line for line in self.log.read_text().splitlines() if START_LINE in line
        ]


def _env(**values: str) -> dict[str, str]:
    """The test's environment without its JOBLIB_ settings, plus `values`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBLIB_")}
    env.update(values)
    return env


@contextmanager
def serve(
    command: list[str], env: dict[str, str], cwd: Path, extra: Sequence[str] = ()
) -> Iterator[Served]:
    """Run `command serve` on a free port until it answers; stop it afterwards."""
    port = free_port()
    log = cwd / "serve.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [*command, "serve", "--port", str(port), *extra],
            env=env,
            cwd=cwd,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    api = f"http://127.0.0.1:{port}/v1/joblib"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            try:
                httpx.get(f"{api}/workers", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        yield Served(api, log)
    finally:
        stop_process(process)


def _create_token(tokens_file: Path, *args: str) -> str:
    done = subprocess.run(
        [COMMAND, "token", *args, "--tokens-file", str(tokens_file)],
        env=_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert str(tokens_file) in done.stderr
    return done.stdout.strip()


def test_token_command_makes_a_token_that_works(
    database_url: str, tmp_path: Path
) -> None:
    tokens_file = tmp_path / "tokens.json"
    token = _create_token(tokens_file, "--name", "x", "--admin")
    plain = _create_token(tokens_file, "--name", "y")
    assert stat.S_IMODE(tokens_file.stat().st_mode) == 0o600
    stored = json.loads(tokens_file.read_text())
    assert stored == {
        token: {"id": "x", "admin": True},
        plain: {"id": "y", "admin": False},
    }

    env = _env(JOBLIB_DATABASE_URL=database_url)
    extra = ["--tokens-file", str(tokens_file)]
    with serve([COMMAND], env, tmp_path, extra) as served:
        body = {"category": "modifiers", "name": "Rotate"}
        with served.client(token) as admin, served.client(plain) as other:
            assert admin.put("/rooms/@global/jobs", json=body).status_code == 201
            assert other.put("/rooms/@global/jobs", json=body).status_code == 403
            assert other.get("/rooms/room1/jobs").json()["total"] == 1
        with served.client("not-a-token") as stranger:
            assert stranger.get("/workers").status_code == 401
        assert len(served.start_lines()) == 1


def test_serve_takes_tokens_from_the_environment(
    database_url: str, tmp_path: Path
) -> None:
    env = _env(JOBLIB_DATABASE_URL=database_url, JOBLIB_TOKENS=TOKENS_JSON)
    with serve([sys.executable, "-m", "joblib_server.cli"], env, tmp_path) as served:
        with served.client(ALICE) as alice:
            answer = alice.post("/workers")
            assert answer.status_code == 201
            assert alice.get("/workers").json()["total"] == 1
        [line] = served.start_lines()
        assert f"{served.api} " in line
        assert "JOBLIB_TOKENS" in line
    assert not (tmp_path / "joblib-tokens.json").exists()


def test_serve_creates_an_admin_token_when_there_is_none(
    database_url: str, tmp_path: Path
) -> None:
    env = _env(JOBLIB_DATABASE_URL=database_url)
    with serve([COMMAND], env, tmp_path) as served:
        # By the SQLite file, or in the working directory for PostgreSQL: both here.
        tokens_file = tmp_path / "joblib-tokens.json"
        [(token, identity)] = json.loads(tokens_file.read_text()).items()
        assert identity == {"id": "admin", "admin": True}
        with served.client(token) as admin:
            body = {"category": "modifiers", "name": "Rotate"}
            assert admin.put("/rooms/@internal/jobs", json=body).status_code == 201
        assert "created an admin token" in served.log.read_text()
        assert len(served.start_lines()) == 1


def test_default_tokens_file_sits_by_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    database = tmp_path / "data" / "joblib.db"
    assert default_tokens_file(f"sqlite:///{database}") == (
        database.parent / "joblib-tokens.json"
    )
    here = tmp_path / "joblib-tokens.json"
    assert default_tokens_file("sqlite:///:memory:") == here
    assert default_tokens_file("postgresql://db.example/joblib") == here


def test_cli_without_a_command_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "usage: joblib-server" in capsys.readouterr().err


def test_tokens_made_at_once_are_all_kept(tmp_path: Path) -> None:
    tokens_file = tmp_path / "tokens.json"
    names = [f"worker-{i}" for i in range(8)]
    processes = [
        subprocess.Popen(
            [COMMAND, "token", "--name", name, "--tokens-file", str(tokens_file)],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in names
    ]
    made = []
    for process in processes:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        made.append(out.strip())
    stored = json.loads(tokens_file.read_text())
    assert sorted(stored) == sorted(made)
    assert sorted(entry["id"] for entry in stored.values()) == names
    assert stat.S_IMODE(tokens_file.stat().st_mode) == 0o600
    # No temporary file is left behind; the lock file stays, and holds nothing.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "tokens.json",
        "tokens.json.lock",
    ]


def test_the_tokens_file_is_0600_whatever_was_there(tmp_path: Path) -> None:
    tokens_file = tmp_path / "tokens.json"
    tokens_file.write_text("{}")
    tokens_file.chmod(0o644)
    for leftover in (tmp_path / "tokens.tmp", tmp_path / ".tokens.json.tmp"):
        leftover.write_text("from a crash")  # what the old way of writing reused
        leftover.chmod(0o644)
    _create_token(tokens_file, "--name", "x")
    assert stat.S_IMODE(tokens_file.stat().st_mode) == 0o600


def test_debug_logs_never_show_a_token(database_url: str, tmp_path: Path) -> None:
    tokens_file = tmp_path / "tokens.json"
    token = _create_token(tokens_file, "--name", "x")
    env = _env(JOBLIB_DATABASE_URL=database_url)
    extra = ["--tokens-file", str(tokens_file), "--log-level", "debug"]
    with serve([COMMAND], env, tmp_path, extra) as served:
        url = served.api.removesuffix("/v1/joblib")
        ways: list[dict[str, Any]] = [
            {"auth": {"token": token}},
            {"headers": {"Authorization": f"Bearer {token}"}},
        ]
        for way in ways:
            for transport in ("websocket", "polling"):
                sio = socketio.Client(reconnection=False)
                sio.connect(url, transports=[transport], wait_timeout=10, **way)
                assert sio.call("join_room", {"room_id": "room1"}, timeout=10) == {
                    "ok": True
                }
                sio.disconnect()
        with served.client(token) as client:
            assert client.get("/workers").status_code == 200
    log = served.log.read_text()
    assert token not in log
    assert "[redacted]" in log  # the frames were logged, without the secret


def _connect(served: Served) -> socket.socket:
    host, port = served.api.removeprefix("http://").split("/")[0].split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def _until_closed(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_serve_closes_slow_and_idle_connections(
    database_url: str, tmp_path: Path
) -> None:
    env = _env(
        JOBLIB_DATABASE_URL=database_url,
        JOBLIB_TOKENS=TOKENS_JSON,
        JOBLIB_HEADER_TIMEOUT_SECONDS="1",
        JOBLIB_KEEP_ALIVE_SECONDS="1",
    )
    with serve([COMMAND], env, tmp_path) as served:
        with _connect(served) as slow:
            slow.sendall(b"GET /v1/joblib/workers HTTP/1.1\r\nHost: x\r\n")
            assert _until_closed(slow) == b""  # headers not done within 1 s
        with _connect(served) as idle:
            request = (
                f"GET /v1/joblib/workers HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {ALICE}\r\n\r\n"
            )
            idle.sendall(request.encode())
            # The answer, then nothing more: closed after 1 s of keep-alive.
            assert _until_closed(idle).startswith(b"HTTP/1.1 200 OK\r\n")
