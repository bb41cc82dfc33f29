"""Checks of the Socket.IO events: payloads, rooms, and that they follow the commit.

Negative checks ("this peer got no such event") need a barrier: a later event
the peer certainly gets. A server sends one connection's events in order, so
once the barrier arrived, an event sent before it would have arrived too.
"""

from __future__ import annotations

from typing import Any

from joblib_conformance import expect
from joblib_conformance.checks import CheckFailed
from joblib_conformance.server.registry import SERVER_CHECKS
from joblib_conformance.sockets import Peer, Received, Snapshot
from joblib_conformance.target import ServerContext
from joblib_protocol import (
    GLOBAL_ROOM,
    JobsInvalidate,
    JobSummary,
    JoinJobRoom,
    LeaveJobRoom,
    LeaveRoom,
    PaginatedResponse,
    TaskAvailable,
    TaskResponse,
    TaskStatus,
    TaskStatusEvent,
    ValidationFailed,
)

check = SERVER_CHECKS.check

STATUS = TaskStatusEvent.event_name
AVAILABLE = TaskAvailable.event_name
INVALIDATE = JobsInvalidate.event_name

_RANK = {
    TaskStatus.PENDING: 0,
    TaskStatus.CLAIMED: 1,
    TaskStatus.RUNNING: 2,
    TaskStatus.COMPLETED: 3,
    TaskStatus.FAILED: 3,
    TaskStatus.CANCELLED: 3,
}


def join_job(peer: Peer, full_name: str, worker_id: str) -> None:
    """`join_job_room` as a worker; any acknowledgement but a refusal will do."""
    ack = peer.call(
        JoinJobRoom.event_name, {"job_name": full_name, "worker_id": worker_id}
    )
    if isinstance(ack, dict) and ack.get("ok") is False:
        raise CheckFailed(f"join_job_room {full_name} accepted", ack)


def about(task_id: object) -> Any:
    """A match for events about one task."""
    wanted = str(task_id)
    return lambda p: p.get("id") == wanted or p.get("task_id") == wanted


def statuses(peer: Peer, task_id: object) -> list[str]:
    """The statuses `peer` was told of for one task, in order."""
    return [
        e.payload["status"] for e in peer.received(STATUS) if about(task_id)(e.payload)
    ]


def wait_count(ctx: ServerContext, peer: Peer, name: str, count: int) -> list[Received]:
    """Wait until `peer` has received `count` events called `name`."""
    expect.eventually(
        lambda: len(peer.received(name)) >= count,
        timeout=ctx.timeout,
        expected=f"{count} {name} events",
        shown_as=lambda: [e.payload for e in peer.received(name)],
    )
    return peer.received(name)


@check(
    "core.events.task-status",
    "task_status_event to room:{room_id} for every transition, with the task's fields",
)
def _task_status(ctx: ServerContext) -> None:
    served = ctx.serving()
    observer = ctx.observer(served.room_id)
    answers = [ctx.submit(served.room_id, served.full_name)]
    claimed = ctx.claim(served.worker_id)
    expect.that(claimed is not None, "a claimed task", claimed)
    assert claimed is not None
    answers.append(claimed)
    answers.append(ctx.update(claimed.id, "running"))
    answers.append(ctx.update(claimed.id, "failed", error="it broke"))
    task_id = answers[0].id
    observer.wait_for(
        STATUS, lambda p: p["id"] == str(task_id) and p["status"] == "failed"
    )
    events = [e for e in observer.received(STATUS) if about(task_id)(e.payload)]
    expect.equal(
        [e.payload["status"] for e in events],
        ["pending", "claimed", "running", "failed"],
        "the statuses announced, in order",
    )
    for received, answer in zip(events, answers, strict=True):
        event = expect.model(received.payload, TaskStatusEvent, "task_status_event")
        what = f"the {answer.status.value} event"
        expect.equal(
            (event.id, event.name, event.room_id, event.status),
            (str(answer.id), answer.job_name, answer.room_id, answer.status),
            f"(id, name, room_id, status) of {what}",
        )
        expect.equal(
            (event.created_at, event.started_at, event.completed_at),
            (answer.created_at, answer.started_at, answer.completed_at),
            f"the timestamps of {what} (as REST answered them)",
        )
        expect.equal(
            (event.worker_id, event.error),
            (str(answer.worker_id) if answer.worker_id else None, answer.error),
            f"(worker_id, error) of {what}",
        )
        wanted_position = 1 if answer.status == TaskStatus.PENDING else None
        expect.equal(event.queue_position, wanted_position, f"queue_position of {what}")


