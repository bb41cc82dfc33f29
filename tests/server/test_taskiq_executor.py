"""The taskiq executor against the real Redis, with a real `taskiq worker` process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from taskiq_redis import ListQueueBroker

from joblib_server import Settings, StandaloneSettings, TokenAuth, create_app
from joblib_server.taskiq_executor import TaskiqExecutor
from tests.support.internal_jobs import Boom, Double, Sleepy
from tests.support.processes import WorkerProcess
from tests.support.servers import LiveServer, serve_in_thread
from tests.support.services import REDIS_URL, require_redis
from tests.support.sockets import connect_peer
from tests.support.tokens import ALICE, TOKENS, bearer
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow  # a taskiq worker process takes seconds to start

ROOT = Path(__file__).resolve().parents[2]
DOUBLE = "@internal:modifiers:Double"
BOOM = "@internal:analysis:Boom"
SLEEPY = "@internal:modifiers:Sleepy"


@pytest.fixture
def queue() -> Iterator[str]:
    """A Redis list of this test's own, deleted afterwards."""
    require_redis()
    import redis

    name = f"joblib-test-{uuid.uuid4().hex[:12]}"
    yield name
    redis.Redis.from_url(REDIS_URL).delete(name)


@pytest.fixture
def server(database_url: str, settings: Settings, queue: str) -> Iterator[LiveServer]:
    broker = ListQueueBroker(REDIS_URL, queue_name=queue)
    executor = TaskiqExecutor(broker, [Double, Boom, Sleepy])
    standalone = StandaloneSettings(database_url=database_url, joblib=settings)
    app = create_app(standalone, TokenAuth(TOKENS), executor=executor)
    with serve_in_thread(app) as server:
        yield server


@pytest.fixture
def taskiq_worker(server: LiveServer, queue: str) -> Iterator[subprocess.Popen[str]]:
    """`taskiq worker tests.support.taskiq_app:broker`, in its own process group."""
    env = {
        **os.environ,
        "JOBLIB_TEST_API": server.url,
        "JOBLIB_TEST_TASKIQ_QUEUE": queue,
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "taskiq",
            "worker",
            "tests.support.taskiq_app:broker",
            "--workers",
            "1",
        ],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        if process.stdout is not None:
            process.stdout.close()


def _finished(client: httpx.Client, task_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any]:
        task: dict[str, Any] = client.get(f"/tasks/{task_id}").json()
        return task if task["status"] in ("completed", "failed", "cancelled") else {}

    return eventually(done, timeout=30, what=f"task {task_id} to finish")


def test_a_taskiq_worker_completes_fails_and_stops_internal_tasks(
    server: LiveServer, taskiq_worker: subprocess.Popen[str]
) -> None:
    with (
        httpx.Client(base_url=server.api, headers=bearer(ALICE)) as client,
        connect_peer(server.url, token=ALICE, rooms=("room1",)) as observer,
    ):
        # Completed, with the result, seen by an observer of the room.
        task = client.post(
            f"/rooms/room1/tasks/{DOUBLE}", json={"payload": {"value": 4}}
        ).json()
        assert task["status"] == "claimed"
        done = _finished(client, task["id"])
        assert done["status"] == "completed"
        assert done["result"] == {"value": 8, "unit": "cm"}
        assert done["progress"] == {"current": 1, "total": 2, "message": "halfway"}
        observer.wait_for(
            lambda e: e[0] == "task_status_event" and e[1]["status"] == "completed"
        )
        seen = [
            data["status"]
            for name, data in observer.events
            if name == "task_status_event" and data["id"] == task["id"]
        ]
        assert seen == ["claimed", "running", "completed"]

        # Failed, with the exception's text.
        boom = client.post(f"/rooms/room1/tasks/{BOOM}", json={"payload": {}}).json()
        failed = _finished(client, boom["id"])
        assert failed["status"] == "failed"
        assert failed["error"] == "ValueError: boom went the job"
        assert failed["error_code"] == "job_failed"

        # Cancelled while running: the worker's code stops, nothing more reported.
        sleepy = client.post(
            f"/rooms/room1/tasks/{SLEEPY}", json={"payload": {}}
        ).json()
        eventually(
            lambda: client.get(f"/tasks/{sleepy['id']}").json()["status"] == "running",
            timeout=30,
            what="the sleepy task to run",
        )
        answer = client.patch(f"/tasks/{sleepy['id']}", json={"status": "cancelled"})
        assert answer.status_code == 200, answer.text

        # Past its deadline: failed by the server, its code told to stop.
        late = client.post(
            f"/rooms/room1/tasks/{SLEEPY}",
            json={"payload": {"seconds": 30}, "timeout_seconds": 0.5},
        ).json()
        failed_late = _finished(client, late["id"])
        assert failed_late["error_code"] == "deadline_exceeded"
        assert _finished(client, sleepy["id"])["status"] == "cancelled"
        # Both stops reached the code in the worker process.
        lines = WorkerProcess(taskiq_worker)
        stops = {lines.read_line().strip(), lines.read_line().strip()}
        assert stops == {
            f"stopped {sleepy['id']} cancelled",
            f"stopped {late['id']} deadline_exceeded",
        }

        # A report with another claim is refused, like a stale worker's.
        refused = httpx.patch(
            f"{server.api}/tasks/{task['id']}",
            headers=bearer("admin-token"),
            json={"status": "failed", "claim_id": "taskiq:not-the-claim"},
        )
        assert refused.status_code == 409
