"""The server under test, and the context each server check runs in.

Every check works in rooms and job names of its own (`cf<run>-<n>`), so checks
never see each other's tasks and the kit can run against a server that holds
other data. When a check ends, the workers it created are deleted and the tasks
it submitted cancelled, so its jobs disappear too (`@global` ones included).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import httpx

from joblib_conformance import expect
from joblib_conformance.checks import Check
from joblib_conformance.rest import Rest, segment
from joblib_conformance.sockets import Peer
from joblib_protocol import (
    JobResponse,
    TaskClaimResponse,
    TaskResponse,
    WorkerResponse,
)

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"angle": {"type": "number"}},
}
"""The parameter schema of the jobs the checks register."""


@dataclass(frozen=True)
class ServerTarget:
    """Where the server under test is, and who the kit acts as.

    `url` is the server's root: REST under `/v1/joblib`, Socket.IO at
    `socketio_path`. Three identities: an admin, a user, and another user.
    `category` must be one the server allows; `max_body_bytes` is its body limit
    (for the 413 check); `timeout` bounds each request and each wait for an event;
    `disconnect_within` is how soon a dropped worker socket must be cleaned up
    ("at once": without waiting for a ping to time out).

    What the kit cannot find out for itself: `max_list_offset` (the largest
    `?offset=` a list takes) and `heartbeat_task_margin` (how old a claim must be
    before a heartbeat that leaves it out releases it) default to our server's
    defaults. The checks that need `body_timeout` (the server's time limit for a
    request body, for 408), `locked_room` (a room its access policy locks for
    the user, for 423) or `max_result_bytes` (the largest result it keeps, for
    413) are skipped without them.
    """

    url: str
    admin_token: str
    user_token: str
    other_user_token: str
    category: str = "modifiers"
    max_body_bytes: int = 1_048_576
    socketio_path: str = "socket.io"
    timeout: float = 10.0
    disconnect_within: float = 3.0
    max_list_offset: int = 10_000
    heartbeat_task_margin: float = 10.0
    body_timeout: float | None = None
    locked_room: str | None = None
    max_result_bytes: int | None = None


class Served(NamedTuple):
    """A job registered by a fresh worker: who serves what, where."""

    worker_id: str
    full_name: str
    room_id: str
    job: JobResponse


_RUN = uuid.uuid4().hex[:6]
_NAMES = itertools.count(1)


@dataclass
class ServerContext:
    """What a server check works with: clients per identity, names, helpers."""

    target: ServerTarget
    check: Check
    stack: ExitStack
    admin: Rest = field(init=False)
    user: Rest = field(init=False)
    other: Rest = field(init=False)
    anonymous: Rest = field(init=False)
    _workers: list[str] = field(default_factory=list)
    _tasks: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        target = self.target

        def client(token: str | None) -> Rest:
            rest = Rest(target.url, token, timeout=target.timeout)
            self.stack.callback(rest.close)
            return rest

        self.admin = client(target.admin_token)
        self.user = client(target.user_token)
        self.other = client(target.other_user_token)
        self.anonymous = client(None)
        self.stack.callback(self._tidy)

    @property
    def timeout(self) -> float:
        """How long to wait for something that should happen promptly."""
        return self.target.timeout

    # names

    def room(self) -> str:
        """A room id no other check uses."""
        return f"cf{_RUN}-{next(_NAMES)}"

    def name(self, prefix: str = "Job") -> str:
        """A job name no other check uses."""
        return f"{prefix}{_RUN}x{next(_NAMES)}"

    def full_name(self, room_id: str, name: str) -> str:
        """`<room_id>:<category>:<name>` in the kit's category."""
        return f"{room_id}:{self.target.category}:{name}"

    # workers and jobs

    def remember_worker(self, worker_id: str) -> str:
        """Delete this worker (as admin) when the check ends."""
        self._workers.append(worker_id)
        return worker_id

    def remember_task(self, task_id: object) -> str:
        """Cancel this task (as admin) when the check ends, if it is still open."""
        self._tasks.append(str(task_id))
        return str(task_id)

    def _tidy(self) -> None:
        """Delete the check's workers, then cancel its tasks still open.

        Best effort: the server may be gone, a worker or a task finished already.
        """
        for worker_id in self._workers:
            with suppress(Exception):
                self.admin.delete(f"/workers/{worker_id}")
        for task_id in self._tasks:
            with suppress(Exception):
                self.admin.patch(f"/tasks/{task_id}", json={"status": "cancelled"})

    def create_worker(self, rest: Rest | None = None) -> str:
        """`POST /workers` (201) as `rest` (default: the user); the worker's id."""
        answer = (rest or self.user).post("/workers")
        body = expect.status(answer, 201, "from POST /workers")
        worker = expect.model(body, WorkerResponse, "POST /workers")
        return self.remember_worker(str(worker.id))

    def register(
        self,
        room_id: str,
        name: str,
        *,
        rest: Rest | None = None,
        worker_id: str | None = None,
        schema: dict[str, Any] | None = None,
        on_disconnect: dict[str, Any] | None = None,
        expect_status: int = 201,
        **extra: Any,
    ) -> JobResponse:
        """`PUT /rooms/{room_id}/jobs`, expecting `expect_status`; `extra` goes
        into the body as it is (`timeout_seconds=1`)."""
        body: dict[str, Any] = {
            "category": self.target.category,
            "name": name,
            "schema": SCHEMA if schema is None else schema,
            **extra,
        }
        if worker_id is not None:
            body["worker_id"] = worker_id
        if on_disconnect is not None:
            body["on_disconnect"] = on_disconnect
        answer = (rest or self.user).put(f"/rooms/{segment(room_id)}/jobs", json=body)
        data = expect.status(answer, expect_status, f"from PUT /rooms/{room_id}/jobs")
        job = expect.model(data, JobResponse, "the registered job")
        if job.worker_id is not None:
            self.remember_worker(str(job.worker_id))
        return job

    def serving(
        self,
        room_id: str | None = None,
        *,
        rest: Rest | None = None,
        name: str | None = None,
        on_disconnect: dict[str, Any] | None = None,
        **extra: Any,
    ) -> Served:
        """A new job in `room_id` (default: a new room), served by a new worker;
        `extra` goes into the registration's body."""
        room_id = room_id or self.room()
        job = self.register(
            room_id,
            name or self.name(),
            rest=rest,
            on_disconnect=on_disconnect,
            **extra,
        )
        expect.that(
            job.worker_id is not None,
            "the registration to name the worker it created (worker_id)",
            job.worker_id,
        )
        return Served(str(job.worker_id), job.full_name, room_id, job)

    # tasks

    def submit(
        self,
        room_id: str,
        full_name: str,
        payload: dict[str, Any] | None = None,
        *,
        rest: Rest | None = None,
        **extra: Any,
    ) -> TaskResponse:
        """`POST /rooms/{room_id}/tasks/{full_name}` (202); the task. `extra` goes
        into the body as it is (`pending_timeout_seconds=1`)."""
        answer = (rest or self.user).post(
            f"/rooms/{segment(room_id)}/tasks/{segment(full_name)}",
            json={"payload": payload or {}, **extra},
        )
        body = expect.status(answer, 202, f"from submitting a task of {full_name}")
        task = expect.model(body, TaskResponse, "the submitted task")
        self.remember_task(task.id)
        return task

    def claim(
        self,
        worker_id: str,
        *,
        rest: Rest | None = None,
        **extra: Any,
    ) -> TaskResponse | None:
        """`POST /tasks/claim` (200) for `worker_id`; the task, or None."""
        answer = (rest or self.user).post(
            "/tasks/claim", json={"worker_id": worker_id, **extra}
        )
        body = expect.status(answer, 200, "from POST /tasks/claim")
        return expect.model(body, TaskClaimResponse, "the claim's answer").task

    def update(
        self,
        task_id: object,
        status: str,
        *,
        rest: Rest | None = None,
        error: str | None = None,
        worker_id: str | None = None,
        **extra: Any,
    ) -> TaskResponse:
        """`PATCH /tasks/{task_id}` (200); the task as answered. `extra` goes into
        the body as it is (`result=...`, even `result=None`)."""
        body: dict[str, Any] = {"status": status, **extra}
        if error is not None:
            body["error"] = error
        if worker_id is not None:
            body["worker_id"] = worker_id
        answer = (rest or self.user).patch(f"/tasks/{task_id}", json=body)
        data = expect.status(answer, 200, f"from PATCH /tasks/{{id}} to {status}")
        return expect.model(data, TaskResponse, "the updated task")

    def report_progress(
        self, task_id: object, rest: Rest | None = None, **body: Any
    ) -> httpx.Response:
        """`PUT /tasks/{task_id}/progress` with `body` (ours); the answer, unchecked."""
        return (rest or self.user).put(f"/tasks/{task_id}/progress", json=body)

    def task(self, task_id: object, rest: Rest | None = None) -> TaskResponse:
        """`GET /tasks/{task_id}` (200); the task."""
        answer = (rest or self.user).get(f"/tasks/{task_id}")
        body = expect.status(answer, 200, "from GET /tasks/{id}")
        return expect.model(body, TaskResponse, "the task")

    def running_task(self, served: Served | None = None) -> tuple[Served, TaskResponse]:
        """A task claimed and reported running by its worker (core requests only)."""
        served = served or self.serving()
        submitted = self.submit(served.room_id, served.full_name)
        claimed = self.claim(served.worker_id)
        expect.that(
            claimed is not None and claimed.id == submitted.id,
            f"the claim to take the task just submitted ({submitted.id})",
            claimed,
        )
        return served, self.update(submitted.id, "running")

    # sockets

    def peer(
        self,
        token: str | None = None,
        *,
        anonymous: bool = False,
        via: str = "header",
        snapshots: bool = False,
        connect: bool = True,
    ) -> Peer:
        """A Socket.IO peer (default: as the user), closed when the check ends.

        `anonymous` sends no credentials. With `snapshots`, the peer reads each
        event's resource over REST on arrival.
        """
        rest = None
        if snapshots:
            rest = Rest(self.target.url, self.target.admin_token, timeout=self.timeout)
            self.stack.callback(rest.close)
        peer = Peer(
            self.target.url,
            None if anonymous else token or self.target.user_token,
            via=via,
            socketio_path=self.target.socketio_path,
            timeout=self.timeout,
            snapshots=rest,
        )
        self.stack.callback(peer.close)
        return peer.connect() if connect else peer

    def observer(self, *rooms: str, snapshots: bool = False) -> Peer:
        """A peer (as the admin) observing `rooms` with `join_room`."""
        peer = self.peer(self.target.admin_token, snapshots=snapshots)
        for room_id in rooms:
            peer.join_room(room_id)
        return peer


@contextmanager
def server_context(target: ServerTarget, check: Check) -> Iterator[ServerContext]:
    """The context of one server check; everything it opened is closed after."""
    with ExitStack() as stack:
        yield ServerContext(target, check, stack)