@check(
    "core.events.task-available",
    "task_available {job_name, room_id, task_id} reaches the workers that joined "
    "the job's room (join_job_room), and nobody else",
)
def _task_available(ctx: ServerContext) -> None:
    room_id = ctx.room()
    a, b = ctx.serving(room_id), ctx.serving(room_id)
    peer_a, peer_b = ctx.peer(), ctx.peer()
    join_job(peer_a, a.full_name, a.worker_id)
    join_job(peer_b, b.full_name, b.worker_id)
    observer = ctx.observer(room_id)
    for_a = ctx.submit(room_id, a.full_name)
    got = peer_a.wait_for(AVAILABLE, about(for_a.id), what="task_available of A's task")
    event = expect.model(got.payload, TaskAvailable, "task_available")
    expect.equal(
        (event.job_name, event.room_id, event.task_id),
        (a.full_name, room_id, str(for_a.id)),
        "(job_name, room_id, task_id)",
    )
    for_b = ctx.submit(room_id, b.full_name)
    peer_b.wait_for(AVAILABLE, about(for_b.id), what="task_available of B's task")
    observer.wait_for(STATUS, about(for_b.id), what="the barrier: B's pending event")
    later = ctx.submit(room_id, a.full_name)
    peer_a.wait_for(AVAILABLE, about(later.id), what="the barrier: A's second task")
    leaks = {
        "B's worker, of A's task": [
            e for e in peer_b.received(AVAILABLE) if about(for_a.id)(e.payload)
        ],
        "A's worker, of B's task": [
            e for e in peer_a.received(AVAILABLE) if about(for_b.id)(e.payload)
        ],
        "the room's observer": observer.received(AVAILABLE),
    }
    leaked = {who: [e.payload for e in got] for who, got in leaks.items() if got}
    expect.that(not leaked, "task_available only in the job's room", leaked)


@check(
    "core.events.leave-job-room",
    "after leave_job_room a worker's connection gets no more task_available",
)
def _leave_job_room(ctx: ServerContext) -> None:
    room_id = ctx.room()
    left, stays = ctx.serving(room_id), ctx.serving(room_id)
    peer = ctx.peer()
    join_job(peer, left.full_name, left.worker_id)
    join_job(peer, stays.full_name, stays.worker_id)
    ack = peer.call(
        LeaveJobRoom.event_name,
        {"job_name": left.full_name, "worker_id": left.worker_id},
    )
    expect.that(
        not (isinstance(ack, dict) and ack.get("ok") is False),
        "leave_job_room accepted",
        ack,
    )
    after = ctx.submit(room_id, left.full_name)
    barrier = ctx.submit(room_id, stays.full_name)
    peer.wait_for(
        AVAILABLE, about(barrier.id), what="the barrier: the other job's task"
    )
    leaked = [e.payload for e in peer.received(AVAILABLE) if about(after.id)(e.payload)]
    expect.that(not leaked, "no task_available of the job left", leaked)


@check(
    "core.events.rooms",
    "a room's events reach only that room's observers",
)
def _rooms(ctx: ServerContext) -> None:
    one, two = ctx.serving(), ctx.serving()
    watch_one, watch_two = ctx.observer(one.room_id), ctx.observer(two.room_id)
    first = ctx.submit(one.room_id, one.full_name)
    second = ctx.submit(two.room_id, two.full_name)
    watch_two.wait_for(STATUS, about(second.id), what="room two's own event")
    third = ctx.submit(one.room_id, one.full_name)
    watch_one.wait_for(STATUS, about(third.id), what="room one's own later event")
    leaked = [
        e.payload for e in watch_two.received(STATUS) if about(first.id)(e.payload)
    ]
    leaked += [
        e.payload for e in watch_one.received(STATUS) if about(second.id)(e.payload)
    ]
    expect.that(not leaked, "no event of another room", leaked)


@check(
    "core.events.jobs-invalidate",
    "jobs_invalidate {} to room:{room_id} when a job is registered or goes away; "
    "@global jobs to room:@global",
)
def _jobs_invalidate(ctx: ServerContext) -> None:
    room_id = ctx.room()
    observer = ctx.observer(room_id)
    served = ctx.serving(room_id)
    first = wait_count(ctx, observer, INVALIDATE, 1)[0]
    expect.equal(first.payload, {}, "the jobs_invalidate payload")
    expect.status(ctx.user.delete(f"/workers/{served.worker_id}"), 204)
    wait_count(ctx, observer, INVALIDATE, 2)
    everywhere = ctx.observer(GLOBAL_ROOM)
    ctx.serving(GLOBAL_ROOM, rest=ctx.admin)
    wait_count(ctx, everywhere, INVALIDATE, 1)


