"""Disconnects that lose nothing, in process: policies, requeue, fencing, grace.

A lost task follows its job's `on_disconnect` policy: requeued at its place with
`attempt` + 1 while attempts remain, else failed with the reason as `error_code`.
Reports from a worker that no longer holds the task are refused (409) and change
nothing. A worker whose socket closed keeps its tasks for the grace time. The
server's own shutdown cleans nobody up and answers waiting requests at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import anyio
import httpx
import pytest
import socketio
from sqlalchemy.ext.asyncio import AsyncSession

from joblib_protocol import TaskAvailable, TaskStatusEvent, job_channel, room_channel
from joblib_server import (
    JobLib,
    Outcome,
    Realtime,
    RecordingEmitter,
    Settings,
    Worker,
    cleanup_stale_workers,
    sweep_once,
)
from joblib_server import runtime as joblib_runtime
from joblib_server.auth import Identity
from joblib_server.disconnects import socket_closed
from joblib_server.tables import utcnow
from tests.support import aeventually
from tests.support.rest import (
    JSON,
    ROOM,
    SCHEMA,
    assert_problem,
    claim,
    create_worker,
    events,
    full_name,
    get_task,
    held_claim,
    submit,
    update,
)
from tests.support.rows import row_counts, snapshot, task_row
from tests.support.servers import make_settings

pytestmark = pytest.mark.anyio

# A held claim or long-poll re-checks only after RECHECK and waits at most CAP:
# an answer well before either came from the shutdown, not from a re-check.
RECHECK = 60
CAP = 30
GRACE = 0.3
DEFAULTS = {"action": "fail", "max_attempts": 3, "grace_seconds": 0.0}
REQUEUE = {"action": "requeue", "max_attempts": 2}


@pytest.fixture
def settings() -> Settings:
    return make_settings(
        long_poll_max_wait_seconds=CAP, long_poll_recheck_seconds=RECHECK
    )


async def _register(
    client: httpx.AsyncClient,
    on_disconnect: JSON | None = None,
    *,
    worker_id: str | None = None,
    name: str = "Rotate",
    expect: int = 201,
) -> httpx.Response:
    body: JSON = {"category": "modifiers", "name": name, "schema": SCHEMA}
    if on_disconnect is not None:
        body["on_disconnect"] = on_disconnect
    if worker_id is not None:
        body["worker_id"] = worker_id
    answer = await client.put(f"/rooms/{ROOM}/jobs", json=body)
    assert answer.status_code == expect, answer.text
    return answer


async def _worker_with(
    client: httpx.AsyncClient, on_disconnect: JSON | None = None
) -> str:
    """A fresh worker serving `full_name()` (registering it with the policy)."""
    worker_id = await create_worker(client)
    answer = await client.put(
        f"/rooms/{ROOM}/jobs",
        json={
            "category": "modifiers",
            "name": "Rotate",
            "schema": SCHEMA,
            "worker_id": worker_id,
            **({"on_disconnect": on_disconnect} if on_disconnect else {}),
        },
    )
    assert answer.status_code in (200, 201), answer.text
    return worker_id


async def _running(
    worker: httpx.AsyncClient, submitter: httpx.AsyncClient, policy: JSON | None
) -> tuple[str, str]:
    """A task running on a new worker of a job with `policy`: (task_id, worker_id)."""
    worker_id = await _worker_with(worker, policy)
    task = await submit(submitter, full_name())
    claimed = await claim(worker, worker_id, start=True)
    assert claimed is not None
    assert claimed["id"] == task["id"]
    return str(task["id"]), worker_id


async def _delete(client: httpx.AsyncClient, worker_id: str) -> JSON:
    answer = await client.delete(
        f"/workers/{worker_id}", headers={"Prefer": "return=representation"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["preference-applied"] == "return=representation"
    receipt: JSON = answer.json()
    return receipt


def _status_events(emitter: RecordingEmitter, task_id: str) -> list[TaskStatusEvent]:
    return [
        e.event
        for e in emitter.sent
        if isinstance(e.event, TaskStatusEvent) and e.event.id == task_id
    ]


async def _worker_row(joblib: JobLib, worker_id: str) -> Worker | None:
    async with joblib.database.read() as session:
        return await session.get(Worker, uuid.UUID(worker_id))


# the policy, as registered and as shown


async def test_a_job_without_a_policy_shows_the_server_defaults(
    alice: httpx.AsyncClient,
) -> None:
    job = (await _register(alice)).json()
    assert job["on_disconnect"] == DEFAULTS
    shown = await alice.get(f"/rooms/{ROOM}/jobs/{job['full_name']}")
    assert shown.json()["on_disconnect"] == DEFAULTS


async def test_the_defaults_come_from_the_settings(
    alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    joblib.settings = joblib.settings.model_copy(
        update={
            "disconnect_action": "requeue",
            "disconnect_max_attempts": 7,
            "disconnect_grace_seconds": 1.5,
        }
    )
    job = (await _register(alice)).json()
    expected = {"action": "requeue", "max_attempts": 7, "grace_seconds": 1.5}
    assert job["on_disconnect"] == expected
    shown = await alice.get(f"/rooms/{ROOM}/jobs/{job['full_name']}")
    assert shown.json()["on_disconnect"] == expected


async def test_an_explicit_policy_is_kept_and_shown(alice: httpx.AsyncClient) -> None:
    policy = {"action": "requeue", "max_attempts": 5, "grace_seconds": 2.5}
    job = (await _register(alice, policy)).json()
    assert job["on_disconnect"] == policy
    shown = await alice.get(f"/rooms/{ROOM}/jobs/{job['full_name']}")
    assert shown.json()["on_disconnect"] == policy


async def test_fields_left_out_take_the_defaults_and_later_ones_decide(
    alice: httpx.AsyncClient,
) -> None:
    job = (await _register(alice, {"action": "requeue"})).json()
    assert job["on_disconnect"] == {**DEFAULTS, "action": "requeue"}
    # A later registration sets another field; the one set before stays.
    again = await _register(alice, {"grace_seconds": 4}, expect=200)
    assert again.json()["on_disconnect"] == {
        "action": "requeue",
        "max_attempts": 3,
        "grace_seconds": 4.0,
    }
    # A registration without a policy changes nothing.
    plain = (await _register(alice, expect=200)).json()
    assert plain["on_disconnect"]["grace_seconds"] == 4.0


@pytest.mark.parametrize(
    "policy",
    [
        {"action": "retry"},
        {"action": None, "max_attempts": 0},
        {"max_attempts": 1001},
        {"max_attempts": "many"},
        {"grace_seconds": -1},
        {"grace_seconds": 86401},
        {"action": "requeue", "tries": 3},
        "requeue",
    ],
)
async def test_an_invalid_policy_is_422_and_registers_nothing(
    alice: httpx.AsyncClient, joblib: JobLib, policy: Any
) -> None:
    answer = await alice.put(
        f"/rooms/{ROOM}/jobs",
        json={"category": "modifiers", "name": "Rotate", "on_disconnect": policy},
    )
    body = assert_problem(answer, 422, "validation-error")
    assert any("on_disconnect" in map(str, error["loc"]) for error in body["errors"])
    assert set((await row_counts(joblib)).values()) == {0}


# DELETE /workers/{id}: the receipt, requeue, and running out of attempts


async def test_delete_without_prefer_answers_204_and_no_body(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    task_id, worker_id = await _running(alice, bob, None)
    answer = await alice.delete(f"/workers/{worker_id}")
    assert answer.status_code == 204
    assert answer.content == b""
    assert "preference-applied" not in answer.headers
    task = await get_task(bob, task_id)
    assert (task["status"], task["error_code"]) == ("failed", "worker_removed")


async def test_delete_with_prefer_answers_the_receipt(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    failed_id, worker_id = await _running(alice, bob, None)
    receipt = await _delete(alice, worker_id)
    assert receipt == {
        "worker_id": worker_id,
        "failed": [failed_id],
        "requeued": [],
        "jobs_removed": [full_name()],
    }


async def test_the_receipt_names_requeued_tasks_and_keeps_their_job(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    task_id, worker_id = await _running(alice, bob, REQUEUE)
    receipt = await _delete(alice, worker_id)
    assert receipt == {
        "worker_id": worker_id,
        "failed": [],
        "requeued": [task_id],
        "jobs_removed": [],  # its requeued task waits for a new worker
    }


async def test_deleting_an_idle_worker_gives_an_empty_receipt(
    alice: httpx.AsyncClient,
) -> None:
    worker_id = await create_worker(alice)
    receipt = await _delete(alice, worker_id)
    assert receipt == {
        "worker_id": worker_id,
        "failed": [],
        "requeued": [],
        "jobs_removed": [],
    }


async def test_requeue_puts_the_task_back_at_the_head_of_its_queue(
    alice: httpx.AsyncClient,
    bob: httpx.AsyncClient,
    joblib: JobLib,
    emitter: RecordingEmitter,
) -> None:
    first_id, worker_id = await _running(alice, bob, REQUEUE)
    later = [str((await submit(bob, full_name()))["id"]) for _ in range(2)]
    emitter.clear()

    await _delete(alice, worker_id)

    task = await get_task(bob, first_id)
    assert task["status"] == "pending"
    assert task["attempt"] == 2
    assert task["worker_id"] is None
    assert (task["started_at"], task["completed_at"]) == (None, None)
    assert (task["error"], task["error_code"]) == (None, None)
    assert task["queue_position"] == 1  # its original place, ahead of later tasks
    positions = [(await get_task(bob, t))["queue_position"] for t in later]
    assert positions == [2, 3]
    row = await task_row(joblib, first_id)
    assert (row.status, row.attempt, row.worker_id) == ("pending", 2, None)

    # Announced to the job's workers and to the room's observers.
    [available] = events(emitter, "task_available")
    assert available.room == job_channel(full_name())
    assert available.event == TaskAvailable(
        job_name=full_name(), room_id=ROOM, task_id=first_id
    )
    [pending] = _status_events(emitter, first_id)
    assert pending.status == "pending"
    assert (pending.attempt, pending.queue_position) == (2, 1)
    assert (pending.worker_id, pending.error_code) == (None, None)
    [announced] = [
        e for e in events(emitter, "task_status_event") if e.event is pending
    ]
    assert announced.room == room_channel(ROOM)

    # The next claim takes it before the tasks submitted after it.
    successor = await _worker_with(alice)
    claimed = await claim(alice, successor, start=True)
    assert claimed is not None
    assert (claimed["id"], claimed["attempt"]) == (first_id, 2)
    assert claimed["worker_id"] == successor


async def test_out_of_attempts_the_task_fails_as_worker_removed(
    alice: httpx.AsyncClient,
    bob: httpx.AsyncClient,
    joblib: JobLib,
    emitter: RecordingEmitter,
) -> None:
    task_id, first = await _running(alice, bob, REQUEUE)
    assert (await _delete(alice, first))["requeued"] == [task_id]
    second = await _worker_with(alice)
    claimed = await claim(alice, second, start=True)
    assert claimed is not None
    assert claimed["id"] == task_id
    emitter.clear()

    receipt = await _delete(alice, second)

    assert (receipt["failed"], receipt["requeued"]) == ([task_id], [])
    task = await get_task(bob, task_id)
    assert task["status"] == "failed"
    assert (task["attempt"], task["worker_id"]) == (2, second)
    assert task["error"] == "Worker disconnected"
    assert task["error_code"] == "worker_removed"
    assert task["completed_at"] is not None
    [failed] = _status_events(emitter, task_id)
    assert (failed.status, failed.attempt) == ("failed", 2)
    assert failed.error_code == "worker_removed"
    assert events(emitter, "task_available") == []
    assert (await row_counts(joblib))["joblib_worker"] == 0


async def test_with_one_attempt_a_requeue_job_fails_at_once(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    task_id, worker_id = await _running(
        alice, bob, {"action": "requeue", "max_attempts": 1}
    )
    assert (await _delete(alice, worker_id))["failed"] == [task_id]
    task = await get_task(bob, task_id)
    assert (task["status"], task["attempt"]) == ("failed", 1)


async def test_a_claimed_task_not_yet_running_is_requeued_too(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    worker_id = await _worker_with(alice, REQUEUE)
    task = await submit(bob, full_name())
    await claim(alice, worker_id)
    assert (await _delete(alice, worker_id))["requeued"] == [task["id"]]
    back = await get_task(bob, task["id"])
    assert (back["status"], back["attempt"]) == ("pending", 2)


# fencing: a report from a worker that no longer holds the task


async def test_a_report_from_the_old_worker_is_409_and_changes_nothing(
    alice: httpx.AsyncClient,
    bob: httpx.AsyncClient,
    joblib: JobLib,
    emitter: RecordingEmitter,
) -> None:
    task_id, old = await _running(alice, bob, {"action": "requeue"})
    await _delete(alice, old)
    new = await _worker_with(alice)
    assert (await claim(alice, new, start=True) or {}).get("id") == task_id
    before = await snapshot(joblib)
    emitter.clear()

    for status in ("running", "completed", "failed", "cancelled"):
        answer = await alice.patch(
            f"/tasks/{task_id}", json={"status": status, "worker_id": old}
        )
        body = assert_problem(answer, 409, "task-worker-mismatch")
        assert task_id in body["detail"]
        assert old in body["detail"]

    assert await snapshot(joblib) == before
    assert emitter.sent == []
    # The worker that holds it reports as usual.
    done = await alice.patch(
        f"/tasks/{task_id}", json={"status": "completed", "worker_id": new}
    )
    assert done.status_code == 200, done.text
    assert (done.json()["status"], done.json()["attempt"]) == ("completed", 2)


async def _assert_fenced(
    joblib: JobLib, client: httpx.AsyncClient, task_id: str, worker_id: str
) -> None:
    """A completed report naming `worker_id` is 409 and changes no row."""
    before = await snapshot(joblib)
    answer = await client.patch(
        f"/tasks/{task_id}", json={"status": "completed", "worker_id": worker_id}
    )
    assert_problem(answer, 409, "task-worker-mismatch")
    assert await snapshot(joblib) == before


async def test_a_report_for_a_requeued_task_nobody_holds_is_409(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, joblib: JobLib
) -> None:
    task_id, old = await _running(alice, bob, REQUEUE)
    await _delete(alice, old)
    await _assert_fenced(joblib, alice, task_id, old)


async def test_fencing_comes_before_the_ownership_check(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, joblib: JobLib
) -> None:
    """Even another identity's report names no worker it could change."""
    task_id, _worker = await _running(alice, bob, None)
    stranger = await create_worker(bob)
    await _assert_fenced(joblib, bob, task_id, stranger)


