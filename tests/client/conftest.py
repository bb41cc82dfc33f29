"""Client test fixtures: the real server in-process, a live one, and test doubles.

`server` runs the standalone app (REST only) in a Starlette `TestClient`, which is
an `httpx.Client`, so managers reach it through a plain api object.
`RecordingTsio` is our own stand-in for the socket seam: it records what the
manager emits.

Client tests run on SQLite only: what they check is the client's behaviour, which
does not depend on the database behind the server. The server tests run every
operation on both databases; none of the client tests depends on one (a test that
did, such as concurrent claims, would belong with them).
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    # Starlette 1.x prefers httpx2 for its TestClient; joblib-client speaks httpx,
    # and the TestClient must be an `httpx.Client` to stand in for a host's API.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from joblib_client import ClaimedTask, JobManager, Tsio
from joblib_protocol import Event
from joblib_server import Settings, StandaloneSettings, TokenAuth, create_app
from tests.support.servers import LiveServer
from tests.support.tokens import ADMIN, TOKENS


@dataclass
class InProcessApi:
    """The api object a host would pass: an httpx client, a root URL, a token."""

    http: httpx.Client
    token: str | None = ADMIN
    base_url: str = "http://testserver"

    def get_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


@dataclass
class RecordingTsio:
    """Records the events a manager emits, in order."""

    events: list[Event] = field(default_factory=list)

    def emit(self, event: Event) -> object:
        self.events.append(event)
        return None

    def of(self, kind: type[Event]) -> list[Any]:
        return [event for event in self.events if isinstance(event, kind)]


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """An empty SQLite database (overrides the suite's two-database fixture)."""
    return f"sqlite:///{tmp_path / 'joblib.db'}"


def standalone_app(
    database_url: str, settings: Settings, *, realtime: bool = False
) -> Any:
    """The standalone app on `database_url`; with `realtime`, Socket.IO too."""
    standalone = StandaloneSettings(
        database_url=database_url,
        socketio_ping_interval_seconds=1,
        socketio_ping_timeout_seconds=1,
        joblib=settings,
    )
    return create_app(standalone, TokenAuth(TOKENS), realtime=realtime)


@pytest.fixture
def server(database_url: str, settings: Settings) -> Iterator[TestClient]:
    """The real app on the test database, in-process, its lifespan entered."""
    app = standalone_app(database_url, settings)
    with TestClient(app) as client:
        yield client


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ManagerFactory = Callable[..., JobManager]


@pytest.fixture
def make_manager(server: TestClient) -> Iterator[ManagerFactory]:
    """Build managers on the in-process server; each is disconnected at the end."""
    managers: list[JobManager] = []

    def factory(
        token: str = ADMIN, tsio: Tsio | None = None, **kwargs: Any
    ) -> JobManager:
        manager = JobManager(InProcessApi(server, token), tsio, **kwargs)
        managers.append(manager)
        return manager

    yield factory
    for manager in managers:
        manager.close()  # closes no transport of ours; waits for its heartbeat


@pytest.fixture
def make_live_manager(live_server: LiveServer) -> Iterator[ManagerFactory]:
    """Build `JobManager.connect` managers on the live server; closed at the end."""
    managers: list[JobManager] = []

    def factory(token: str = ADMIN, **kwargs: Any) -> JobManager:
        manager = JobManager.connect(live_server.url, token=token, **kwargs)
        managers.append(manager)
        return manager

    yield factory
    for manager in managers:
        manager.close()


class Listener:
    """Runs `manager.listen()` in a thread, running each task and queueing it.

    `run_kwargs` go to each `run()`; a queued task's `status` is what it returned.
    """

    def __init__(
        self,
        manager: JobManager,
        polling_interval: float,
        *,
        park_claims: bool = True,
        run_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.manager = manager
        self.polling_interval = polling_interval
        self.park_claims = park_claims
        self.run_kwargs = run_kwargs or {}
        self.stop = threading.Event()
        self.tasks: queue.Queue[ClaimedTask] = queue.Queue()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            for task in self.manager.listen(
                self.stop, self.polling_interval, park_claims=self.park_claims
            ):
                self.manager.run(task, **self.run_kwargs)
                self.tasks.put(task)
        except BaseException as exc:  # surfaced by the test, not lost in a thread
            self.errors.append(exc)

    def next_task(self, timeout: float) -> ClaimedTask:
        return self.tasks.get(timeout=timeout)

    def __enter__(self) -> Listener:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "listen() did not stop"
        assert not self.errors, self.errors


class RequestCounter:
    """An httpx event hook counting the requests a client sends (ending in `path`).

    `times` holds when each was sent (`time.monotonic()`).
    """

    def __init__(self, path: str = "") -> None:
        self.path = path
        self.requests: list[httpx.Request] = []
        self.times: list[float] = []

    def __call__(self, request: httpx.Request) -> None:
        if request.url.path.endswith(self.path):
            self.requests.append(request)
            self.times.append(time.monotonic())

    def __len__(self) -> int:
        return len(self.requests)

    def clear(self) -> None:
        self.requests.clear()
        self.times.clear()

    def gaps(self) -> list[float]:
        """Seconds between one request and the next."""
        return [later - earlier for earlier, later in itertools.pairwise(self.times)]


@pytest.fixture
def count_requests(server: TestClient) -> RequestCounter:
    """Count every request sent through the in-process server's client."""
    counter = RequestCounter()
    server.event_hooks["request"].append(counter)
    return counter


class Gate:
    """An httpx request hook holding back the requests `method path...` until opened.

    `entered` is set once a request waits at the gate. Leaving the block opens it.
    """

    def __init__(self, http: httpx.Client, method: str, path: str) -> None:
        self.http = http
        self.method = method
        self.path = path
        self.entered = threading.Event()
        self._open = threading.Event()

    def __call__(self, request: httpx.Request) -> None:
        if request.method == self.method and self.path in request.url.path:
            self.entered.set()
            self._open.wait(30)

    def open(self) -> None:
        self._open.set()

    def __enter__(self) -> Gate:
        self.http.event_hooks["request"].append(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.open()
        self.http.event_hooks["request"].remove(self)


def heartbeat_threads() -> set[threading.Thread]:
    """The heartbeat threads alive in this process, of any manager."""
    return {t for t in threading.enumerate() if t.name == "joblib heartbeat"}


def in_thread(function: Callable[[], object]) -> tuple[threading.Thread, list[Any]]:
    """Run `function` in a daemon thread; the list gets its result or exception."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(function())
        except BaseException as exc:  # surfaced by the test, not lost in a thread
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome
