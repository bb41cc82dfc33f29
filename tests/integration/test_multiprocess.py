"""Two server processes sharing PostgreSQL and Redis behave as one server."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator

import pytest

from tests.support.processes import server_process, worker_process
from tests.support.rest import rest
from tests.support.servers import free_port
from tests.support.services import REDIS_URL, empty_postgres, require_redis
from tests.support.sockets import connect_peer
from tests.support.tokens import ADMIN, ALICE, BOB, TOKENS_JSON

# Two `joblib-server` processes and a worker process: seconds of start-up each.
pytestmark = pytest.mark.slow


@pytest.fixture
def two_servers(postgres_url: str) -> Iterator[tuple[str, str]]:
    require_redis()
    empty_postgres(postgres_url)
    env = {
        "JOBLIB_DATABASE_URL": postgres_url,
        "JOBLIB_REDIS_URL": REDIS_URL,
        "JOBLIB_TOKENS": TOKENS_JSON,
        "JOBLIB_SOCKETIO_PING_INTERVAL_SECONDS": "1",
        "JOBLIB_SOCKETIO_PING_TIMEOUT_SECONDS": "1",
    }
    with server_process(free_port(), env) as a, server_process(free_port(), env) as b:
        yield a, b


def test_emissions_and_cleanup_cross_processes(two_servers: tuple[str, str]) -> None:
    a, b = two_servers
    room = f"room-{uuid.uuid4().hex[:8]}"
    with connect_peer(a, token=ADMIN, rooms=(room,)) as observer_on_a:
        # A socket worker on B hears about a task submitted through A.
        with connect_peer(b, token=ALICE) as listener_on_b:
            with rest(f"{b}/v1/joblib", ALICE) as client:
                job = client.put(
                    f"/rooms/{room}/jobs",
                    json={"category": "modifiers", "name": "Listen", "schema": {}},
                ).json()
            answer = listener_on_b.call(
                "join_job_room",
                {"job_name": job["full_name"], "worker_id": job["worker_id"]},
            )
            assert answer == {"ok": True}
            with rest(f"{a}/v1/joblib", BOB) as client:
                submitted = client.post(
                    f"/rooms/{room}/tasks/{job['full_name']}", json={"payload": {}}
                ).json()
            _, available = listener_on_b.wait_for(lambda e: e[0] == "task_available")
            assert available["task_id"] == submitted["id"]

        # A worker process on B is killed; A's observers and API see the task failed.
        with worker_process(b, ALICE, room, "Doomed") as worker:
            worker.read()
            with rest(f"{a}/v1/joblib", BOB) as client:
                task_id = client.post(
                    f"/rooms/{room}/tasks/{room}:modifiers:Doomed", json={"payload": {}}
                ).json()["id"]
            assert worker.read()["task_id"] == task_id
            os.kill(worker.process.pid, signal.SIGKILL)
            _, failed = observer_on_a.wait_for(
                lambda e: (
                    e[0] == "task_status_event"
                    and e[1]["id"] == task_id
                    and e[1]["status"] == "failed"
                )
            )
        assert failed["error"] == "Worker disconnected"
        with rest(f"{a}/v1/joblib", BOB) as client:
            assert client.get(f"/tasks/{task_id}").json()["status"] == "failed"