async def test_a_removed_workers_report_on_its_failed_task_is_fenced(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, joblib: JobLib
) -> None:
    """The failed task keeps the worker's id, but the worker is gone: 409, not 403."""
    task_id, worker_id = await _running(alice, bob, None)
    assert (await _delete(alice, worker_id))["failed"] == [task_id]
    await _assert_fenced(joblib, alice, task_id, worker_id)


# error codes


async def test_a_workers_failure_report_is_job_failed(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, emitter: RecordingEmitter
) -> None:
    task_id, worker_id = await _running(alice, bob, REQUEUE)
    emitter.clear()
    answer = await alice.patch(
        f"/tasks/{task_id}",
        json={
            "status": "failed",
            "error": "ValueError: bad angle",
            "worker_id": worker_id,
        },
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["status"], body["error"]) == ("failed", "ValueError: bad angle")
    assert (body["error_code"], body["attempt"]) == ("job_failed", 1)
    [failed] = _status_events(emitter, task_id)
    assert failed.error_code == "job_failed"
    # A failure the worker reports is the job's: never requeued.
    assert (await get_task(bob, task_id))["status"] == "failed"


@pytest.mark.parametrize(
    ("status", "who"), [("completed", "worker"), ("cancelled", "submitter")]
)
async def test_other_endings_carry_no_error_code(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, status: str, who: str
) -> None:
    task_id, _worker_id = await _running(alice, bob, None)
    client = alice if who == "worker" else bob
    ended = await update(client, task_id, status)
    assert (ended["status"], ended["error_code"]) == (status, None)


