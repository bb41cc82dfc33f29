"""The fake server on a loopback port, in a thread, for a worker SDK's tests."""

from __future__ import annotations

import secrets
import socket
import threading
import time
from types import TracebackType
from typing import Any

import httpx
import uvicorn

from joblib_conformance.fake.app import FakeApp
from joblib_conformance.fake.recording import Recording
from joblib_conformance.fake.state import Identity
from joblib_conformance.rest import bearer, segment
from joblib_protocol import API_PREFIX, DisconnectPolicy

WORKER = "worker"
"""The identity of `worker_token`: the worker under test (an admin, so that it may
register `@global` jobs)."""

DRIVER = "driver"
"""The identity of `driver_token`: whoever submits the worker's tasks."""


class FakeServer:
    """The kit's fake joblib server, serving while the `with` block runs.

    Give the worker under test `url` and `worker_token`; everything it sends is in
    `recording`. `submit()` and `task()` act as a separate identity, so its
    calls are easy to tell from the worker's.

        with FakeServer() as fake:
            manager = JobManager.connect(fake.url, token=fake.worker_token)
            ...
    """

    def __init__(
        self,
        *,
        port: int = 0,
        worker_is_admin: bool = True,
        defaults: DisconnectPolicy | None = None,
    ) -> None:
        self.worker_token = secrets.token_urlsafe(16)
        self.driver_token = secrets.token_urlsafe(16)
        tokens = {
            self.worker_token: Identity(WORKER, is_admin=worker_is_admin),
            self.driver_token: Identity(DRIVER, is_admin=True),
        }
        self.app = FakeApp(tokens, defaults=defaults)
        self._port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._http: httpx.Client | None = None
        self.url = ""

    @property
    def recording(self) -> Recording:
        """Every request and socket event the server handled so far."""
        return self.app.recording

    def start(self) -> None:
        """Listen on 127.0.0.1 (on a free port unless one was given)."""
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self._port))
        self._socket = sock
        config = uvicorn.Config(
            self.app.asgi, log_level="warning", ws="wsproto", lifespan="off"
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake server did not start")
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self._http = httpx.Client(
            base_url=self.url + API_PREFIX, headers=bearer(self.driver_token)
        )

    def stop(self) -> None:
        """Stop serving."""
        if self._http is not None:
            self._http.close()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(15)
        if self._socket is not None:
            self._socket.close()

    def __enter__(self) -> FakeServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # acting as the driver

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request as the driver (paths relative to `/v1/joblib`)."""
        assert self._http is not None, "the fake server is not running"
        return self._http.request(method, path, **kwargs)

    def submit(
        self, room_id: str, full_name: str, payload: dict[str, Any] | None = None
    ) -> str:
        """Submit a task as the driver; its id."""
        answer = self.request(
            "POST",
            f"/rooms/{segment(room_id)}/tasks/{segment(full_name)}",
            json={"payload": payload or {}},
        )
        answer.raise_for_status()
        return str(answer.json()["id"])

    def task(self, task_id: str) -> dict[str, Any]:
        """A task as `GET /tasks/{id}` shows it."""
        answer = self.request("GET", f"/tasks/{task_id}")
        answer.raise_for_status()
        task: dict[str, Any] = answer.json()
        return task
