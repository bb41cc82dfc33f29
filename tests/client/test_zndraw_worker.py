"""examples/zndraw_style_worker.py, a zndraw-joblib worker script, in its own process.

It runs against a live server with the real `zndraw_socketio` wrapper as `tsio`:
tasks complete, fail and are cancelled the zndraw-joblib way; SIGTERM lets the task
in hand finish and removes the worker; a worker started before its server
registers once the server answers; one whose server stays away exits.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from joblib_client import JobManager
from joblib_protocol import TaskStatus
from joblib_server import Settings, StandaloneSettings, TokenAuth, create_app
from tests.client.conftest import in_thread
from tests.client.extensions import Rotate
from tests.support import eventually
from tests.support.servers import LiveServer, free_port, serve_in_thread
from tests.support.tokens import ADMIN, ALICE, TOKENS, bearer

SCRIPT = Path(__file__).parents[2] / "examples" / "zndraw_style_worker.py"
JOBS = [
    "@global:modifiers:Scale",
    "@global:analysis:Broken",
    "@global:analysis:Refuse",
    "@global:selections:Abandon",
    "@global:analysis:Nap",
]


class Script:
    """The worker script's process; its output (stdout and stderr) line by line."""

    def __init__(self, url: str, **env: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(SCRIPT)],
            env={**os.environ, "JOBLIB_URL": url, "JOBLIB_TOKEN": ADMIN, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, wanted: Callable[[str], bool], timeout: float = 20) -> str:
        """The next line `wanted` accepts; fail with the output after `timeout` s."""
        try:
            return eventually(lambda: self._next(wanted), timeout=timeout)
        except AssertionError as exc:
            tail = "\n".join(self.seen[-30:])
            raise AssertionError(f"{exc}; the script said:\n{tail}") from None

    def _next(self, wanted: Callable[[str], bool]) -> str:
        try:
            line = self.lines.get(timeout=0.05)
        except queue.Empty:
            return ""
        self.seen.append(line)
        return line if wanted(line) else ""

    def json_line(self, key: str, timeout: float = 20) -> dict[str, Any]:
        """The next JSON line the script printed that has `key`."""
        line = self.expect(lambda text: text.startswith("{") and key in text, timeout)
        return dict(json.loads(line))

    def exit_code(self, timeout: float = 20) -> int:
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        self._reader.join(10)  # it reads to the end of the output, then stops
        assert self.process.stdout is not None
        self.process.stdout.close()


@contextmanager
def script(url: str, **env: str) -> Iterator[Script]:
    worker = Script(url, **env)
    try:
        yield worker
    finally:
        worker.stop()


@contextmanager
def server_on(port: int, database_url: str, settings: Settings) -> Iterator[LiveServer]:
    """The standalone server (REST and Socket.IO) on `port`."""
    standalone = StandaloneSettings(
        database_url=database_url,
        socketio_ping_interval_seconds=1,
        socketio_ping_timeout_seconds=1,
        joblib=settings,
    )
    with serve_in_thread(create_app(standalone, TokenAuth(TOKENS)), port) as server:
        yield server


