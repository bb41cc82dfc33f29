"""Servers for the tests: test-friendly settings, and uvicorn in a thread."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from joblib_server import JobLib, Settings
from tests.support.waiting import eventually

T = TypeVar("T")


def make_settings(**overrides: Any) -> Settings:
    """Settings with test-friendly timeouts."""
    values: dict[str, Any] = {
        "long_poll_max_wait_seconds": 5,
        "long_poll_recheck_seconds": 1,
    }
    values.update(overrides)
    return Settings(**values)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LiveServer:
    """A uvicorn server running an ASGI app in a thread."""

    url: str
    app: Any

    @property
    def api(self) -> str:
        return f"{self.url}/v1/joblib"

    @property
    def joblib(self) -> JobLib:
        """The `JobLib` of the standalone app (`create_app`) this server runs."""
        joblib: JobLib = self.app.other_asgi_app.state.joblib
        return joblib

    def inspect(self, read: Callable[[JobLib], T]) -> T:
        """Read the server's in-memory state (parked claims, waiters) from the test.

        The server's thread may change a dict while `read` iterates it; such a read
        raises RuntimeError and is simply made again.
        """
        while True:
            try:
                return read(self.joblib)
            except RuntimeError:
                continue


@contextmanager
def serve_in_thread(app: Any, port: int = 0, **config: Any) -> Iterator[LiveServer]:
    """Run `app` under uvicorn on a loopback port for the duration of the block.

    `port` (default: a free one) lets a test start a server again where one was;
    `config` goes to `uvicorn.Config` (`http="h11"`, say).
    An app from `create_app` runs under `JobLibServer`, as the CLI runs it: its
    shutdown keeps the workers, so they can come back to the next server.
    """
    import uvicorn

    from joblib_server.app import JobLibServer

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    options: dict[str, Any] = {"log_level": "warning", "ws": "wsproto", **config}
    uvicorn_config = uvicorn.Config(app, lifespan="on", **options)
    joblib = getattr(app, "joblib", None)
    server = (
        JobLibServer(uvicorn_config, joblib)
        if joblib is not None
        else uvicorn.Server(uvicorn_config)
    )
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, daemon=True
    )
    thread.start()

    def started() -> bool:
        if not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        return server.started

    try:
        eventually(started, timeout=15, what="uvicorn to start")
        yield LiveServer(url=f"http://127.0.0.1:{port}", app=app)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
