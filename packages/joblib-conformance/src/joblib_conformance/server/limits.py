"""Checks of ours: time limits. A running task past its `deadline_at` fails with
`deadline_exceeded` (its worker told to stop), a pending one past its
`expires_at` with `expired`; limits come from the job or the submit."""

from __future__ import annotations

from datetime import datetime

from joblib_conformance import expect
from joblib_conformance.server.events import STATUS, about, join_job
from joblib_conformance.server.registry import SERVER_CHECKS
from joblib_conformance.target import ServerContext
from joblib_protocol import (
    CancelReason,
    ErrorCode,
    TaskCancelled,
    TaskNotRunning,
    TaskResponse,
    TaskStatus,
    is_terminal,
)

check = SERVER_CHECKS.check

LIMIT = 1.0
"""The short time limit the checks give a task, in seconds."""

LONG = 600.0
"""A limit that does not run out while a check runs."""

DUE_WITHIN = 1.5
"""Seconds past its due time within which a task must have been failed."""

SLACK = 0.1
"""Seconds a due time may differ from its start plus its limit (rounding)."""

POLL_SLACK = 1.0
"""Seconds on top of `DUE_WITHIN` the kit polls for the failure (latency)."""

CANCELLED = TaskCancelled.event_name


def _due(start: datetime | None, due: datetime | None, limit: float, what: str) -> None:
    start = expect.aware(start, f"the start of {what}")
    due = expect.aware(due, what)
    expect.that(
        abs((due - start).total_seconds() - limit) <= SLACK,
        f"{what} {limit:g} s after {start.isoformat()}",
        due.isoformat(),
    )


def _failed(ctx: ServerContext, task_id: object, wait: float) -> TaskResponse:
    def finished() -> TaskResponse | None:
        task = ctx.task(task_id)
        return task if is_terminal(task.status) else None

    return expect.eventually(
        finished,
        timeout=wait,
        expected=f"task {task_id} failed",
        shown_as=lambda: ctx.task(task_id).status.value,
        interval=0.05,
    )


def _on_time(task: TaskResponse, due: datetime | None, code: ErrorCode) -> None:
    expect.equal(
        (task.status, task.error_code),
        (TaskStatus.FAILED, code),
        "(status, error_code) of the task",
    )
    expect.that(task.error, "a human error next to the error_code", task.error)
    due = expect.aware(due, "the due time")
    done = expect.aware(task.completed_at, "completed_at")
    late = (done - due).total_seconds()
    expect.that(
        0 <= late < DUE_WITHIN,
        f"completed_at within {DUE_WITHIN:g} s after the due time {due.isoformat()}",
        f"{late:+.2f} s ({done.isoformat()})",
    )


@check(
    "ours.limits.deadline",
    f"a task submitted with timeout_seconds {LIMIT:g} (over its job's) gets "
    "deadline_at when it starts and fails deadline_exceeded within about a "
    "second of it; its worker's socket hears task_cancelled deadline_exceeded, "
    "its room the failure, and a progress report 409 task-not-running",
)
def _deadline(ctx: ServerContext) -> None:
    served = ctx.serving(timeout_seconds=LONG)
    expect.equal(served.job.timeout_seconds, LONG, "timeout_seconds of the job")
    observer = ctx.observer(served.room_id)
    worker = ctx.peer()
    join_job(worker, served.full_name, served.worker_id)
    task = ctx.submit(served.room_id, served.full_name, timeout_seconds=LIMIT)
    default = ctx.submit(served.room_id, served.full_name)
    expect.equal(
        (task.timeout_seconds, task.deadline_at, default.timeout_seconds),
        (LIMIT, None, LONG),
        "(timeout_seconds, deadline_at) of the task, timeout_seconds of a task "
        "without its own",
    )
    claimed = ctx.claim(served.worker_id)
    expect.equal(claimed.id if claimed else None, task.id, "the claimed task")
    running = ctx.update(task.id, "running", worker_id=served.worker_id)
    _due(running.started_at, running.deadline_at, LIMIT, "deadline_at")
    failed = _failed(ctx, task.id, LIMIT + DUE_WITHIN + POLL_SLACK)
    _on_time(failed, running.deadline_at, ErrorCode.DEADLINE_EXCEEDED)
    got = worker.wait_for(CANCELLED, about(task.id), what="task_cancelled")
    notice = expect.model(got.payload, TaskCancelled, "task_cancelled")
    expect.equal(
        (notice.task_id, notice.job_name, notice.reason),
        (str(task.id), served.full_name, CancelReason.DEADLINE_EXCEEDED),
        "(task_id, job_name, reason) of task_cancelled",
    )
    observer.wait_for(
        STATUS,
        lambda p: (
            about(task.id)(p)
            and p["status"] == "failed"
            and p["error_code"] == ErrorCode.DEADLINE_EXCEEDED.value
        ),
        what="task_status_event failed with error_code deadline_exceeded",
    )
    answer = ctx.report_progress(task.id, current=1, worker_id=served.worker_id)
    expect.problem(answer, TaskNotRunning, "for the task past its deadline")


@check(
    "ours.limits.expiry",
    f"with its job's pending_timeout_seconds {LIMIT:g} a task still pending "
    "fails expired within about a second of its expires_at; one claimed in "
    "time, or submitted with a longer limit of its own, does not",
)
def _expiry(ctx: ServerContext) -> None:
    served = ctx.serving(pending_timeout_seconds=LIMIT)
    expect.equal(
        served.job.pending_timeout_seconds, LIMIT, "pending_timeout_seconds of the job"
    )
    claimed_in_time = ctx.submit(served.room_id, served.full_name)
    longer = ctx.submit(served.room_id, served.full_name, pending_timeout_seconds=LONG)
    expiring = ctx.submit(served.room_id, served.full_name)
    for task, limit in ((expiring, LIMIT), (longer, LONG)):
        _due(task.created_at, task.expires_at, limit, f"expires_at ({limit:g} s)")
    claimed = ctx.claim(served.worker_id)
    expect.equal(
        claimed.id if claimed else None, claimed_in_time.id, "the claimed task"
    )
    failed = _failed(ctx, expiring.id, LIMIT + DUE_WITHIN + POLL_SLACK)
    _on_time(failed, expiring.expires_at, ErrorCode.EXPIRED)
    expect.equal(
        (ctx.task(claimed_in_time.id).status, ctx.task(longer.id).status),
        (TaskStatus.CLAIMED, TaskStatus.PENDING),
        "(the claimed task, the one with a longer limit) once the other expired",
    )