def submit(server: LiveServer, job: str, payload: dict[str, Any]) -> str:
    answer = httpx.post(
        f"{server.api}/rooms/room_1/tasks/{job}",
        json={"payload": payload},
        headers=bearer(ALICE),
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def workers(server: LiveServer) -> list[str]:
    answer = httpx.get(f"{server.api}/workers", headers=bearer(ADMIN))
    return [worker["id"] for worker in answer.json()["items"]]


def status_of(server: LiveServer, task_id: str) -> str:
    answer = httpx.get(f"{server.api}/tasks/{task_id}", headers=bearer(ALICE))
    return str(answer.json()["status"])


@pytest.fixture
def reader(live_server: LiveServer) -> Iterator[JobManager]:
    with JobManager.connect(live_server.url, token=ALICE, socket=False) as manager:
        yield manager


def test_a_zndraw_style_worker_serves_and_leaves_on_sigterm(
    live_server: LiveServer, reader: JobManager
) -> None:
    with script(live_server.url) as worker:
        serving = worker.json_line("worker_id")
        assert serving["jobs"] == JOBS

        scaled = submit(live_server, JOBS[0], {"factor": 3})
        broken = submit(live_server, JOBS[1], {})
        refused = submit(live_server, JOBS[2], {"reason": "no frames selected"})
        abandoned = submit(live_server, JOBS[3], {})

        # run(vis, **kwargs) got the registered run_kwargs and the handlers.
        assert reader.result(scaled, timeout=20) == {
            "room": "room_1",
            "scaled": 6.0,
            "handlers": ["@global:frames:frames"],
        }
        failed = reader.wait(broken, timeout=20)
        assert (failed.status, failed.error) == (
            TaskStatus.FAILED,
            "ValueError: no frames in room room_1",
        )
        refusal = reader.wait(refused, timeout=20)
        assert (refusal.status, refusal.error) == (
            TaskStatus.FAILED,
            "no frames selected",
        )
        assert reader.wait(abandoned, timeout=20).status == TaskStatus.CANCELLED
        # A provider read reaches the worker through the zndraw_socketio wrapper.
        frame = reader.read("@global:frames:frames", room="room_1", index=1, wait=10)
        assert frame.json() == "second"

        nap = submit(live_server, JOBS[4], {"seconds": 1.0})
        eventually(lambda: status_of(live_server, nap) == "running", timeout=20)
        worker.process.send_signal(signal.SIGTERM)

        assert worker.json_line("stopped") == {"stopped": True}
        assert worker.exit_code() == 0
    # The task in hand finished before the worker left, and the worker is gone.
    assert reader.result(nap, timeout=10) == {"slept": 1.0}
    assert serving["worker_id"] not in workers(live_server)


def test_a_worker_started_before_its_server_registers_once_it_answers(
    database_url: str, settings: Settings
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with script(url, JOBLIB_SOCKET="0") as worker:
        worker.expect(lambda line: "failed (try 1 of 5)" in line)
        with server_on(port, database_url, settings) as server:
            serving = worker.json_line("worker_id", timeout=30)
            assert serving["jobs"] == JOBS
            assert serving["worker_id"] in workers(server)

            with JobManager.connect(url, token=ALICE, socket=False) as reader:
                task_id = submit(server, JOBS[0], {"factor": 0.5})
                assert reader.result(task_id, timeout=20)["scaled"] == 1.0

            worker.process.send_signal(signal.SIGINT)
            assert worker.exit_code() == 0
            assert serving["worker_id"] not in workers(server)


def test_a_worker_whose_server_stays_away_exits(
    database_url: str, settings: Settings
) -> None:
    port = free_port()
    with server_on(port, database_url, settings) as server:
        worker = Script(server.url, JOBLIB_MAX_UNREACHABLE="1")
        try:
            worker.json_line("worker_id")
        except BaseException:
            worker.stop()
            raise
    try:
        worker.expect(lambda line: "unreachable for" in line and "stopping" in line)
        assert worker.json_line("stopped") == {"stopped": True}
        assert worker.exit_code() == 0
    finally:
        worker.stop()


def test_serve_without_execute_ends_when_heartbeats_find_no_server(
    database_url: str, settings: Settings
) -> None:
    """A worker serving only what it registered (no claim loop) also gives up."""
    port = free_port()
    with server_on(port, database_url, settings) as server:
        manager = JobManager.connect(
            server.url,
            token=ADMIN,
            socket=False,
            heartbeat_interval=0.1,
            max_unreachable_seconds=0.5,
        )
        manager.register(Rotate)
        thread, outcome = in_thread(manager.serve)
        manager.heartbeat()  # the server is there: serve() still blocks
        assert thread.is_alive()
    thread.join(15)

    assert outcome == [None]
    assert manager.worker_id is None  # it closed
