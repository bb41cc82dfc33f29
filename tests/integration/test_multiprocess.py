"""Two server processes sharing PostgreSQL and Redis behave as one server."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import eventually
from tests.support.processes import (
    restartable_server,
    server_process,
    worker_process,
)
from tests.support.rest import rest
from tests.support.servers import free_port
from tests.support.services import REDIS_URL, empty_postgres, require_redis
from tests.support.sockets import connect_peer
from tests.support.tokens import ADMIN, ALICE, BOB, TOKENS_JSON

# Two `joblib-server` processes and a worker process: seconds of start-up each.
pytestmark = pytest.mark.slow


def _shared_env(postgres_url: str) -> dict[str, str]:
    """The environment of server processes sharing an empty database and Redis."""
    require_redis()
    empty_postgres(postgres_url)
    return {
        "JOBLIB_DATABASE_URL": postgres_url,
        "JOBLIB_REDIS_URL": REDIS_URL,
        "JOBLIB_TOKENS": TOKENS_JSON,
        "JOBLIB_SOCKETIO_PING_INTERVAL_SECONDS": "1",
        "JOBLIB_SOCKETIO_PING_TIMEOUT_SECONDS": "1",
    }


@pytest.fixture
def two_servers(postgres_url: str) -> Iterator[tuple[str, str]]:
    env = _shared_env(postgres_url)
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
            assert answer["ok"] is True
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


def test_a_worker_that_moved_to_another_process_is_left_alone(
    postgres_url: str, tmp_path: Path
) -> None:
    """Its old socket on A closing, and then B stopping, clean nothing up."""
    env = _shared_env(postgres_url)
    room = f"room-{uuid.uuid4().hex[:8]}"
    with (
        restartable_server(env, tmp_path / "a.log", log_level="info") as a,
        restartable_server(env, tmp_path / "b.log", log_level="info") as b,
        rest(a.api, ALICE) as on_a,
        rest(b.api, ALICE) as on_b,
    ):
        job = on_a.put(
            f"/rooms/{room}/jobs",
            json={"category": "modifiers", "name": "Moves", "schema": {}},
        ).json()
        worker = job["worker_id"]
        joining = {"job_name": job["full_name"], "worker_id": worker}
        task = on_a.post(
            f"/rooms/{room}/tasks/{job['full_name']}", json={"payload": {}}
        ).json()
        with connect_peer(a.url, token=ALICE) as old_socket:
            assert old_socket.call("join_job_room", joining)["ok"] is True
            claimed = on_a.post(
                "/tasks/claim", json={"worker_id": worker, "start": True}
            ).json()
            assert claimed["task"]["id"] == task["id"]
            with connect_peer(b.url, token=ALICE) as new_socket:
                # The worker reconnects through B before A notices its old socket.
                assert new_socket.call("join_job_room", joining)["ok"] is True
                old_socket.sio.disconnect()
                eventually(
                    lambda: "joined again since" in a.log_tail(200),
                    what="A to handle the old socket's disconnect",
                )
                assert on_b.patch(f"/workers/{worker}").status_code == 200
                assert on_b.get(f"/tasks/{task['id']}").json()["status"] == "running"
                # B stops while the worker's socket is on it: a shutdown, not a
                # worker going away.
                dropped = new_socket.sio.eio.ws
                # (uvicorn re-raises the signal once it has shut down cleanly)
                assert b.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
                eventually(lambda: not new_socket.sio.connected)
                # python-engineio leaves a dropped websocket to the garbage collector.
                dropped.shutdown()
        assert on_a.patch(f"/workers/{worker}").status_code == 200
        after = on_a.get(f"/tasks/{task['id']}").json()
        assert (after["status"], after["worker_id"]) == ("running", worker)
        done = on_a.patch(
            f"/tasks/{task['id']}", json={"status": "completed", "worker_id": worker}
        )
        assert done.status_code == 200, done.text
