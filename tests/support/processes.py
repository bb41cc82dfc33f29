"""Programs in their own processes: scripts that print JSON lines, and servers."""

from __future__ import annotations

import json
import os
import signal
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

from tests.support.waiting import eventually

WORKER_SCRIPT = Path(__file__).with_name("socket_worker.py")
MANAGER_SCRIPT = Path(__file__).with_name("manager_worker.py")


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
        _serve_command(port),
        env={**os.environ, **env},
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(f"{url}/v1/joblib/workers", process=process)
        yield url
    finally:
        stop_process(process)
        if process.stderr is not None:
            process.stderr.close()


def server_env(database_url: str, **settings: object) -> dict[str, str]:
    """The environment of a `joblib-server serve` for the tests: the database, the
    test tokens, a 1 s Socket.IO ping, and `JOBLIB_<NAME>` for each setting."""
    from tests.support.tokens import TOKENS_JSON

    env = {
        "JOBLIB_DATABASE_URL": database_url,
        "JOBLIB_TOKENS": TOKENS_JSON,
        "JOBLIB_SOCKETIO_PING_INTERVAL_SECONDS": "1",
        "JOBLIB_SOCKETIO_PING_TIMEOUT_SECONDS": "1",
    }
    env.update({f"JOBLIB_{key.upper()}": str(value) for key, value in settings.items()})
    return env


def _serve_command(port: int, log_level: str = "warning") -> list[str]:
    return [sys.executable, "-m", "joblib_server.cli", "serve", "--port", str(port),
            "--log-level", log_level]  # fmt: skip


def _tail(log: Path, lines: int = 30) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


class ServerProcess:
    """`joblib-server serve` on one port, stopped and started again as a test says.

    Its output goes to `log` (appended across restarts), so a long run never
    blocks on a full pipe; failures quote the log's tail.
    """

    def __init__(
        self, port: int, env: dict[str, str], log: Path, log_level: str = "warning"
    ) -> None:
        self.port = port
        self.env = env
        self.log = log
        self.log_level = log_level
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        return f"{self.url}/v1/joblib"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the server and wait until it answers."""
        assert not self.running, "the server is already running"
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                _serve_command(self.port, self.log_level),
                env={**os.environ, **self.env},
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until_answers(f"{self.api}/workers", process=self.process)
        except AssertionError as exc:
            self.stop(signal.SIGKILL)
            raise AssertionError(f"{exc}\n{self.log_tail()}") from None

    def stop(self, how: signal.Signals = signal.SIGTERM, grace: float = 15) -> int:
        """Send `how` (SIGTERM: a clean shutdown) and wait; kill after `grace` s."""
        process = self.process
        assert process is not None, "the server was never started"
        if process.poll() is None:
            process.send_signal(how)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the server wrote."""
        return _tail(self.log, lines)


@contextmanager
def restartable_server(
    env: dict[str, str], log: Path, port: int | None = None, log_level: str = "warning"
) -> Iterator[ServerProcess]:
    """A started `ServerProcess` on `port` (default: a free one), stopped at the end."""
    from tests.support.servers import free_port

    server = ServerProcess(port or free_port(), env, log, log_level)
    server.start()
    try:
        yield server
    finally:
        if server.running:
            server.stop()


Line = dict[str, Any]


@dataclass
class ScriptProcess:
    """A script printing JSON lines, collected by a thread as they come.

    Unlike `WorkerProcess.read()`, a test waits for the line it needs while the
    others keep accumulating in `lines`, with no reader thread left behind.
    """

    process: subprocess.Popen[str]
    log: Path
    lines: list[Line] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            try:
                line = dict(json.loads(raw))
            except ValueError:
                continue
            with self.changed:
                self.lines.append(line)
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_for(
        self, match: Callable[[Line], bool], timeout: float = 20, what: str = "a line"
    ) -> Line:
        """The first line printed so far or from now on that matches."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for line in self.lines:
                    if match(line):
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (not self.alive and self._drained()):
                    raise AssertionError(
                        f"no {what} from process {self.pid} "
                        f"(exit code {self.process.poll()}); it printed "
                        f"{self.lines}\n{_tail(self.log)}"
                    )
                self.changed.wait(min(remaining, 0.5))

    def _drained(self) -> bool:
        stdout = self.process.stdout
        return stdout is None or stdout.closed or self.process.poll() is not None

    def event(self, name: str, timeout: float = 20, **fields: Any) -> Line:
        """The first `name` line whose fields include `fields` (compared as text)."""
        wanted = {key: str(value) for key, value in fields.items()}

        def match(line: Line) -> bool:
            return line.get("event") == name and all(
                str(line.get(key)) == value for key, value in wanted.items()
            )

        return self.wait_for(match, timeout, what=f"{name} {wanted}")

    def events(self, name: str) -> list[Line]:
        """Every `name` line printed so far."""
        with self.changed:
            return [line for line in self.lines if line.get("event") == name]

    def signal(self, how: signal.Signals) -> None:
        self.process.send_signal(how)

    def kill(self) -> None:
        """kill -9, and wait for the process to be gone."""
        if self.alive:
            self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        self.kill()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def log_tail(self, lines: int = 30) -> str:
        return _tail(self.log, lines)


def start_manager_worker(
    url: str,
    token: str,
    room: str,
    name: str,
    log: Path,
    *,
    socket_url: str | None = None,
    policy: dict[str, Any] | None = None,
    ledger: Path | None = None,
    heartbeat: float | None = None,
) -> ScriptProcess:
    """Start manager_worker.py (a `JobManager` worker); stop it when done with it."""
    args = [str(MANAGER_SCRIPT), url, token, room, name]
    if socket_url is not None:
        args += ["--socket-url", socket_url]
    if policy is not None:
        args += ["--policy", json.dumps(policy)]
    if ledger is not None:
        args += ["--ledger", str(ledger)]
    if heartbeat is not None:
        args += ["--heartbeat", str(heartbeat)]
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [sys.executable, *args],
            stdout=subprocess.PIPE,
            stderr=sink,
            stdin=subprocess.DEVNULL,
            text=True,
        )
    return ScriptProcess(process, log)


@contextmanager
def manager_worker(
    url: str, token: str, room: str, name: str, log: Path, **options: Any
) -> Iterator[ScriptProcess]:
    """A `JobManager` worker process (see `start_manager_worker`) for the block."""
    worker = start_manager_worker(url, token, room, name, log, **options)
    try:
        yield worker
    finally:
        worker.stop()