async def _age_heartbeat(joblib: JobLib, worker_id: str) -> None:
    async with joblib.database.write() as session:
        worker = await session.get_one(Worker, uuid.UUID(worker_id))
        worker.last_heartbeat = utcnow() - timedelta(hours=1)


@pytest.mark.parametrize(
    ("policy", "status", "attempt"),
    [(None, "failed", 1), (REQUEUE, "pending", 2)],
)
async def test_the_sweeper_times_out_a_silent_worker(
    alice: httpx.AsyncClient,
    bob: httpx.AsyncClient,
    joblib: JobLib,
    policy: JSON | None,
    status: str,
    attempt: int,
) -> None:
    task_id, worker_id = await _running(alice, bob, policy)
    await _age_heartbeat(joblib, worker_id)

    swept = await sweep_once(joblib)

    [receipt] = swept.workers
    assert receipt.worker_id == uuid.UUID(worker_id)
    task = await get_task(bob, task_id)
    assert (task["status"], task["attempt"]) == (status, attempt)
    if status == "failed":
        assert receipt.failed == (uuid.UUID(task_id),)
        assert task["error_code"] == "worker_timed_out"
        assert task["error"] == "Worker disconnected"
    else:
        assert receipt.requeued == (uuid.UUID(task_id),)
    assert await _worker_row(joblib, worker_id) is None


