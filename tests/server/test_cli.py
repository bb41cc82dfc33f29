"""The `joblib-server` command: tokens (made, listed, revoked, followed by a running
server), help and version, and serve in a real subprocess."""

from __future__ import annotations

import json
import socket
import stat
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import socketio

from joblib_server.cli import default_tokens_file, main
from joblib_server.settings import Settings, StandaloneSettings
from tests.support.command import (
    COMMAND,
    Served,
    command_env,
    run_command,
    serve,
)
from tests.support.tokens import ALICE, TOKENS_JSON
from tests.support.waiting import eventually


def _create_token(tokens_file: Path, *args: str) -> str:
    done = subprocess.run(
        [COMMAND, "token", *args, "--tokens-file", str(tokens_file)],
        env=command_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert str(tokens_file) in done.stderr
    return done.stdout.strip()


@pytest.mark.slow  # over ~5 s
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

    env = command_env(JOBLIB_DATABASE_URL=database_url)
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
    env = command_env(JOBLIB_DATABASE_URL=database_url, JOBLIB_TOKENS=TOKENS_JSON)
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
    env = command_env(JOBLIB_DATABASE_URL=database_url)
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
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("joblib-server: error: ")
    assert "{serve,token,db}" in line
    assert "joblib-server --help" in line


@pytest.mark.slow  # over ~5 s
def test_tokens_made_at_once_are_all_kept(tmp_path: Path) -> None:
    tokens_file = tmp_path / "tokens.json"
    names = [f"worker-{i}" for i in range(8)]
    processes = [
        subprocess.Popen(
            [COMMAND, "token", "--name", name, "--tokens-file", str(tokens_file)],
            env=command_env(),
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


@pytest.mark.slow  # over ~5 s
def test_debug_logs_never_show_a_token(database_url: str, tmp_path: Path) -> None:
    tokens_file = tmp_path / "tokens.json"
    token = _create_token(tokens_file, "--name", "x")
    env = command_env(JOBLIB_DATABASE_URL=database_url)
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
    env = command_env(
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


def test_version_prints_the_package_version() -> None:
    done = run_command("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"joblib-server {version('joblib-server')}"


def test_serve_help_lists_every_variable_with_its_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])
    assert exit_info.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    fields = {
        **{k: v for k, v in StandaloneSettings.model_fields.items() if k != "joblib"},
        **Settings.model_fields,
    }
    for name, field in fields.items():
        entry = f"  JOBLIB_{name.upper()} (default: "
        [at] = [i for i, line in enumerate(lines) if line.startswith(entry)]
        meaning = lines[at + 1].strip()
        assert meaning, f"JOBLIB_{name.upper()} has no meaning in the help"
        assert meaning in " ".join((field.description or "").split()), name
    text = "\n".join(lines)
    assert "JOBLIB_WORKER_TIMEOUT_SECONDS (default: 60)" in text
    assert 'JOBLIB_ALLOWED_CATEGORIES (default: ["modifiers",' in text
    assert "JOBLIB_LOG_FORMAT (default: text)" in text
    assert "JOBLIB_REDIS_URL (default: none)" in text
    # The top-level help points there.
    assert "serve --help" in run_command("--help").stdout


def _token_list(tokens_file: Path) -> list[dict[str, Any]]:
    done = run_command("token", "list", "--json", "--tokens-file", str(tokens_file))
    assert done.returncode == 0, done.stderr
    listed: list[dict[str, Any]] = json.loads(done.stdout)
    return listed


@pytest.mark.slow  # over ~5 s
def test_token_list_masks_tokens(tmp_path: Path) -> None:
    tokens_file = tmp_path / "tokens.json"
    admin = _create_token(tokens_file, "--name", "root", "--admin")
    lab = _create_token(tokens_file, "--name", "alice", "--room", "lab-*")
    assert _token_list(tokens_file) == [
        {"token": admin[:6] + "…", "identity": "root", "admin": True, "rooms": None},
        {"token": lab[:6] + "…", "identity": "alice", "admin": False,
         "rooms": ["lab-*"]},
    ]  # fmt: skip
    table = run_command("token", "list", "--tokens-file", str(tokens_file))
    assert table.returncode == 0
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["TOKEN", "IDENTITY", "ADMIN", "ROOMS"]
    assert [row.split() for row in rows] == [
        [admin[:6] + "…", "root", "yes", "all"],
        [lab[:6] + "…", "alice", "no", "lab-*"],
    ]
    assert admin not in table.stdout + table.stderr
    assert lab not in table.stdout + table.stderr


@pytest.mark.slow  # over ~5 s
def test_token_revoke_by_token_prefix_or_identity(tmp_path: Path) -> None:
    tokens_file = tmp_path / "tokens.json"
    where = ["--tokens-file", str(tokens_file)]
    whole = _create_token(tokens_file, "--name", "a")
    prefixed = _create_token(tokens_file, "--name", "b")
    _create_token(tokens_file, "--name", "c")
    _create_token(tokens_file, "--name", "c")
    kept = _create_token(tokens_file, "--name", "d")

    done = run_command("token", "revoke", whole, *where)
    assert (done.returncode, done.stdout) == (0, f"revoked {whole[:6]}… of 'a'\n")
    done = run_command("token", "revoke", prefixed[:6], *where)
    assert (done.returncode, done.stdout) == (0, f"revoked {prefixed[:6]}… of 'b'\n")
    done = run_command("token", "revoke", "c", *where)
    assert done.returncode == 0
    assert len(done.stdout.splitlines()) == 2
    assert [entry["identity"] for entry in _token_list(tokens_file)] == ["d"]
    assert list(json.loads(tokens_file.read_text())) == [kept]
    assert stat.S_IMODE(tokens_file.stat().st_mode) == 0o600

    nothing = run_command("token", "revoke", "nobody", *where)
    assert nothing.returncode == 1
    assert nothing.stdout == ""
    [line] = nothing.stderr.splitlines()
    assert "no token or identity matches 'nobody'" in line
    assert list(json.loads(tokens_file.read_text())) == [kept]


def test_token_revoke_refuses_an_ambiguous_prefix(tmp_path: Path) -> None:
    tokens_file = tmp_path / "tokens.json"
    tokens_file.write_text(
        json.dumps(
            {"abcd-one": {"id": "x"}, "abcd-two": {"id": "y"}, "zz": {"id": "z"}}
        )
    )
    before = tokens_file.read_text()
    done = run_command("token", "revoke", "abcd", "--tokens-file", str(tokens_file))
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert "start of several tokens" in line
    assert tokens_file.read_text() == before
    # Shorter than 4 characters a prefix is no prefix: nothing matches.
    done = run_command("token", "revoke", "zz-", "--tokens-file", str(tokens_file))
    assert done.returncode == 1
    assert tokens_file.read_text() == before


def _socket_refused(url: str, token: str) -> bool:
    sio = socketio.Client(reconnection=False)
    try:
        sio.connect(url, auth={"token": token}, transports=["websocket"],
                    wait_timeout=5)  # fmt: skip
    except socketio.exceptions.ConnectionError:
        return True
    sio.disconnect()
    return False


@pytest.mark.slow  # over ~5 s
def test_a_running_server_follows_the_tokens_file(tmp_path: Path) -> None:
    # SQLite only: the tokens file is the same whatever the database.
    tokens_file = tmp_path / "tokens.json"
    admin = _create_token(tokens_file, "--name", "root", "--admin")
    env = command_env(JOBLIB_DATABASE_URL=f"sqlite:///{tmp_path / 'joblib.db'}")
    with serve([COMMAND], env, tmp_path, ["--tokens-file", str(tokens_file)]) as served:
        # Made while the server runs: it works on its very first request.
        bob = _create_token(tokens_file, "--name", "bob", "--room", "lab-*")
        with served.client(bob) as client:
            assert client.get("/workers").status_code == 200
            # Its rooms came with it.
            assert client.get("/rooms/lab-1/tasks").status_code == 200
            assert client.get("/rooms/other/tasks").status_code == 403
        assert not _socket_refused(served.url, bob)

        done = run_command("token", "revoke", "bob", "--tokens-file", str(tokens_file))
        assert done.returncode == 0, done.stderr
        with served.client(bob) as client:
            eventually(
                lambda: client.get("/workers").status_code == 401,
                timeout=2.5,
                interval=0.05,
                what="the revoked token refused over REST",
            )
        assert _socket_refused(served.url, bob)
        with served.client(admin) as client:
            assert client.get("/workers").status_code == 200
        assert len(served.start_lines()) == 1  # never restarted


def test_serve_reports_a_tokens_file_broken_while_it_runs(tmp_path: Path) -> None:
    tokens_file = tmp_path / "tokens.json"
    admin = _create_token(tokens_file, "--name", "root", "--admin")
    env = command_env(JOBLIB_DATABASE_URL=f"sqlite:///{tmp_path / 'joblib.db'}")
    with serve([COMMAND], env, tmp_path, ["--tokens-file", str(tokens_file)]) as served:
        tokens_file.write_text("{not json")
        with served.client(admin) as client:
            # The tokens read before still count; the log says why.
            assert client.get("/workers").status_code == 200
            with served.client("unknown") as stranger:
                assert stranger.get("/workers").status_code == 401
            eventually(
                lambda: any("cannot be read" in line for line in served.lines()),
                what="the warning about the tokens file",
            )
            assert client.get("/workers").status_code == 200
