"""Checks of ours: `grace_seconds`, the time a worker whose socket dropped has to
come back before its tasks follow the disconnect policy."""

from __future__ import annotations

import time
from typing import Any

from joblib_conformance import expect
from joblib_conformance.checks import CheckFailed
from joblib_conformance.server.disconnect import (
    DISCONNECTED,
    WorkerProcess,
    failed_over_rest,
    spawned_worker,
)
from joblib_conformance.server.events import STATUS, join_job
from joblib_conformance.server.registry import SERVER_CHECKS
from joblib_conformance.target import ServerContext
from joblib_protocol import ErrorCode, TaskResponse, TaskStatus, TaskStatusEvent

check = SERVER_CHECKS.check

GRACE = 2.0
"""The `grace_seconds` the checks register their jobs with."""

POLICY: dict[str, Any] = {"action": "fail", "grace_seconds": GRACE}

EARLY = 0.2
"""How much sooner than the grace after the kill a task may fail (clock slack)."""


def _running(
    ctx: ServerContext, worker: WorkerProcess, room_id: str
) -> tuple[str, str, str]:
    """The spawned worker's (worker_id, job_name, task_id) once it runs a task."""
    hello = worker.read(ctx.timeout * 2)
    ctx.remember_worker(hello["worker_id"])
    task = ctx.submit(room_id, hello["job_name"])
    worker.send("claim")
    started = worker.read(ctx.timeout)
    expect.equal(started["task_id"], str(task.id), "the task the worker claimed")
    return hello["worker_id"], hello["job_name"], str(task.id)


def _still_running(ctx: ServerContext, task_id: str, worker_id: str) -> TaskResponse:
    task = ctx.task(task_id)
    expect.equal(
        (task.status, str(task.worker_id)),
        (TaskStatus.RUNNING, worker_id),
        "(status, worker_id) of the task while its worker has its grace time",
    )
    return task


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


@check(
    "ours.disconnect.grace-return",
    f"a worker whose socket drops (grace_seconds {GRACE:g}) and joins its job room "
    "again within the grace keeps its running task, and its report lands",
)
def _grace_return(ctx: ServerContext) -> None:
    room_id = ctx.room()
    with spawned_worker(ctx, room_id, ctx.name("Back"), POLICY) as worker:
        worker_id, job_name, task_id = _running(ctx, worker, room_id)
        killed = time.monotonic()
        worker.kill()
    _sleep_until(killed + GRACE / 4)
    _still_running(ctx, task_id, worker_id)
    back = ctx.peer()
    join_job(back, job_name, worker_id)
    if time.monotonic() - killed >= GRACE:
        raise CheckFailed(
            f"the kit to join again within the grace ({GRACE:g} s)",
            f"it took {time.monotonic() - killed:.2f} s (a slow server or machine)",
        )
    _sleep_until(killed + GRACE + ctx.target.disconnect_within)
    _still_running(ctx, task_id, worker_id)
    expect.status(ctx.user.patch(f"/workers/{worker_id}"), 200, "the worker's beat")
    done = ctx.update(task_id, "completed", worker_id=worker_id)
    expect.equal(done.status, TaskStatus.COMPLETED, "the returned worker's report")


@check(
    "ours.disconnect.grace-expires",
    f"a worker whose socket drops (grace_seconds {GRACE:g}) and does not come back "
    "keeps its running task for the grace, then it fails worker_disconnected",
)
def _grace_expires(ctx: ServerContext) -> None:
    room_id = ctx.room()
    observer = ctx.observer(room_id)
    with spawned_worker(ctx, room_id, ctx.name("Gone"), POLICY) as worker:
        worker_id, _job_name, task_id = _running(ctx, worker, room_id)
        killed = time.monotonic()
        worker.kill()
    _sleep_until(killed + GRACE / 4)
    _still_running(ctx, task_id, worker_id)
    within = GRACE + ctx.target.disconnect_within
    failed = observer.wait_for(
        STATUS,
        lambda p: p["id"] == task_id and p["status"] == "failed",
        timeout=within - (time.monotonic() - killed),
        what=f"task_status_event failed within {within:g} s of the kill",
    )
    expect.that(
        failed.at - killed >= GRACE - EARLY,
        f"the task failed no sooner than the grace ({GRACE:g} s) after the kill",
        f"failed {failed.at - killed:.2f} s after it",
    )
    event = expect.model(failed.payload, TaskStatusEvent, "the failed event")
    expect.equal(
        (event.error, event.error_code),
        (DISCONNECTED, ErrorCode.WORKER_DISCONNECTED),
        "(error, error_code) of the failed event",
    )
    failed_over_rest(ctx, task_id)
    expect.eventually(
        lambda: ctx.user.patch(f"/workers/{worker_id}").status_code == 404,
        timeout=ctx.timeout,
        expected="the worker removed after its grace (heartbeat 404)",
    )