async def test_cleanup_stale_workers_leaves_fresh_ones(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, joblib: JobLib
) -> None:
    task_id, worker_id = await _running(alice, bob, None)
    receipts = await joblib.execute(cleanup_stale_workers, 60)
    assert receipts == []
    assert (await get_task(bob, task_id))["status"] == "running"
    assert await _worker_row(joblib, worker_id) is not None


# grace: a worker whose socket closed keeps its tasks for a while


@pytest.fixture
def realtime(joblib: JobLib) -> Realtime:
    """joblib's Socket.IO handlers on a server with no real connections."""
    return Realtime(joblib, socketio.AsyncServer(async_mode="asgi"))


async def _socket_worker(realtime: Realtime, worker_id: str) -> str:
    """A new connection, authenticated as alice, joins the job for the worker.

    Returns its sid. The connection is registered with python-socketio's manager
    as a handshake would, so that joining can put it in the job's room.
    """
    sid: str = await realtime.sio.manager.connect(f"eio-{uuid.uuid4().hex}", "/")
    realtime.accept(sid, Identity("alice"))
    answer = await realtime.join_job_room(
        sid, {"job_name": full_name(), "worker_id": worker_id}
    )
    assert answer["ok"] is True, answer
    return sid


GraceResults = list[object]


@pytest.fixture
def grace_results(monkeypatch: pytest.MonkeyPatch) -> GraceResults:
    """What each grace timer found when it ran out (None: the worker was back).

    A result shows up once its transaction has committed and its events have
    gone out, so a test that sees it reads the finished state.
    """
    results: GraceResults = []
    found: GraceResults = []
    expire = joblib_runtime.grace_expired
    expire_after = joblib_runtime.JobLib._expire_after

    async def recorded(session: AsyncSession, *args: Any) -> Outcome[Any]:
        outcome = await expire(session, *args)
        found.append(outcome.value)
        return outcome

    async def timer(self: JobLib, *args: Any) -> None:
        await expire_after(self, *args)
        results.extend(found)
        found.clear()

    monkeypatch.setattr(joblib_runtime, "grace_expired", recorded)
    monkeypatch.setattr(joblib_runtime.JobLib, "_expire_after", timer)
    return results


