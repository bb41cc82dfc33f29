"""Checks of ours: a cancel reaches the worker holding the task, by
`task_cancelled` on its sockets (`worker:{worker_id}`) and in the `cancelled`
list of its heartbeat's answer."""

from __future__ import annotations

from joblib_conformance import expect
from joblib_conformance.server.events import AVAILABLE, STATUS, about, join_job
from joblib_conformance.server.registry import SERVER_CHECKS
from joblib_conformance.target import ServerContext
from joblib_protocol import CancelReason, TaskCancelled, WorkerResponse

check = SERVER_CHECKS.check

CANCELLED = TaskCancelled.event_name


@check(
    "ours.cancel.notice",
    "cancelling a claimed or running task sends task_cancelled {task_id, "
    "job_name, reason: cancelled} to the sockets of the worker holding it, and "
    "to no other worker or observer; cancelling a pending task tells nobody",
)
def _notice(ctx: ServerContext) -> None:
    room_id = ctx.room()
    a = ctx.serving(room_id)
    b_worker = ctx.create_worker()
    ctx.register(room_id, a.job.name, worker_id=b_worker, expect_status=200)
    peer_a, peer_b = ctx.peer(), ctx.peer()
    join_job(peer_a, a.full_name, a.worker_id)
    join_job(peer_b, a.full_name, b_worker)
    observer = ctx.observer(room_id)
    running = ctx.submit(room_id, a.full_name, rest=ctx.other)
    claimed = ctx.submit(room_id, a.full_name, rest=ctx.other)
    pending = ctx.submit(room_id, a.full_name, rest=ctx.other)
    got = [ctx.claim(a.worker_id), ctx.claim(b_worker)]
    expect.equal(
        [t.id if t else None for t in got],
        [running.id, claimed.id],
        "the tasks claimed by the two workers",
    )
    ctx.update(running.id, "running", worker_id=a.worker_id)
    ctx.update(pending.id, "cancelled", rest=ctx.other)
    ctx.update(claimed.id, "cancelled", rest=ctx.admin)
    ctx.update(running.id, "cancelled", rest=ctx.other)
    for peer, task, who in ((peer_b, claimed, "B"), (peer_a, running, "A")):
        event = peer.wait_for(
            CANCELLED, about(task.id), what=f"task_cancelled to worker {who}"
        )
        notice = expect.model(event.payload, TaskCancelled, "task_cancelled")
        expect.equal(
            (notice.task_id, notice.job_name, notice.reason),
            (str(task.id), a.full_name, CancelReason.CANCELLED),
            f"(task_id, job_name, reason) of worker {who}'s task_cancelled",
        )
    # Barriers: a task_available to both workers, its status event to the room.
    barrier = ctx.submit(room_id, a.full_name)
    for peer in (peer_a, peer_b):
        peer.wait_for(AVAILABLE, about(barrier.id), what="the barrier's task")
    observer.wait_for(STATUS, about(barrier.id), what="the barrier's event")
    strays = {
        "worker A": [
            e.payload
            for e in peer_a.received(CANCELLED)
            if not about(running.id)(e.payload)
        ],
        "worker B": [
            e.payload
            for e in peer_b.received(CANCELLED)
            if not about(claimed.id)(e.payload)
        ],
        "the observer": [e.payload for e in observer.received(CANCELLED)],
    }
    strays = {who: got for who, got in strays.items() if got}
    expect.that(not strays, "task_cancelled only to the task's own worker", strays)


@check(
    "ours.cancel.heartbeat",
    "a heartbeat {tasks: [...]} is answered with cancelled: the listed tasks the "
    "worker should stop (cancelled since), and none that it still holds",
)
def _heartbeat(ctx: ServerContext) -> None:
    served = ctx.serving()
    first = ctx.submit(served.room_id, served.full_name)
    second = ctx.submit(served.room_id, served.full_name)
    for _ in range(2):
        expect.that(ctx.claim(served.worker_id), "a claimed task", None)
    ctx.update(first.id, "running", worker_id=served.worker_id)
    path = f"/workers/{served.worker_id}"
    held = {"tasks": [str(first.id), str(second.id)]}

    def beat(what: str) -> WorkerResponse:
        answer = ctx.user.patch(path, json=held)
        return expect.model(expect.status(answer, 200, what), WorkerResponse, what)

    expect.equal(beat("a heartbeat").cancelled, [], "cancelled while both are held")
    ctx.update(first.id, "cancelled", rest=ctx.admin)
    expect.equal(
        beat("a heartbeat after the cancel").cancelled,
        [first.id],
        "cancelled once the running task was cancelled",
    )
    expect.equal(
        ctx.task(second.id).status.value, "claimed", "the task still held, untouched"
    )
