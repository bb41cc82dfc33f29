"""A JobManager's part in tasks that come back: request ids, and held tasks in beats.

A claim that got no answer is sent again under its request id, and gets back the
task it took. Every heartbeat lists the tasks the manager holds, so the server
releases a task whose claim's answer never reached the manager.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from joblib_client import JobManager
from joblib_protocol import TaskStatus
from joblib_server import Settings
from tests.client.conftest import Listener, ManagerFactory, auth
from tests.client.extensions import Rotate
from tests.support import eventually
from tests.support.rest import rest
from tests.support.servers import LiveServer, make_settings
from tests.support.tokens import ADMIN, ALICE

MARGIN = 0.3
REQUEUE = {"action": "requeue", "max_attempts": 3}


@pytest.fixture
def settings() -> Settings:
    return make_settings(heartbeat_task_margin_seconds=MARGIN)


class Bodies:
    """An httpx request hook keeping the JSON bodies of `method path...` requests."""

    def __init__(self, method: str, path: str) -> None:
        self.method = method
        self.path = path
        self.bodies: list[Any] = []

    def __call__(self, request: httpx.Request) -> None:
        if request.method == self.method and self.path in request.url.path:
            self.bodies.append(json.loads(request.content) if request.content else None)


class LoseOneAnswer:
    """An httpx response hook: the first answer to `POST /tasks/claim` that carries
    a task never reaches the caller (the server did the claim)."""

    def __init__(self) -> None:
        self.lost: list[str] = []

    def __call__(self, response: httpx.Response) -> None:
        request = response.request
        if self.lost or not request.url.path.endswith("/tasks/claim"):
            return
        response.read()
        task = response.json().get("task")
        if task is not None:
            self.lost.append(task["id"])
            raise httpx.ReadTimeout("the answer was lost", request=request)


def test_a_claim_that_got_no_answer_is_sent_again_and_gets_its_task(
    make_manager: ManagerFactory, server: TestClient
) -> None:
    worker = make_manager(ADMIN, heartbeat_interval=None)
    worker.register(Rotate)
    submitter = make_manager(ALICE)
    claims = Bodies("POST", "/tasks/claim")
    lose = LoseOneAnswer()
    server.event_hooks["request"].append(claims)
    server.event_hooks["response"].append(lose)
    try:
        first = submitter.submit(Rotate(angle=1), "room1")
        second = submitter.submit(Rotate(angle=2), "room1")
        with Listener(worker, polling_interval=0.05) as listener:
            ran = [listener.next_task(timeout=10).id for _ in range(2)]
    finally:
        server.event_hooks["response"].remove(lose)
        server.event_hooks["request"].remove(claims)
    assert lose.lost == [str(first)]
    assert ran == [first, second]  # the lost one first, and no task claimed twice
    ids = [body["request_id"] for body in claims.bodies]
    assert ids[0] == ids[1]  # the claim sent again under its id
    assert len(set(ids)) == len(ids) - 1  # every other claim is a new one
    for task_id in (first, second):
        task = submitter.wait(task_id, timeout=5)
        assert (task.status, task.attempt) == (TaskStatus.COMPLETED, 1)


def test_a_claim_names_itself_and_keeps_a_name_it_is_given(
    make_manager: ManagerFactory, server: TestClient
) -> None:
    worker = make_manager(ADMIN, heartbeat_interval=None)
    worker.register(Rotate)
    make_manager(ALICE).submit(Rotate(), "room1")
    claims = Bodies("POST", "/tasks/claim")
    server.event_hooks["request"].append(claims)
    try:
        task = worker.claim(request_id="mine")
        again = worker.claim(request_id="mine")
        fresh = worker.claim()
    finally:
        server.event_hooks["request"].remove(claims)
    assert task is not None
    assert again is not None
    assert again.id == task.id
    assert fresh is None
    assert [b["request_id"] for b in claims.bodies][:2] == ["mine", "mine"]
    assert claims.bodies[2]["request_id"] not in (None, "mine")


def test_heartbeats_list_the_tasks_the_manager_holds(
    make_manager: ManagerFactory, server: TestClient
) -> None:
    worker = make_manager(ADMIN, heartbeat_interval=None)
    worker.register(Rotate)
    submitter = make_manager(ALICE)
    beats = Bodies("PATCH", "/workers/")
    server.event_hooks["request"].append(beats)
    try:
        worker.heartbeat()
        submitter.submit(Rotate(), "room1")
        kept = submitter.submit(Rotate(), "room1")
        done = worker.claim()
        held = worker.claim(start=False)
        assert done is not None
        assert held is not None
        worker.heartbeat()
        assert worker.run(done) == TaskStatus.COMPLETED
        worker.heartbeat()
        # Cancelled meanwhile: its report is refused, and the manager lets it go.
        cancel = {"status": "cancelled"}
        cancelled = server.patch(
            f"/v1/joblib/tasks/{held.id}", json=cancel, headers=auth(ALICE)
        )
        assert cancelled.status_code == 200, cancelled.text
        assert worker.run(held) == TaskStatus.CANCELLED
        worker.heartbeat()
    finally:
        server.event_hooks["request"].remove(beats)
    assert held.id == kept
    assert [set(b["tasks"]) for b in beats.bodies] == [
        set(),
        {str(done.id), str(held.id)},
        {str(held.id)},
        set(),
    ]


def test_the_server_releases_what_the_heartbeat_does_not_list(
    live_server: LiveServer,
) -> None:
    """Live: a task claimed for the worker whose answer it never saw comes back."""
    with (
        JobManager.connect(
            live_server.url, token=ADMIN, socket=False, heartbeat_interval=0.1
        ) as worker,
        rest(live_server.api, ALICE) as alice,
        rest(live_server.api, ADMIN) as admin,
    ):
        worker.register(Rotate, on_disconnect=REQUEUE)
        job = "@global:modifiers:Rotate"
        first = alice.post(f"/rooms/room1/tasks/{job}", json={"payload": {}}).json()
        held = worker.claim()
        assert held is not None
        assert str(held.id) == first["id"]
        # A claim made for the worker whose answer is lost on the way.
        lost = alice.post(f"/rooms/room1/tasks/{job}", json={"payload": {}}).json()
        answer = admin.post(
            "/tasks/claim",
            json={"worker_id": str(worker.worker_id), "request_id": uuid.uuid4().hex},
        )
        assert answer.json()["task"]["id"] == lost["id"]

        def released() -> bool:
            task = alice.get(f"/tasks/{lost['id']}").json()
            return bool(task["status"] == "pending")

        eventually(released, timeout=10, what="the lost task back in its queue")
        task = alice.get(f"/tasks/{lost['id']}").json()
        assert (task["attempt"], task["worker_id"]) == (2, None)
        # The task the manager holds stays its own, through the same heartbeats.
        assert alice.get(f"/tasks/{held.id}").json()["status"] == "running"
        assert worker.run(held) == TaskStatus.COMPLETED
        again = worker.claim()
        assert again is not None
        assert str(again.id) == lost["id"]
        assert worker.run(again) == TaskStatus.COMPLETED
