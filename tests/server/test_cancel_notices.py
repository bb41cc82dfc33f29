"""A cancel reaches the worker holding the task: `task_cancelled` on its socket, and
the heartbeat answer for a worker without one."""

from __future__ import annotations

import uuid

import httpx
import pytest

from joblib_protocol import CancelReason, TaskCancelled, worker_channel
from joblib_server import RecordingEmitter
from tests.support.rest import (
    JSON,
    ROOM,
    claimed_task,
    full_name,
    rest,
    submit,
    update,
)
from tests.support.servers import LiveServer
from tests.support.sockets import Peer, connect_peer
from tests.support.tokens import ALICE, BOB

pytestmark = pytest.mark.anyio


def _notices(emitter: RecordingEmitter) -> list[tuple[TaskCancelled, str]]:
    return [
        (e.event, e.room) for e in emitter.sent if isinstance(e.event, TaskCancelled)
    ]


@pytest.mark.parametrize("start", [False, True], ids=["claimed", "running"])
async def test_cancelling_a_held_task_tells_its_worker(
    alice: httpx.AsyncClient,
    bob: httpx.AsyncClient,
    emitter: RecordingEmitter,
    start: bool,
) -> None:
    task_id, worker_id = await claimed_task(alice, bob, start=start)
    await update(bob, task_id, "cancelled")
    notice = TaskCancelled(
        task_id=task_id, job_name=full_name(), reason=CancelReason.CANCELLED
    )
    assert _notices(emitter) == [(notice, worker_channel(worker_id))]


async def test_cancelling_a_pending_task_tells_nobody(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, emitter: RecordingEmitter
) -> None:
    job = await alice.put(
        "/rooms/room1/jobs",
        json={"category": "modifiers", "name": "Rotate", "schema": {}},
    )
    task = await submit(bob, job.json()["full_name"])
    await update(bob, task["id"], "cancelled")
    assert _notices(emitter) == []


async def test_the_heartbeat_answer_lists_the_held_tasks_to_stop(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    cancelled, worker_id = await claimed_task(alice, bob, start=True)
    await update(bob, cancelled, "cancelled")
    running = await submit(bob, full_name())
    claimed = await alice.post(
        "/tasks/claim", json={"worker_id": worker_id, "start": True}
    )
    assert claimed.json()["task"]["id"] == running["id"]
    unknown = str(uuid.uuid4())

    beat = await alice.patch(
        f"/workers/{worker_id}", json={"tasks": [cancelled, running["id"], unknown]}
    )
    assert beat.status_code == 200, beat.text
    assert sorted(beat.json()["cancelled"]) == sorted([cancelled, unknown])
    # The running task it listed is still its own, and still running.
    assert (await bob.get(f"/tasks/{running['id']}")).json()["status"] == "running"
    # A heartbeat that lists nothing is told nothing.
    bare = await alice.patch(f"/workers/{worker_id}")
    assert bare.json()["cancelled"] == []


def _joined_worker(server: LiveServer, peer: Peer, token: str, job: str) -> JSON:
    """Register `job` for a new worker of `token`'s and join its room on `peer`."""
    with rest(server.api, token) as client:
        answer = client.put(
            f"/rooms/{ROOM}/jobs",
            json={"category": "modifiers", "name": job, "schema": {}},
        )
    registered: JSON = answer.json()
    joined = peer.call(
        "join_job_room",
        {"job_name": registered["full_name"], "worker_id": registered["worker_id"]},
    )
    assert joined["ok"] is True, joined
    return registered


def test_task_cancelled_reaches_only_the_holding_workers_socket(
    live_server: LiveServer,
) -> None:
    with (
        connect_peer(live_server.url, header_token=ALICE) as holder,
        connect_peer(live_server.url, header_token=BOB) as other,
    ):
        held = _joined_worker(live_server, holder, ALICE, "Held")
        elsewhere = _joined_worker(live_server, other, BOB, "Other")
        with rest(live_server.api, ALICE) as alice, rest(live_server.api, BOB) as bob:
            submitted = bob.post(f"/rooms/{ROOM}/tasks/{held['full_name']}", json={})
            task_id = submitted.json()["id"]
            claimed = alice.post(
                "/tasks/claim", json={"worker_id": held["worker_id"], "start": True}
            )
            assert claimed.json()["task"]["id"] == task_id
            cancel = bob.patch(f"/tasks/{task_id}", json={"status": "cancelled"})
            assert cancel.status_code == 200, cancel.text
            _, payload = holder.wait_for(lambda e: e[0] == "task_cancelled")
            assert payload == {
                "task_id": task_id,
                "job_name": held["full_name"],
                "reason": "cancelled",
            }
            # Events leave in commit order: once the other worker hears of a task
            # submitted after the cancel, a notice for it would have come first.
            later = bob.post(f"/rooms/{ROOM}/tasks/{elsewhere['full_name']}", json={})
            later_id = later.json()["id"]
            other.wait_for(
                lambda e: e[0] == "task_available" and e[1]["task_id"] == later_id
            )
    assert not [e for e in other.events if e[0] == "task_cancelled"]
