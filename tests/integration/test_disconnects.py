"""Disconnects that lose nothing, with real processes, real sockets and real kills.

A `joblib-server serve` process on each database; workers are `JobManager`
processes (tests/support/manager_worker.py) whose tasks wait on a gate the test
opens, so each step happens when the test says and not after a guessed sleep. A
TCP proxy between a worker's socket and the server makes the network blips.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from joblib_server import Database, Worker
from tests.support.processes import (
    ScriptProcess,
    ServerProcess,
    manager_worker,
    restartable_server,
    server_env,
)
from tests.support.proxy import TcpProxy, tcp_proxy
from tests.support.rest import assert_problem, rest
from tests.support.sockets import Event, Peer, connect_peer
from tests.support.tokens import ADMIN, ALICE, BOB
from tests.support.waiting import eventually

# A server and one to three worker processes each: seconds of start-up per test.
pytestmark = pytest.mark.slow

REQUEUE = {"action": "requeue", "max_attempts": 2}


@pytest.fixture
def observer(server: ServerProcess, room: str) -> Iterator[Peer]:
    """An admin socket observing the room, straight to the server."""
    with connect_peer(server.url, token=ADMIN, rooms=(room,)) as peer:
        yield peer


@pytest.fixture
def gate(tmp_path: Path) -> Path:
    """Tasks submitted with `{"gate": ...}` finish once `open_gate` lets them."""
    folder = tmp_path / "gate"
    folder.mkdir()
    return folder


def open_gate(gate: Path, worker: ScriptProcess) -> None:
    """Let the gated task of this worker process finish."""
    (gate / str(worker.pid)).touch()


def submit(server: ServerProcess, room: str, name: str, **payload: Any) -> str:
    with rest(server.api, BOB) as client:
        answer = client.post(
            f"/rooms/{room}/tasks/{room}:modifiers:{name}", json={"payload": payload}
        )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def task(server: ServerProcess, task_id: str) -> dict[str, Any]:
    with rest(server.api, BOB) as client:
        answer = client.get(f"/tasks/{task_id}")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def settled(server: ServerProcess, task_id: str, timeout: float = 20) -> dict[str, Any]:
    """The task once it is completed, failed or cancelled (a long-poll)."""
    with rest(server.api, BOB) as client:
        answer = client.get(
            f"/tasks/{task_id}", headers={"Prefer": f"wait={int(timeout)}"}
        )
    body = dict(answer.json())
    assert body["status"] in ("completed", "failed", "cancelled"), body
    return body


def status_event(task_id: str, status: str, **fields: Any) -> Any:
    """Match the task's `task_status_event` of `status` (and `fields`)."""

    def match(event: Event) -> bool:
        name, payload = event
        return bool(
            name == "task_status_event"
            and payload["id"] == task_id
            and payload["status"] == status
            and all(payload.get(key) == value for key, value in fields.items())
        )

    return match


def statuses(observer: Peer, task_id: str) -> list[str]:
    with observer.changed:
        return [
            payload["status"]
            for name, payload in observer.events
            if name == "task_status_event" and payload["id"] == task_id
        ]


def disconnected_at(database_url: str, worker_id: str) -> datetime | str | None:
    """The worker's `disconnected_at` as stored; "gone" once its row is deleted."""

    async def read() -> datetime | str | None:
        database = Database.from_url(database_url)
        try:
            async with database.read() as session:
                worker = await session.get(Worker, uuid.UUID(worker_id))
                return "gone" if worker is None else worker.disconnected_at
        finally:
            await database.dispose()

    return asyncio.run(read())


def registered(worker: ScriptProcess) -> str:
    return str(worker.event("registered")["worker_id"])


# network blips


@contextmanager
def blipping_worker(
    server: ServerProcess,
    room: str,
    observer: Peer,
    gate: Path,
    tmp_path: Path,
    *,
    grace: float,
) -> Iterator[tuple[TcpProxy, ScriptProcess, str, str]]:
    """A worker whose socket goes through a proxy, running a gated task of job Blip.

    Yields the proxy, the worker process, its worker id and the running task's id.
    """
    with (
        tcp_proxy(server.port) as proxy,
        manager_worker(
            server.url, ALICE, room, "Blip", tmp_path / "worker.log",
            socket_url=proxy.url, policy={"grace_seconds": grace},
        ) as worker,
    ):  # fmt: skip
        worker_id = registered(worker)
        task_id = submit(server, room, "Blip", gate=str(gate))
        worker.event("claimed", task_id=task_id)
        observer.wait_for(status_event(task_id, "running"))
        yield proxy, worker, worker_id, task_id


