"""Programs in their own processes: scripts that print JSON lines, and servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.waiting import eventually

WORKER_SCRIPT = Path(__file__).with_name("socket_worker.py")


@dataclass
class WorkerProcess:
    """A Python script in its own process (see socket_worker.py), read line by line."""

    process: subprocess.Popen[str]

    def read(self, timeout: float = 20) -> dict[str, Any]:
        """The next JSON line the process printed."""
        return dict(json.loads(self.read_line(timeout)))

    def read_line(self, timeout: float = 20) -> str:
        """The next line the process printed."""
        stdout = self.process.stdout
        assert stdout is not None, "the process's output is not piped"
        result: list[str] = []
        reader = threading.Thread(
            target=lambda: result.append(stdout.readline()), daemon=True
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


def stop_process(process: subprocess.Popen[Any], grace: float = 15) -> None:
    """Ask a process to stop (SIGTERM); kill it if it is still there after `grace`."""
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_until_answers(
    url: str,
    *,
    process: subprocess.Popen[Any] | None = None,
    timeout: float = 30,
    request_timeout: float = 1,
    what: str | None = None,
) -> httpx.Response:
    """GET `url` until something answers (any status); return that answer.

    With `process`, fail at once when it exits, with what it wrote to a piped stderr.
    """

    def answer() -> httpx.Response | None:
        if process is not None and process.poll() is not None:
            output = process.stderr.read() if process.stderr is not None else ""
            raise AssertionError(f"the server exited ({process.returncode}): {output}")
        try:
            return httpx.get(url, timeout=request_timeout)
        except httpx.TransportError:
            return None

    answered = eventually(
        answer, timeout=timeout, interval=0.1, what=what or f"{url} to answer"
    )
    assert answered is not None
    return answered


@contextmanager
def server_process(
    port: int, env: dict[str, str], cwd: Path | None = None
) -> Iterator[str]:
    """Run `joblib-server serve` in a process; yield its base URL once it answers."""
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
        wait_until_answers(f"{url}/v1/joblib/workers", process=process)
        yield url
    finally:
        stop_process(process)
        if process.stderr is not None:
            process.stderr.close()
