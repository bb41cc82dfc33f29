"""Start and stop the servers under test, and provision their databases.

Each server is a uvicorn subprocess on a free 127.0.0.1 port, started the way users
start joblib-server (`python -m joblib_server.cli serve --host --port --log-level`);
the HTTP floor's trivial app is started with the same flags. Databases: an SQLite
file in a temporary folder, or a fresh PostgreSQL database on 127.0.0.1:5432,
created for one server and dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

HOST = "127.0.0.1"
TOKEN = "bench-token"
TOKENS_JSON = json.dumps({TOKEN: {"id": "bench", "admin": True}})
API = "/v1/joblib"
POSTGRES_URL = os.environ.get(
    "JOBLIB_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432"
)
STARTUP_SECONDS = 30.0
STOP_SECONDS = 10.0
REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """A running server subprocess, and how to start it again (`restart`)."""

    process: asyncio.subprocess.Process
    port: int
    log: Path
    module: str = "joblib_server.cli"
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    ready_path: str = f"{API}/workers"
    token: str | None = None

    @property
    def url(self) -> str:
        """The server's base URL (scheme, host and port)."""
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        """The process id of the server (uvicorn runs in this very process)."""
        return self.process.pid

    def rss_mib(self) -> float:
        """The server's resident memory (VmRSS of /proc/<pid>/status) in MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no VmRSS for pid {self.pid}")

    def cpu_seconds(self) -> float:
        """User plus system CPU time the server has used (/proc/<pid>/stat)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the server wrote to stdout and stderr."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), STOP_SECONDS)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()

    async def restart(self) -> float:
        """Stop (SIGTERM), start again on the same port; the seconds it was down.

        The seconds run from the signal to the first answer of the new process.
        """
        started = time.perf_counter()
        await self.stop()
        self.process = await _launch(self.module, self.port, self.env, self.log)
        await _wait_ready(self, self.ready_path, self.token)
        return time.perf_counter() - started


class CpuMeter:
    """Wall time, and the CPU the server and this process used over it."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self._wall = time.perf_counter()
        self._server = server.cpu_seconds()
        self._client = time.process_time()

    def read(self) -> dict[str, float]:
        """Seconds elapsed; server and client CPU as fractions of one core."""
        wall = max(time.perf_counter() - self._wall, 1e-9)
        return {
            "seconds": round(wall, 3),
            "server_cpu": round((self.server.cpu_seconds() - self._server) / wall, 3),
            "client_cpu": round((time.process_time() - self._client) / wall, 3),
        }


async def _launch(
    module: str, port: int, env: Mapping[str, str], log: Path
) -> asyncio.subprocess.Process:
    """Start `python -m <module> serve` on `port`, its output appended to `log`."""
    with log.open("ab") as sink:
        return await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", module, "serve", "--host", HOST),
            *("--port", str(port), "--log-level", "warning"),
            env={**os.environ, **env},
            cwd=REPO_ROOT,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=sink,
            stderr=asyncio.subprocess.STDOUT,
        )


async def _wait_ready(server: ServerProcess, path: str, token: str | None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.perf_counter() + STARTUP_SECONDS
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as http:
        while time.perf_counter() < deadline:
            if server.process.returncode is not None:
                break
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(path, timeout=2.0)).status_code == 200:
                    return
            await asyncio.sleep(0.05)
    await server.stop()
    raise RuntimeError(
        f"server on port {server.port} did not start:\n{server.log_tail()}"
    )


@contextlib.asynccontextmanager
async def serve(
    module: str,
    *,
    env: Mapping[str, str],
    ready_path: str,
    token: str | None = None,
) -> AsyncIterator[ServerProcess]:
    """Run `python -m <module> serve --host --port --log-level warning` until exit."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="joblib-bench-log-") as folder:
        log = Path(folder) / "server.log"
        process = await _launch(module, port, env, log)
        server = ServerProcess(process, port, log, module, env, ready_path, token)
        try:
            await _wait_ready(server, ready_path, token)
            yield server
        finally:
            await server.stop()


def joblib_server(
    database_url: str, settings: Mapping[str, str] | None = None
) -> contextlib.AbstractAsyncContextManager[ServerProcess]:
    """The standalone joblib server on `database_url` (extra `JOBLIB_*` settings)."""
    env = {
        "JOBLIB_DATABASE_URL": database_url,
        "JOBLIB_TOKENS": TOKENS_JSON,
        **(settings or {}),
    }
    return serve("joblib_server.cli", env=env, ready_path=f"{API}/workers", token=TOKEN)


def floor_server() -> contextlib.AbstractAsyncContextManager[ServerProcess]:
    """The trivial Starlette app of the HTTP floor (`bench.floor_app`)."""
    from bench.floor_app import FLOOR_PATH

    return serve("bench.floor_app", env={}, ready_path=FLOOR_PATH)


async def _postgres_admin(statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(f"{POSTGRES_URL}/postgres", timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def database(kind: str) -> AsyncIterator[str]:
    """A fresh, empty database of `kind` (sqlite or postgresql); yields its URL."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="joblib-bench-db-") as folder:
            yield f"sqlite:///{folder}/bench.db"
        return
    if kind != "postgresql":
        raise ValueError(f"unknown database kind {kind!r}")
    name = f"joblib_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    await _postgres_admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES_URL}/{name}"
    finally:
        await _postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.asynccontextmanager
async def joblib_on(
    kind: str, settings: Mapping[str, str] | None = None
) -> AsyncIterator[tuple[ServerProcess, str]]:
    """A fresh database of `kind` and a joblib server on it; yields both."""
    async with database(kind) as url, joblib_server(url, settings) as server:
        yield server, url


@dataclass
class WorkerProcess:
    """A bench worker process that reports on stdout, one JSON line a step."""

    process: asyncio.subprocess.Process

    async def line(self, seconds: float) -> dict[str, Any]:
        """The next JSON line the process prints."""
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), seconds)
        if not raw:
            raise RuntimeError(f"{type(self).__name__} exited early")
        answer: dict[str, Any] = json.loads(raw)
        return answer

    async def reap(self) -> None:
        """Kill (if alive) and wait for the process."""
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        await self.process.wait()