@pytest.mark.parametrize(
    ("policy", "status", "attempt"),
    [
        ({"grace_seconds": GRACE}, "failed", 1),
        ({"grace_seconds": GRACE, **REQUEUE}, "pending", 2),
    ],
)
async def test_without_a_sign_of_life_the_grace_runs_out(
    alice: httpx.AsyncClient,
    bob: httpx.AsyncClient,
    joblib: JobLib,
    realtime: Realtime,
    emitter: RecordingEmitter,
    grace_results: GraceResults,
    policy: JSON,
    status: str,
    attempt: int,
) -> None:
    task_id, worker_id = await _running(alice, bob, policy)
    sid = await _socket_worker(realtime, worker_id)
    emitter.clear()
    closed_at = anyio.current_time()

    await realtime.cleanup_connection(sid)

    # Kept for now: the task runs on, the worker is marked disconnected.
    assert (await get_task(bob, task_id))["status"] == "running"
    worker = await _worker_row(joblib, worker_id)
    assert worker is not None
    assert worker.disconnected_at is not None
    assert emitter.sent == []

    await aeventually(lambda: grace_results, what="the grace timer")
    assert anyio.current_time() - closed_at >= GRACE
    task = await get_task(bob, task_id)
    assert (task["status"], task["attempt"]) == (status, attempt)
    if status == "failed":
        assert task["error_code"] == "worker_disconnected"
    assert await _worker_row(joblib, worker_id) is None
    assert [e.status for e in _status_events(emitter, task_id)] == [status]


