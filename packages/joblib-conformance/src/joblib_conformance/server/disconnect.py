"""Checks of what happens when a worker goes away: socket drop, graceful leave,
and ours: error codes, requeue, fencing, the cleanup receipt."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from joblib_conformance import expect
from joblib_conformance.checks import CheckFailed
from joblib_conformance.rest import segment
from joblib_conformance.server.events import AVAILABLE, STATUS, about, join_job
from joblib_conformance.server.registry import SERVER_CHECKS
from joblib_conformance.sockets import Peer, Received
from joblib_conformance.target import ServerContext
from joblib_protocol import (
    ErrorCode,
    JobNotFound,
    LeaveJobRoom,
    TaskResponse,
    TaskStatus,
    TaskStatusEvent,
    TaskWorkerMismatch,
    WorkerCleanupResponse,
    WorkerNotFound,
)

check = SERVER_CHECKS.check

DISCONNECTED = "Worker disconnected"
"""The `error` of a task lost with its worker (zndraw-joblib's words)."""


@dataclass
class WorkerProcess:
    """`dropped_worker` in a process of its own, its printed lines in a queue."""

    process: subprocess.Popen[str]
    lines: queue.Queue[dict[str, Any]]

    def read(self, timeout: float) -> dict[str, Any]:
        """The next line it printed; fails the check on an error or silence."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise CheckFailed(
                "the spawned worker to report", f"nothing in {timeout:g} s"
            ) from None
        if "error" in line:
            raise CheckFailed("the spawned worker to register, join and claim", line)
        return line

    def send(self, line: str) -> None:
        """Write one line to its input."""
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def kill(self) -> None:
        """kill -9: no goodbye, its socket just drops."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


@contextmanager
def spawned_worker(
    ctx: ServerContext,
    room_id: str,
    name: str,
    on_disconnect: dict[str, Any] | None = None,
) -> Iterator[WorkerProcess]:
    """Start `dropped_worker` as the user; it is killed when the block ends.

    `on_disconnect` is the disconnect policy it registers its job with.
    """
    target = ctx.target
    policy = [] if on_disconnect is None else [json.dumps(on_disconnect)]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "joblib_conformance.dropped_worker",
            target.url,
            target.user_token,
            room_id,
            target.category,
            name,
            target.socketio_path,
            *policy,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: queue.Queue[dict[str, Any]] = queue.Queue()

    def collect() -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            try:
                lines.put(json.loads(raw))
            except ValueError:
                continue

    threading.Thread(target=collect, daemon=True).start()
    worker = WorkerProcess(process, lines)
    try:
        yield worker
    finally:
        worker.kill()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()


@dataclass
class Dropped:
    """A worker process that was killed while running a task."""

    worker_id: str
    job_name: str
    room_id: str
    task_id: str
    failed: Received
    """The task_status_event that announced the task failed."""
    seconds: float
    """From the kill to that event."""
    observer: Peer


def drop_a_worker(ctx: ServerContext) -> Dropped:
    """Spawn a worker, let it start a task, kill -9 it; wait for the task to fail."""
    room_id = ctx.room()
    observer = ctx.observer(room_id)
    with spawned_worker(ctx, room_id, ctx.name("Dropped")) as worker:
        hello = worker.read(ctx.timeout * 2)
        ctx.remember_worker(hello["worker_id"])
        task = ctx.submit(room_id, hello["job_name"])
        worker.send("claim")
        started = worker.read(ctx.timeout)
        expect.equal(started["task_id"], str(task.id), "the task the worker claimed")
        observer.wait_for(
            STATUS, lambda p: p["id"] == str(task.id) and p["status"] == "running"
        )
        killed = time.monotonic()
        worker.kill()
    within = ctx.target.disconnect_within
    failed = observer.wait_for(
        STATUS,
        lambda p: p["id"] == str(task.id) and p["status"] == "failed",
        timeout=within,
        what=f"task_status_event failed within {within:g} s of the kill",
    )
    return Dropped(
        hello["worker_id"],
        hello["job_name"],
        room_id,
        str(task.id),
        failed,
        failed.at - killed,
        observer,
    )


def failed_over_rest(ctx: ServerContext, task_id: str) -> TaskResponse:
    """The task once `GET /tasks/{id}` shows it failed (events may come first)."""

    def read() -> TaskResponse | None:
        task = ctx.task(task_id)
        return task if task.status == TaskStatus.FAILED else None

    return expect.eventually(
        read, timeout=ctx.timeout, expected="GET /tasks/{id} to show the task failed"
    )


@check(
    "core.disconnect.socket-drop",
    "when a worker's socket drops (kill -9), its running task fails at once with "
    '"Worker disconnected" (the default policy), and the worker and its orphaned '
    "job are removed",
)
def _socket_drop(ctx: ServerContext) -> None:
    dropped = drop_a_worker(ctx)
    event = expect.model(dropped.failed.payload, TaskStatusEvent, "the failed event")
    expect.equal(event.error, DISCONNECTED, "error of the failed event")
    expect.aware(event.completed_at, "completed_at of the failed event")
    task = failed_over_rest(ctx, dropped.task_id)
    expect.equal(task.error, DISCONNECTED, "error read back")
    expect.eventually(
        lambda: ctx.user.patch(f"/workers/{dropped.worker_id}").status_code == 404,
        timeout=ctx.timeout,
        expected="the worker removed (heartbeat 404)",
    )
    path = f"/rooms/{dropped.room_id}/jobs/{segment(dropped.job_name)}"
    expect.eventually(
        lambda: ctx.user.get(path).status_code == 404,
        timeout=ctx.timeout,
        expected="the job nobody serves any more removed (GET 404)",
    )
    expect.problem(ctx.user.get(path), JobNotFound)
    expect.problem(ctx.user.patch(f"/workers/{dropped.worker_id}"), WorkerNotFound)


@check(
    "ours.disconnect.error-code",
    "a task lost to a dropped socket says error_code worker_disconnected, attempt 1",
)
def _socket_drop_code(ctx: ServerContext) -> None:
    dropped = drop_a_worker(ctx)
    event = expect.model(dropped.failed.payload, TaskStatusEvent, "the failed event")
    expect.equal(
        (event.error_code, event.attempt),
        (ErrorCode.WORKER_DISCONNECTED, 1),
        "(error_code, attempt) of the failed event",
    )
    task = failed_over_rest(ctx, dropped.task_id)
    expect.equal(task.error_code, ErrorCode.WORKER_DISCONNECTED, "error_code read")


@check(
    "core.disconnect.graceful",
    "a worker that leaves its job rooms and deletes itself fails its running task "
    'with "Worker disconnected"; its socket closing afterwards changes nothing',
)
def _graceful(ctx: ServerContext) -> None:
    served = ctx.serving()
    observer = ctx.observer(served.room_id)
    worker = ctx.peer()
    join_job(worker, served.full_name, served.worker_id)
    _served, task = ctx.running_task(served)
    ack = worker.call(
        LeaveJobRoom.event_name,
        {"job_name": served.full_name, "worker_id": served.worker_id},
    )
    expect.that(
        not (isinstance(ack, dict) and ack.get("ok") is False), "leave accepted", ack
    )
    expect.status(ctx.user.delete(f"/workers/{served.worker_id}"), 204)
    failed = ctx.task(task.id)
    expect.equal(
        (failed.status, failed.error), (TaskStatus.FAILED, DISCONNECTED), "the task"
    )
    observer.wait_for(
        STATUS, lambda p: p["id"] == str(task.id) and p["status"] == "failed"
    )
    worker.close()
    expect.equal(ctx.task(task.id), failed, "the task after the socket closed")


@check(
    "ours.tasks.error-codes",
    "attempt and error_code: 1 and null at first, job_failed when reported failed, "
    "worker_removed after DELETE /workers/{id}",
)
def _error_codes(ctx: ServerContext) -> None:
    served, running = ctx.running_task()
    expect.equal((running.attempt, running.error_code), (1, None), "a fresh task")
    failed = ctx.update(running.id, "failed", error="it broke")
    expect.equal(failed.error_code, ErrorCode.JOB_FAILED, "error_code when reported")
    _served, lost = ctx.running_task(served)
    expect.status(ctx.user.delete(f"/workers/{served.worker_id}"), 204)
    expect.equal(
        ctx.task(lost.id).error_code, ErrorCode.WORKER_REMOVED, "error_code on delete"
    )


@check(
    "ours.workers.delete-receipt",
    "DELETE /workers/{id} with Prefer: return=representation answers 200 "
    "{worker_id, failed, requeued, jobs_removed}",
)
def _delete_receipt(ctx: ServerContext) -> None:
    served, task = ctx.running_task()
    answer = ctx.user.delete(
        f"/workers/{served.worker_id}", headers={"Prefer": "return=representation"}
    )
    body = expect.status(answer, 200, "with Prefer: return=representation")
    receipt = expect.model(body, WorkerCleanupResponse, "the receipt")
    expect.equal(
        (
            str(receipt.worker_id),
            receipt.failed,
            receipt.requeued,
            receipt.jobs_removed,
        ),
        (served.worker_id, [task.id], [], [served.full_name]),
        "(worker_id, failed, requeued, jobs_removed)",
    )
    expect.equal(
        answer.headers.get("preference-applied"),
        "return=representation",
        "Preference-Applied",
    )


@check(
    "ours.disconnect.requeue",
    "with on_disconnect requeue a lost task goes back to pending at its place, "
    "attempt + 1, announced again; after max_attempts runs it fails",
)
def _requeue(ctx: ServerContext) -> None:
    served = ctx.serving(on_disconnect={"action": "requeue", "max_attempts": 2})
    observer = ctx.observer(served.room_id)
    second = str(
        ctx.register(
            served.room_id,
            served.job.name,
            worker_id=ctx.create_worker(),
            expect_status=200,
        ).worker_id
    )
    peer = ctx.peer()
    join_job(peer, served.full_name, second)
    _served, task = ctx.running_task(served)
    behind = ctx.submit(served.room_id, served.full_name)
    answer = ctx.user.delete(
        f"/workers/{served.worker_id}", headers={"Prefer": "return=representation"}
    )
    receipt = expect.model(
        expect.status(answer, 200), WorkerCleanupResponse, "the receipt"
    )
    expect.equal(
        (receipt.failed, receipt.requeued), ([], [task.id]), "(failed, requeued)"
    )
    back = ctx.task(task.id)
    expect.equal(
        (back.status, back.attempt, back.worker_id, back.queue_position),
        (TaskStatus.PENDING, 2, None, 1),
        "(status, attempt, worker_id, queue_position) of the requeued task",
    )
    expect.equal(ctx.task(behind.id).queue_position, 2, "the later task's position")
    observer.wait_for(
        STATUS,
        lambda p: (
            p["id"] == str(task.id) and p["status"] == "pending" and p["attempt"] == 2
        ),
        what="task_status_event pending, attempt 2",
    )
    expect.eventually(
        lambda: (
            len([e for e in peer.received(AVAILABLE) if about(task.id)(e.payload)]) >= 2
        ),
        timeout=ctx.timeout,
        expected="task_available of the requeued task, again",
        shown_as=lambda: [e.payload for e in peer.received(AVAILABLE)],
    )
    again = ctx.claim(second)
    expect.equal(
        again.id if again else None, task.id, "the requeued task claimed first"
    )
    ctx.update(task.id, "running")
    expect.status(ctx.user.delete(f"/workers/{second}"), 204)
    out = ctx.task(task.id)
    expect.equal(
        (out.status, out.attempt, out.error_code),
        (TaskStatus.FAILED, 2, ErrorCode.WORKER_REMOVED),
        "(status, attempt, error_code) once max_attempts runs are spent",
    )


@check(
    "ours.tasks.fencing",
    "PATCH /tasks/{id} with a worker_id that does not hold the task is 409 "
    "task-worker-mismatch and changes nothing",
)
def _fencing(ctx: ServerContext) -> None:
    served = ctx.serving(on_disconnect={"action": "requeue", "max_attempts": 3})
    task = ctx.submit(served.room_id, served.full_name)
    stranger = ctx.create_worker()
    claimed = ctx.claim(served.worker_id)
    expect.equal(claimed.id if claimed else None, task.id, "the claimed task")
    answer = ctx.user.patch(
        f"/tasks/{task.id}", json={"status": "running", "worker_id": stranger}
    )
    expect.problem(answer, TaskWorkerMismatch, "for another worker's report")
    expect.equal(ctx.task(task.id).status, TaskStatus.CLAIMED, "status, unchanged")
    ctx.update(task.id, "running", worker_id=served.worker_id)
    expect.status(ctx.user.delete(f"/workers/{served.worker_id}"), 204)
    answer = ctx.user.patch(
        f"/tasks/{task.id}", json={"status": "completed", "worker_id": served.worker_id}
    )
    expect.problem(answer, TaskWorkerMismatch, "for a removed worker's late report")
    expect.equal(ctx.task(task.id).status, TaskStatus.PENDING, "the requeued task")
