"""Socket heartbeats (`liveness`): a server process keeps its socket workers alive.

While a worker's socket is connected, its process records the worker's heartbeat
itself, one statement for all its workers; a REST-only worker still expires by
its heartbeat, and a worker whose socket drops is cleaned up as before.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import httpx
import pytest

from joblib_server import JobLib, Settings
from joblib_server.workers import keep_alive
from tests.support.rest import rest, serving_job
from tests.support.servers import LiveServer, make_settings
from tests.support.sockets import connect_peer, disconnect_handled
from tests.support.tokens import ALICE
from tests.support.waiting import eventually

TIMEOUT = 1.0


@pytest.fixture
def settings() -> Settings:
    return make_settings(worker_timeout_seconds=TIMEOUT, sweeper_interval_seconds=0.2)


def _register(server: LiveServer, room: str, name: str) -> dict[str, str]:
    with rest(server.api, ALICE) as client:
        answer = client.put(
            f"/rooms/{room}/jobs",
            json={"category": "modifiers", "name": name, "schema": {}},
        )
        assert answer.status_code in (200, 201), answer.text
        return dict(answer.json())


def _heartbeats(server: LiveServer) -> dict[str, datetime]:
    """Every worker's last heartbeat, read without making one."""
    with rest(server.api, ALICE) as client:
        items = client.get("/workers", params={"limit": 500}).json()["items"]
    return {
        item["id"]: datetime.fromisoformat(item["last_heartbeat"]) for item in items
    }


def test_a_socket_worker_lives_past_the_timeout_and_a_rest_only_one_expires(
    live_server: LiveServer,
) -> None:
    room = f"room-{uuid.uuid4().hex[:8]}"
    quiet = _register(live_server, room, "Quiet")
    with connect_peer(live_server.url, token=ALICE) as peer:
        joined = _register(live_server, room, "Joined")
        answer = peer.call(
            "join_job_room",
            {"job_name": joined["full_name"], "worker_id": joined["worker_id"]},
        )
        assert answer["ok"] is True, answer
        assert answer["heartbeat_seconds"] == pytest.approx(TIMEOUT / 3)
        first = _heartbeats(live_server)[joined["worker_id"]]

        # No REST heartbeat from either: the socket keeps one alive, the sweeper
        # removes the other once its heartbeat is older than the timeout.
        eventually(
            lambda: quiet["worker_id"] not in _heartbeats(live_server),
            what="the REST-only worker to expire",
        )

        def lived_three_timeouts() -> bool:
            beat = _heartbeats(live_server)[joined["worker_id"]]
            return (beat - first).total_seconds() >= 3 * TIMEOUT

        eventually(lived_three_timeouts, timeout=10, what="three timeouts to pass")
    eventually(lambda: disconnect_handled(live_server, peer), what="the disconnect")
    # The socket's close cleaned it up at once, as before.
    assert joined["worker_id"] not in _heartbeats(live_server)


def _statements(joblib: JobLib) -> float:
    value = joblib.metrics.registry.get_sample_value("joblib_db_statements_total")
    assert value is not None
    return value


@pytest.mark.anyio
async def test_one_statement_keeps_many_workers_alive(
    joblib: JobLib, alice: httpx.AsyncClient
) -> None:
    workers = [
        uuid.UUID((await serving_job(alice, name=f"Job{n}"))[0]) for n in range(20)
    ]
    before = _statements(joblib)
    touched = await joblib.execute(keep_alive, [*workers, uuid.uuid4()])
    assert touched == 20
    # On SQLite a write opens with its own BEGIN IMMEDIATE (the write lock).
    opening = 1 if joblib.database.engine.dialect.name == "sqlite" else 0
    assert _statements(joblib) - before == 1 + opening


@pytest.mark.anyio
async def test_the_process_beats_only_for_workers_of_its_sockets(
    joblib: JobLib, alice: httpx.AsyncClient
) -> None:
    connected = uuid.UUID((await serving_job(alice))[0])
    other = uuid.UUID((await serving_job(alice, name="Other"))[0])
    listed = (await alice.get("/workers")).json()["items"]
    old = {item["id"]: item["last_heartbeat"] for item in listed}
    assert await joblib.socket_heartbeats.beat_once() == 0  # nobody connected
    joblib.socket_heartbeats.watch(lambda: [connected])
    assert await joblib.socket_heartbeats.beat_once() == 1
    listed = (await alice.get("/workers")).json()["items"]
    new = {item["id"]: item["last_heartbeat"] for item in listed}
    assert new[str(connected)] > old[str(connected)]
    assert new[str(other)] == old[str(other)]