async def _heartbeat(client: httpx.AsyncClient, worker_id: str) -> None:
    answer = await client.patch(f"/workers/{worker_id}")
    assert answer.status_code == 200, answer.text


async def _report(client: httpx.AsyncClient, task_id: str, worker_id: str) -> None:
    answer = await client.patch(
        f"/tasks/{task_id}", json={"status": "running", "worker_id": worker_id}
    )
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("sign_of_life", ["heartbeat", "claim", "report", "join"])
async def test_a_sign_of_life_ends_the_grace(
    alice: httpx.AsyncClient,
    bob: httpx.AsyncClient,
    joblib: JobLib,
    realtime: Realtime,
    grace_results: GraceResults,
    sign_of_life: str,
) -> None:
    task_id, worker_id = await _running(alice, bob, {"grace_seconds": GRACE})
    # A second task, claimed and not started, for the report to start.
    second = await submit(bob, full_name())
    assert (await claim(alice, worker_id) or {}).get("id") == second["id"]
    sid = await _socket_worker(realtime, worker_id)
    await realtime.cleanup_connection(sid)
    worker = await _worker_row(joblib, worker_id)
    assert worker is not None
    assert worker.disconnected_at is not None

    back: dict[str, Callable[[], Awaitable[object]]] = {
        "heartbeat": lambda: _heartbeat(alice, worker_id),
        "claim": lambda: claim(alice, worker_id),
        "report": lambda: _report(alice, str(second["id"]), worker_id),
        "join": lambda: _socket_worker(realtime, worker_id),
    }
    await back[sign_of_life]()
    worker = await _worker_row(joblib, worker_id)
    assert worker is not None
    assert worker.disconnected_at is None

    await aeventually(lambda: grace_results, what="the grace timer")
    assert grace_results == [None]  # found the worker back: did nothing
    assert (await get_task(bob, task_id))["status"] == "running"
    assert await _worker_row(joblib, worker_id) is not None


async def test_a_socket_older_than_the_workers_newest_join_cleans_nothing(
    alice: httpx.AsyncClient,
    bob: httpx.AsyncClient,
    joblib: JobLib,
    realtime: Realtime,
    emitter: RecordingEmitter,
) -> None:
    task_id, worker_id = await _running(alice, bob, None)
    sid_old = await _socket_worker(realtime, worker_id)
    sid_new = await _socket_worker(realtime, worker_id)  # reconnected meanwhile
    emitter.clear()

    await realtime.cleanup_connection(sid_old)

    assert (await get_task(bob, task_id))["status"] == "running"
    worker = await _worker_row(joblib, worker_id)
    assert worker is not None
    assert worker.disconnected_at is None
    assert emitter.sent == []
    # The newest socket closing cleans up (grace 0: at once).
    await realtime.cleanup_connection(sid_new)
    task = await get_task(bob, task_id)
    assert (task["status"], task["error_code"]) == ("failed", "worker_disconnected")


