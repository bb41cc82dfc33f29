"""Progress: `PUT /tasks/{id}/progress`, its throttled `task_progress_event`s, and
what a real observer's socket receives."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

from joblib_protocol import (
    Emission,
    TaskProgress,
    TaskProgressEvent,
    TaskStatus,
    TaskStatusEvent,
    room_channel,
)
from joblib_server import JobLib, RecordingEmitter, RoomPatterns
from joblib_server.progress import ProgressThrottle
from tests.support.rest import (
    ROOM,
    assert_problem,
    claimed_task,
    events,
    get_task,
    rest,
    update,
)
from tests.support.rows import snapshot
from tests.support.servers import LiveServer
from tests.support.sockets import Peer, connect_peer
from tests.support.tokens import ADMIN, ALICE, BOB
from tests.support.waiting import aeventually

pytestmark = pytest.mark.anyio

# The throttle's unit tests: a long interval where only its start matters, a
# short one where its end must come.
NEVER = 60.0
SHORT = 0.05


class _Frozen(TaskProgress, frozen=True):
    """Hashable, as the server's own progress events are."""


def _progress(task: str, current: float) -> Emission:
    event = TaskProgressEvent(
        id=task, room_id=ROOM, progress=_Frozen(current=current, total=100)
    )
    return Emission(event, room_channel(ROOM))


def _currents(sent: list[Emission]) -> list[tuple[str, float]]:
    return [
        (e.event.id, e.event.progress.current)
        for e in sent
        if isinstance(e.event, TaskProgressEvent)
    ]


# The throttle on its own.


async def test_the_first_event_goes_out_at_once_and_the_rest_wait() -> None:
    recorder = RecordingEmitter()
    throttle = ProgressThrottle(recorder.emit, interval=NEVER)
    for current in range(5):
        await throttle.offer(_progress("t1", current))
    assert _currents(recorder.sent) == [("t1", 0)]
    assert len(throttle) == 1  # only the latest is kept
    throttle.close()


async def test_the_latest_goes_out_when_the_interval_ends() -> None:
    recorder = RecordingEmitter()
    throttle = ProgressThrottle(recorder.emit, interval=SHORT)
    for current in range(5):
        await throttle.offer(_progress("t1", current))
    await aeventually(lambda: len(recorder.sent) == 2, what="the latest event")
    assert _currents(recorder.sent) == [("t1", 0), ("t1", 4)]
    assert len(throttle) == 0


async def test_tasks_are_throttled_each_on_its_own() -> None:
    recorder = RecordingEmitter()
    throttle = ProgressThrottle(recorder.emit, interval=NEVER)
    for task in ("t1", "t2", "t1", "t2", "t3"):
        await throttle.offer(_progress(task, 1))
    assert _currents(recorder.sent) == [("t1", 1), ("t2", 1), ("t3", 1)]
    throttle.close()


async def test_a_steady_stream_is_held_to_one_event_per_interval() -> None:
    recorder = RecordingEmitter()
    interval = 0.02
    throttle = ProgressThrottle(recorder.emit, interval=interval)
    started = time.monotonic()
    current = 0
    while time.monotonic() - started < 10 * interval:
        current += 1
        await throttle.offer(_progress("t1", current))
        await anyio.lowlevel.checkpoint()  # let the timer run
    elapsed = time.monotonic() - started
    await aeventually(lambda: len(throttle) == 0, what="the last event")
    sent = _currents(recorder.sent)
    assert sent[-1] == ("t1", current)
    assert len(sent) <= elapsed / interval + 2
    assert current > 3 * len(sent)  # many were coalesced


async def test_finish_hands_over_the_pending_event_and_drops_later_ones() -> None:
    recorder = RecordingEmitter()
    throttle = ProgressThrottle(recorder.emit, interval=NEVER)
    await throttle.offer(_progress("t1", 1))
    await throttle.offer(_progress("t1", 2))
    await throttle.offer(_progress("t2", 1))

    last = throttle.finish(["t1", "t2"])

    assert _currents(last) == [("t1", 2)]  # t2's only event went out already
    assert len(throttle) == 0
    await throttle.offer(_progress("t1", 3))  # committed before the finish
    assert _currents(recorder.sent) == [("t1", 1), ("t2", 1)]


async def test_nothing_is_sent_once_the_server_stops() -> None:
    recorder = RecordingEmitter()
    running = True
    throttle = ProgressThrottle(recorder.emit, interval=SHORT, running=lambda: running)
    await throttle.offer(_progress("t1", 1))
    await throttle.offer(_progress("t1", 2))
    running = False
    # The timer fires, sends nothing and drops what was pending.
    await aeventually(lambda: len(throttle) == 0, what="the timer")
    assert _currents(recorder.sent) == [("t1", 1)]


async def test_a_failing_emitter_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(batch: list[Emission]) -> None:
        raise RuntimeError("socket gone")

    throttle = ProgressThrottle(broken, interval=NEVER)
    await throttle.offer(_progress("t1", 1))
    assert "emitting 1 progress events failed" in caplog.text


# Over REST, in process.