def test_a_blip_within_the_grace_loses_nothing(
    server: ServerProcess,
    database_url: str,
    room: str,
    observer: Peer,
    gate: Path,
    tmp_path: Path,
) -> None:
    with blipping_worker(server, room, observer, gate, tmp_path, grace=5) as (
        proxy,
        worker,
        worker_id,
        task_id,
    ):
        connections = proxy.accepted

        proxy.cut(1.0)  # its socket drops, and cannot come back for a second

        eventually(
            lambda: disconnected_at(database_url, worker_id) not in (None, "gone"),
            what="the server to see the worker's socket drop",
        )
        eventually(
            lambda: (
                proxy.accepted > connections
                and disconnected_at(database_url, worker_id) is None
            ),
            what="the worker to reconnect and join again",
        )
        open_gate(gate, worker)
        done = worker.event("done", task_id=task_id)

        assert done["status"] == "completed"
        assert done["worker_id"] == worker_id
        assert worker.alive
    row = settled(server, task_id)
    assert (row["status"], row["attempt"]) == ("completed", 1)
    assert (row["worker_id"], row["error_code"]) == (worker_id, None)
    assert statuses(observer, task_id) == ["pending", "claimed", "running", "completed"]


def test_a_blip_without_grace_fails_the_task_and_the_worker_goes_on(
    server: ServerProcess,
    database_url: str,
    room: str,
    observer: Peer,
    gate: Path,
    tmp_path: Path,
) -> None:
    with blipping_worker(server, room, observer, gate, tmp_path, grace=0) as (
        proxy,
        worker,
        worker_id,
        lost,
    ):
        proxy.cut(1.0)

        _, failed = observer.wait_for(status_event(lost, "failed"))
        assert failed["error_code"] == "worker_disconnected"
        assert failed["error"] == "Worker disconnected"
        assert failed["worker_id"] == worker_id
        assert disconnected_at(database_url, worker_id) == "gone"

        # The job's code still finishes; its report changes nothing.
        open_gate(gate, worker)
        worker.event("done", task_id=lost)
        assert settled(server, lost)["status"] == "failed"

        # The process lives on as a new worker and takes the next task.
        def serving() -> list[str]:
            with rest(server.api, BOB) as client:
                job = client.get(f"/rooms/{room}/jobs/{room}:modifiers:Blip")
            return job.json().get("workers", []) if job.status_code == 200 else []

        [new_id] = eventually(serving, what="the worker to register again")
        assert new_id != worker_id
        following = submit(server, room, "Blip")
        done = worker.event("done", task_id=following)
        assert (done["status"], done["worker_id"]) == ("completed", new_id)
        assert worker.alive
    row = settled(server, following)
    assert (row["status"], row["worker_id"]) == ("completed", new_id)


# requeue and fencing


def _fenced_report(server: ServerProcess, task_id: str, worker_id: str) -> None:
    """The first worker's id reports the task completed: refused, nothing changes."""
    before = task(server, task_id)
    with rest(server.api, ALICE) as client:
        answer = client.patch(
            f"/tasks/{task_id}", json={"status": "completed", "worker_id": worker_id}
        )
    assert_problem(answer, 409, "task-worker-mismatch")
    assert task(server, task_id) == before


@pytest.mark.parametrize("second", ["completes", "is killed too"])
def test_a_killed_workers_task_is_requeued_and_claimed_again(
    server: ServerProcess,
    room: str,
    observer: Peer,
    gate: Path,
    tmp_path: Path,
    second: str,
) -> None:
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    options: dict[str, Any] = {"policy": REQUEUE, "ledger": ledger}
    with manager_worker(
        server.url, ALICE, room, "Again", tmp_path / "first.log", **options
    ) as first:
        first_id = registered(first)
        task_id = submit(server, room, "Again", gate=str(gate))
        first.event("claimed", task_id=task_id)
        with manager_worker(
            server.url, ALICE, room, "Again", tmp_path / "second.log", **options
        ) as successor:
            successor_id = registered(successor)

            first.kill()

            _, pending = observer.wait_for(status_event(task_id, "pending", attempt=2))
            assert pending["worker_id"] is None
            assert pending["queue_position"] == 1
            successor.event("claimed", task_id=task_id)
            running = task(server, task_id)
            assert (running["status"], running["attempt"]) == ("running", 2)
            assert running["worker_id"] == successor_id
            _fenced_report(server, task_id, first_id)

            if second == "completes":
                open_gate(gate, successor)
                assert successor.event("done", task_id=task_id)["status"] == "completed"
            else:
                successor.kill()
    row = settled(server, task_id)
    assert (row["attempt"], row["worker_id"]) == (2, successor_id)
    if second == "completes":
        assert (row["status"], row["error_code"]) == ("completed", None)
        assert (ledger / task_id).read_text().split() == [str(successor.pid)]
    else:
        assert (row["status"], row["error_code"]) == ("failed", "worker_disconnected")
        assert row["error"] == "Worker disconnected"
        assert not (ledger / task_id).exists()
    seen = statuses(observer, task_id)
    assert seen.count("pending") == 2  # submitted, then requeued once only
    assert seen[-1] == row["status"]