async def test_the_sweeper_ends_a_grace_whose_timer_is_gone(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, joblib: JobLib, realtime: Realtime
) -> None:
    """A server that stopped while a worker was in its grace left no timer behind;
    the `disconnected_at` in the database lets any process's sweeper finish it."""
    task_id, worker_id = await _running(alice, bob, {"grace_seconds": GRACE})
    sid = await _socket_worker(realtime, worker_id)
    epoch = realtime.connections[sid].workers[uuid.UUID(worker_id)]
    # The closing socket's operation without its timer.
    assert await joblib.execute(socket_closed, uuid.UUID(worker_id), epoch) == GRACE
    assert not (await sweep_once(joblib)).workers  # still within the grace

    async with joblib.database.write() as session:
        worker = await session.get_one(Worker, uuid.UUID(worker_id))
        assert worker.disconnected_at is not None
        worker.disconnected_at -= timedelta(seconds=GRACE)

    [receipt] = (await sweep_once(joblib)).workers
    assert receipt.failed == (uuid.UUID(task_id),)
    task = await get_task(bob, task_id)
    # Its heartbeat is fresh: it went away with its socket, it did not time out.
    assert task["error_code"] == "worker_disconnected"


# the server's own shutdown


async def _long_poll(
    client: httpx.AsyncClient, task_id: str, answers: list[httpx.Response]
) -> None:
    answers.append(
        await client.get(f"/tasks/{task_id}", headers={"Prefer": f"wait={CAP}"})
    )


async def test_shutdown_answers_held_claims_and_long_polls_at_once(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, joblib: JobLib
) -> None:
    task_id, _busy = await _running(alice, bob, None)
    idle = await _worker_with(alice)
    claims: list[httpx.Response] = []
    polls: list[httpx.Response] = []
    with anyio.fail_after(RECHECK / 4):
        async with anyio.create_task_group() as group:
            group.start_soon(held_claim, alice, idle, claims, CAP)
            group.start_soon(_long_poll, bob, task_id, polls)
            await aeventually(
                lambda: len(joblib.claims) == 1 and len(joblib.waiters) == 1,
                what="a held claim and a long-poll",
            )
            started = anyio.current_time()
            await joblib.begin_shutdown()
        answered_in = anyio.current_time() - started
    assert answered_in < 2, answered_in
    [held] = claims
    assert held.status_code == 200, held.text
    assert held.json() == {"task": None}
    [poll] = polls
    assert poll.status_code == 200, poll.text
    assert (poll.json()["id"], poll.json()["status"]) == (task_id, "running")

    # Requests that come during the shutdown are not held either.
    with anyio.fail_after(2):
        again = await alice.post(
            "/tasks/claim",
            json={"worker_id": idle},
            headers={"Prefer": f"wait={CAP}"},
        )
        polled = await bob.get(f"/tasks/{task_id}", headers={"Prefer": f"wait={CAP}"})
    assert again.json() == {"task": None}
    assert polled.json()["status"] == "running"


async def test_closing_sockets_during_shutdown_clean_nobody_up(
    alice: httpx.AsyncClient,
    bob: httpx.AsyncClient,
    joblib: JobLib,
    realtime: Realtime,
    emitter: RecordingEmitter,
) -> None:
    task_id, worker_id = await _running(alice, bob, None)
    sid = await _socket_worker(realtime, worker_id)
    before = await snapshot(joblib)
    emitter.clear()

    await joblib.begin_shutdown()
    await realtime.cleanup_connection(sid)

    assert await snapshot(joblib) == before  # the worker row and its task as they were
    worker = await _worker_row(joblib, worker_id)
    assert worker is not None
    assert worker.disconnected_at is None
    assert (await task_row(joblib, task_id)).status == "running"
    assert emitter.sent == []
    assert sid not in realtime.connections