async def _running(
    worker: httpx.AsyncClient, submitter: httpx.AsyncClient
) -> tuple[str, str]:
    return await claimed_task(worker, submitter, start=True)


async def _report(
    client: httpx.AsyncClient, task_id: str, **body: Any
) -> httpx.Response:
    return await client.put(f"/tasks/{task_id}/progress", json=body)


async def test_the_worker_reports_and_everyone_sees_the_latest(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, emitter: RecordingEmitter
) -> None:
    task_id, worker_id = await _running(alice, bob)
    answer = await _report(
        alice, task_id, current=3, total=10, message="meshing", worker_id=worker_id
    )
    assert answer.status_code == 204, answer.text
    assert answer.content == b""
    expected = {"current": 3.0, "total": 10.0, "message": "meshing"}
    assert (await get_task(bob, task_id))["progress"] == expected
    [sent] = events(emitter, "task_progress_event")
    assert sent.room == room_channel(ROOM)
    assert sent.event.payload() == {
        "id": task_id,
        "room_id": ROOM,
        "progress": expected,
    }
    listed = (await bob.get(f"/rooms/{ROOM}/tasks")).json()["items"]
    assert [task["progress"] for task in listed] == [expected]


async def test_only_current_is_needed_and_an_admin_may_report(
    alice: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    task_id, _ = await _running(alice, alice)
    assert (await _report(admin, task_id, current=0)).status_code == 204
    task = await get_task(alice, task_id)
    assert task["progress"] == {"current": 0.0, "total": None, "message": None}


async def test_the_last_progress_goes_out_before_the_task_finishes(
    alice: httpx.AsyncClient, emitter: RecordingEmitter
) -> None:
    task_id, _ = await _running(alice, alice)
    for current in range(1, 6):
        assert (await _report(alice, task_id, current=current)).status_code == 204
    await update(alice, task_id, "completed")

    sent = [
        e.event
        for e in emitter.sent
        if isinstance(e.event, TaskProgressEvent | TaskStatusEvent)
    ]
    finished = next(
        i
        for i, event in enumerate(sent)
        if isinstance(event, TaskStatusEvent) and event.status == TaskStatus.COMPLETED
    )
    progress = [i for i, e in enumerate(sent) if isinstance(e, TaskProgressEvent)]
    currents = [sent[i].progress.current for i in progress]  # type: ignore[union-attr]
    assert (currents[0], currents[-1]) == (1, 5)
    assert max(progress) < finished


@pytest.mark.parametrize(
    ("final", "start"),
    [("claimed", False), ("completed", True), ("failed", True), ("cancelled", True)],
)
async def test_a_task_not_running_is_409_task_not_running(
    alice: httpx.AsyncClient,
    joblib: JobLib,
    emitter: RecordingEmitter,
    final: str,
    start: bool,
) -> None:
    task_id, worker_id = await claimed_task(alice, alice, start=start)
    if start:
        await update(alice, task_id, final)
    before = await snapshot(joblib)
    emitter.clear()

    answer = await _report(alice, task_id, current=1, worker_id=worker_id)

    body = assert_problem(answer, 409, "task-not-running")
    assert f"is {final}, not running" in body["detail"]
    assert await snapshot(joblib) == before
    assert emitter.sent == []


async def test_another_identity_is_403_and_an_unknown_task_404(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, joblib: JobLib
) -> None:
    # bob submitted the task: still not his to report on.
    task_id, _ = await _running(alice, bob)
    before = await snapshot(joblib)
    assert_problem(await _report(bob, task_id, current=1), 403, "forbidden")
    assert_problem(
        await _report(alice, str(uuid.uuid4()), current=1), 404, "task-not-found"
    )
    assert await snapshot(joblib) == before


async def test_a_report_from_a_worker_that_lost_the_task_is_409(
    alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    task_id, worker_id = await _running(alice, alice)
    before = await snapshot(joblib)
    stranger = str(uuid.uuid4())
    answer = await _report(alice, task_id, current=1, worker_id=stranger)
    assert_problem(answer, 409, "task-worker-mismatch")
    assert await snapshot(joblib) == before

    assert (await alice.delete(f"/workers/{worker_id}")).status_code == 204
    answer = await _report(alice, task_id, current=1, worker_id=worker_id)
    assert_problem(answer, 409, "task-worker-mismatch")


async def test_the_access_policy_is_asked_for_the_tasks_room(
    alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    task_id, worker_id = await _running(alice, alice)
    joblib.policy = RoomPatterns({"alice": ["lab-*"]})  # not ROOM any more
    before = await snapshot(joblib)
    answer = await _report(alice, task_id, current=1, worker_id=worker_id)
    assert_problem(answer, 403, "forbidden")
    assert await snapshot(joblib) == before


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"current": -1},
        {"current": 1, "total": 0},
        {"current": 1, "message": "m" * 1001},
        {"current": 1, "worker_id": "nope"},
        {"current": 1, "percent": 5},
        {"current": "1e999"},
    ],
)
async def test_a_malformed_report_is_422(
    alice: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    task_id, _ = await _running(alice, alice)
    assert_problem(await _report(alice, task_id, **body), 422, "validation-error")
    assert (await get_task(alice, task_id))["progress"] is None


# End to end: a real server, a real observer.


@pytest.fixture
def watched(live_server: LiveServer) -> Iterator[tuple[Peer, str, str, str]]:
    """An observer of a fresh room with a running task: (peer, room, task, worker)."""
    room = f"room-{uuid.uuid4().hex[:8]}"
    with (
        rest(live_server.api, ALICE) as alice,
        connect_peer(live_server.url, token=ADMIN, rooms=(room,)) as peer,
    ):
        peer.sio.on(
            "task_progress_event",
            lambda data: peer.record("task_progress_event", data),
        )
        job = alice.put(
            f"/rooms/{room}/jobs",
            json={"category": "modifiers", "name": "Long", "schema": {}},
        ).json()
        task = alice.post(f"/rooms/{room}/tasks/{job['full_name']}", json={}).json()
        claimed = alice.post(
            "/tasks/claim", json={"worker_id": job["worker_id"], "start": True}
        ).json()["task"]
        assert claimed["id"] == task["id"]
        yield peer, room, str(task["id"]), str(job["worker_id"])


def _progress_seen(peer: Peer, task_id: str) -> list[float]:
    with peer.changed:
        return [
            payload["progress"]["current"]
            for name, payload in peer.events
            if name == "task_progress_event" and payload["id"] == task_id
        ]


def _is_progress(task_id: str, current: float) -> Any:
    def match(event: tuple[str, dict[str, Any]]) -> bool:
        name, payload = event
        return (
            name == "task_progress_event"
            and payload["id"] == task_id
            and payload["progress"]["current"] == current
        )

    return match


def test_an_observer_sees_the_first_and_the_last_report(
    live_server: LiveServer, watched: tuple[Peer, str, str, str]
) -> None:
    peer, room, task_id, worker_id = watched
    with rest(live_server.api, ALICE) as alice:
        for current in range(1, 11):
            body = {"current": current, "total": 10, "worker_id": worker_id}
            answer = alice.put(f"/tasks/{task_id}/progress", json=body)
            assert answer.status_code == 204, answer.text
        _, first = peer.wait_for(_is_progress(task_id, 1))
        _, last = peer.wait_for(_is_progress(task_id, 10))
        answer = alice.patch(f"/tasks/{task_id}", json={"status": "completed"})
        assert answer.status_code == 200, answer.text
    assert first == {
        "id": task_id,
        "room_id": room,
        "progress": {"current": 1.0, "total": 10.0, "message": None},
    }
    assert last["progress"]["current"] == 10
    seen = _progress_seen(peer, task_id)
    assert seen == sorted(seen)  # in order, some left out


def test_a_burst_is_coalesced_and_the_last_value_wins(
    live_server: LiveServer, watched: tuple[Peer, str, str, str]
) -> None:
    peer, _, task_id, worker_id = watched
    reports = 1000
    senders = 4
    sent = threading.Barrier(senders)

    def send(offset: int) -> None:
        with rest(live_server.api, ALICE) as alice:
            sent.wait()
            for current in range(offset, reports - 1, senders):
                body = {"current": current, "worker_id": worker_id}
                answer = alice.put(f"/tasks/{task_id}/progress", json=body)
                assert answer.status_code == 204, answer.text

    started = time.monotonic()
    threads = [threading.Thread(target=send, args=(i,)) for i in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with rest(live_server.api, ALICE) as alice:
        # The very last report, once all the others are in.
        body = {"current": reports - 1, "message": "last", "worker_id": worker_id}
        assert alice.put(f"/tasks/{task_id}/progress", json=body).status_code == 204
        peer.wait_for(_is_progress(task_id, reports - 1))
        elapsed = time.monotonic() - started
        answer = alice.patch(f"/tasks/{task_id}", json={"status": "completed"})
        assert answer.status_code == 200, answer.text
        stored = alice.get(f"/tasks/{task_id}").json()["progress"]
    peer.wait_for(
        lambda e: e[0] == "task_status_event" and e[1]["status"] == "completed"
    )

    seen = _progress_seen(peer, task_id)
    print(f"\n{reports} reports in {elapsed:.2f} s: {len(seen)} events")
    assert seen[-1] == reports - 1
    assert len(seen) <= elapsed / 0.1 + 2
    assert stored == {"current": reports - 1.0, "total": None, "message": "last"}
    names = [name for name, payload in peer.events if payload.get("id") == task_id]
    assert names[-1] == "task_status_event"  # no progress after the end


def test_a_report_from_bob_reaches_nobody(
    live_server: LiveServer, watched: tuple[Peer, str, str, str]
) -> None:
    peer, _, task_id, _ = watched
    with rest(live_server.api, BOB) as bob:
        answer = bob.put(f"/tasks/{task_id}/progress", json={"current": 1})
        assert answer.status_code == 403, answer.text
    with rest(live_server.api, ALICE) as alice:
        assert alice.put(f"/tasks/{task_id}/progress", json={"current": 2}).is_success
    peer.wait_for(_is_progress(task_id, 2))
    assert _progress_seen(peer, task_id) == [2]