def test_a_revived_worker_cannot_report_a_task_given_to_another(
    server: ServerProcess, room: str, observer: Peer, gate: Path, tmp_path: Path
) -> None:
    """A frozen worker loses its socket and its task; thawed, it finishes the job's
    code and reports, as the same identity as the worker that holds the task now.
    The report is refused (task-worker-mismatch) and the process goes on."""
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    options: dict[str, Any] = {"policy": {"action": "requeue"}, "ledger": ledger}
    with (
        tcp_proxy(server.port) as proxy,
        manager_worker(
            server.url, ALICE, room, "Fenced", tmp_path / "frozen.log",
            socket_url=proxy.url, **options,
        ) as frozen,
    ):  # fmt: skip
        frozen_id = registered(frozen)
        task_id = submit(server, room, "Fenced", gate=str(gate))
        frozen.event("claimed", task_id=task_id)
        with manager_worker(
            server.url, ALICE, room, "Fenced", tmp_path / "successor.log",
            **options,
        ) as successor:  # fmt: skip
            successor_id = registered(successor)

            frozen.signal(signal.SIGSTOP)
            proxy.cut()  # the frozen worker's socket drops: the task is requeued
            successor.event("claimed", task_id=task_id)
            frozen.signal(signal.SIGCONT)

            open_gate(gate, frozen)
            frozen.event("ran", task_id=task_id)
            frozen.event("done", task_id=task_id)  # refused, and it goes on
            assert frozen.alive
            # The refusal it logged names the problem type it was answered.
            assert "task-worker-mismatch" in frozen.log.read_text()
            held = task(server, task_id)
            assert (held["status"], held["attempt"]) == ("running", 2)
            assert held["worker_id"] == successor_id
            assert "completed" not in statuses(observer, task_id)
            _fenced_report(server, task_id, frozen_id)

            open_gate(gate, successor)
            assert successor.event("done", task_id=task_id)["status"] == "completed"
    row = settled(server, task_id)
    assert (row["status"], row["attempt"]) == ("completed", 2)
    assert row["worker_id"] == successor_id
    # Both ran the job's code; only the worker holding the task could report it.
    ran = sorted((ledger / task_id).read_text().split())
    assert ran == sorted([str(frozen.pid), str(successor.pid)])
    assert statuses(observer, task_id).count("completed") == 1


# every error code from its real cause


def test_every_error_code_comes_from_its_real_cause(
    database_url: str, room: str, gate: Path, tmp_path: Path
) -> None:
    env = server_env(
        database_url, worker_timeout_seconds=3, sweeper_interval_seconds=0.25
    )
    lively: dict[str, Any] = {"heartbeat": 0.5}  # well within the 3 s timeout
    with (
        restartable_server(env, tmp_path / "server.log") as server,
        rest(server.api, ALICE) as silent,
        manager_worker(
            server.url, ALICE, room, "Killed", tmp_path / "k.log", **lively
        ) as killed,
        manager_worker(
            server.url, ALICE, room, "Removed", tmp_path / "r.log", **lively
        ) as removed,
        manager_worker(
            server.url, ALICE, room, "Failing", tmp_path / "f.log", **lively
        ) as failing,
    ):
        # A REST-only worker claims a task, then never heartbeats again.
        job = silent.put(
            f"/rooms/{room}/jobs",
            json={"category": "modifiers", "name": "Silent", "schema": {}},
        ).json()
        timed_out = submit(server, room, "Silent")
        claimed = silent.post(
            "/tasks/claim", json={"worker_id": job["worker_id"], "start": True}
        ).json()["task"]
        assert claimed["id"] == timed_out
        [last_heartbeat] = [
            worker["last_heartbeat"]
            for worker in silent.get("/workers").json()["items"]
            if worker["id"] == job["worker_id"]
        ]

        registered(killed)
        disconnected = submit(server, room, "Killed", gate=str(gate))
        killed.event("claimed", task_id=disconnected)
        killed.kill()

        removed_id = registered(removed)
        deleted = submit(server, room, "Removed", gate=str(gate))
        removed.event("claimed", task_id=deleted)
        with rest(server.api, ADMIN) as admin:
            answer = admin.delete(
                f"/workers/{removed_id}", headers={"Prefer": "return=representation"}
            )
        assert answer.status_code == 200, answer.text
        assert answer.json()["failed"] == [deleted]

        registered(failing)
        reported = submit(server, room, "Failing", fail="boom")
        assert failing.event("done", task_id=reported)["status"] == "failed"

        outcomes = {
            task_id: settled(server, task_id)
            for task_id in (disconnected, deleted, reported, timed_out)
        }
    expected = {
        disconnected: ("worker_disconnected", "Worker disconnected"),
        deleted: ("worker_removed", "Worker disconnected"),
        reported: ("job_failed", "RuntimeError: boom"),
        timed_out: ("worker_timed_out", "Worker disconnected"),
    }
    for task_id, (code, error) in expected.items():
        row = outcomes[task_id]
        assert row["status"] == "failed", row
        assert (row["error_code"], row["error"]) == (code, error), row
        assert row["attempt"] == 1
    # Swept for silence only once its last sign of life (the claim) was 3 s old.
    silent_for = datetime.fromisoformat(
        outcomes[timed_out]["completed_at"]
    ) - datetime.fromisoformat(last_heartbeat)
    assert silent_for.total_seconds() >= 3