def _snapshot_task(snapshot: Snapshot | None) -> TaskResponse | None:
    if snapshot is None or snapshot.status != 200:
        return None
    try:
        return TaskResponse.model_validate(snapshot.body)
    except ValueError:
        return None


def _listed(snapshot: Snapshot | None) -> list[str] | None:
    if snapshot is None or snapshot.status != 200:
        return None
    try:
        page = PaginatedResponse[JobSummary].model_validate(snapshot.body)
    except ValueError:
        return None
    return [job.full_name for job in page.items]


def _visible(received: Received) -> str | None:
    """Why the REST read right after `received` does not show its change, or None."""
    snapshot = received.snapshot
    shown = f"{snapshot.status} {snapshot.body!r}"[:300] if snapshot else "no read"
    if received.name == AVAILABLE:
        task = _snapshot_task(snapshot)
        return None if task is not None else f"GET /tasks/{{id}} answered {shown}"
    event = TaskStatusEvent.model_validate(received.payload)
    task = _snapshot_task(snapshot)
    if task is None:
        return f"GET /tasks/{{id}} answered {shown}"
    if (task.attempt, _RANK[task.status]) < (event.attempt, _RANK[event.status]):
        return f"the event says {event.status.value}, GET says {task.status.value}"
    if task.status == event.status:
        told = (event.worker_id, event.started_at, event.completed_at, event.error)
        read = (
            str(task.worker_id) if task.worker_id else None,
            task.started_at,
            task.completed_at,
            task.error,
        )
        if told != read:
            return f"the event says {told}, GET says {read}"
    return None


@check(
    "core.events.after-commit",
    "every event describes a change already visible over REST when it arrives",
)
def _after_commit(ctx: ServerContext) -> None:
    room_id = ctx.room()
    observer = ctx.observer(room_id, snapshots=True)
    served = ctx.serving(room_id)
    registered = wait_count(ctx, observer, INVALIDATE, 1)
    worker = ctx.peer(snapshots=True)
    join_job(worker, served.full_name, served.worker_id)
    task = ctx.submit(room_id, served.full_name)
    worker.wait_for(AVAILABLE, about(task.id))
    expect.that(ctx.claim(served.worker_id), "a claimed task", None)
    ctx.update(task.id, "running")
    ctx.update(task.id, "completed")
    observer.wait_for(
        STATUS, lambda p: p["id"] == str(task.id) and p["status"] == "completed"
    )
    seen = len(observer.received(INVALIDATE))
    expect.status(ctx.user.delete(f"/workers/{served.worker_id}"), 204)
    removed = wait_count(ctx, observer, INVALIDATE, seen + 1)[seen:]
    problems = []
    listed = _listed(registered[0].snapshot)
    if listed is None or served.full_name not in listed:
        problems.append(f"jobs_invalidate after registering: GET lists {listed}")
    for event in removed:
        listed = _listed(event.snapshot)
        if listed is None or served.full_name in listed:
            problems.append(f"jobs_invalidate after the removal: GET lists {listed}")
    for event in worker.received(AVAILABLE) + observer.received(STATUS):
        why = _visible(event)
        if why is not None:
            problems.append(f"{event.name} {event.payload.get('status', '')}: {why}")
    expect.that(
        not problems, "each change visible over REST when its event came", problems
    )


@check(
    "ours.events.join-room",
    "join_room {room_id} observes a room (ack {ok: true}), refuses bad ids with "
    "validation-error; leave_room stops the events",
)
def _join_room(ctx: ServerContext) -> None:
    one, two = ctx.serving(), ctx.serving()
    observer = ctx.observer(one.room_id, two.room_id)
    refused = observer.call("join_room", {"room_id": "bad:room"})
    expect.that(
        isinstance(refused, dict)
        and refused.get("ok") is False
        and isinstance(refused.get("error"), dict)
        and refused["error"].get("type") == ValidationFailed.type_uri(),
        f'{{"ok": false, "error": {{"type": "{ValidationFailed.type_uri()}", …}}}}',
        refused,
    )
    seen = ctx.submit(one.room_id, one.full_name)
    observer.wait_for(STATUS, about(seen.id), what="an event of the room observed")
    ack = observer.call(LeaveRoom.event_name, {"room_id": one.room_id})
    expect.equal(ack, {"ok": True}, "the leave_room acknowledgement")
    unseen = ctx.submit(one.room_id, one.full_name)
    barrier = ctx.submit(two.room_id, two.full_name)
    observer.wait_for(STATUS, about(barrier.id), what="the barrier: the other room")
    leaked = [
        e.payload for e in observer.received(STATUS) if about(unseen.id)(e.payload)
    ]
    expect.that(not leaked, "no event of the room left", leaked)
