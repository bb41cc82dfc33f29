"""Real Socket.IO and HTTP peers for end-to-end tests: observers, workers, servers."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import socketio

WORKER_SCRIPT = Path(__file__).with_name("socket_worker.py")

Event = tuple[str, dict[str, Any]]


@dataclass
class Peer:
    """A connected python-socketio client that records every event it receives."""

    sio: socketio.Client
    events: list[Event] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

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
    for name in ("task_available", "task_status_event", "jobs_invalidate"):
        sio.on(name, lambda data, name=name: peer.record(name, data))
    headers = {"Authorization": f"Bearer {header_token}"} if header_token else {}
    sio.connect(
        url,
        auth={"token": token} if token else None,
        headers=headers,
        transports=["websocket"],
        wait_timeout=10,
    )
    try:
        for room in rooms:
            answer = peer.call("join_room", {"room_id": room})
            assert answer == {"ok": True}, answer
        yield peer
    finally:
        sio.disconnect()


@dataclass
class WorkerProcess:
    """A worker in its own process (see socket_worker.py), read line by line."""

    process: subprocess.Popen[str]

    def read(self, timeout: float = 20) -> dict[str, Any]:
        """The next JSON line the worker printed."""
        return dict(json.loads(self.read_line(timeout)))

    def read_line(self, timeout: float = 20) -> str:
        """The next line the process printed."""
        result: list[str] = []
        reader = threading.Thread(
            target=lambda: result.append(self.process.stdout.readline()),  # type: ignore[union-attr]
            daemon=True,
        )
        reader.start()
        reader.join(timeout)
        if not result or not result[0]:
            raise AssertionError(
                f"the process said nothing; exit code {self.process.poll()}"
            )
        return result[0]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        for stream in (self.process.stdout, self.process.stdin):
            if stream is not None:
                stream.close()


@contextmanager
def python_process(
    args: list[str], env: dict[str, str] | None = None, *, stdin: bool = False
) -> Iterator[WorkerProcess]:
    """Run a Python script in its own process, reading what it prints."""
    import os

    process = subprocess.Popen(
        [sys.executable, *args],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        text=True,
    )
    worker = WorkerProcess(process)
    try:
        yield worker
    finally:
        worker.stop()


def worker_process(
    url: str, token: str, room: str, name: str
) -> AbstractContextManager[WorkerProcess]:
    """Start socket_worker.py: it registers `room:modifiers:name`, claims one task."""
    return python_process([str(WORKER_SCRIPT), url, token, room, name], stdin=True)


def rest(api: str, token: str) -> httpx.Client:
    """A REST client for the live server's `/v1/joblib` API."""
    return httpx.Client(
        base_url=api, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


@contextmanager
def server_process(
    port: int, env: dict[str, str], cwd: Path | None = None
) -> Iterator[str]:
    """Run `joblib-server serve` in a process; yield its base URL once it answers."""
    import os

    process = subprocess.Popen(
        [sys.executable, "-m", "joblib_server.cli", "serve", "--port", str(port),
         "--log-level", "warning"],
        env={**os.environ, **env},
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise AssertionError(f"server exited: {process.stderr.read()}")  # type: ignore[union-attr]
            try:
                httpx.get(f"{url}/v1/joblib/workers", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        stop_process(process)
        if process.stderr is not None:
            process.stderr.close()


def stop_process(process: subprocess.Popen[Any], grace: float = 15) -> None:
    """Ask a process to stop (SIGTERM); kill it if it is still there after `grace`."""
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
