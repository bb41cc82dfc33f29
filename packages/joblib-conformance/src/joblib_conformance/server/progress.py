"""Checks of progress: `PUT /tasks/{id}/progress` while a task runs, the latest
report shown by `GET /tasks/{id}`, and `task_progress_event` to the task's room."""

from __future__ import annotations

import time
from typing import Any

import httpx

from joblib_conformance import expect
from joblib_conformance.server.events import STATUS, about
from joblib_conformance.server.registry import SERVER_CHECKS
from joblib_conformance.server.workers import UNKNOWN
from joblib_conformance.target import ServerContext
from joblib_protocol import (
    Forbidden,
    TaskNotFound,
    TaskNotRunning,
    TaskProgress,
    TaskProgressEvent,
    TaskWorkerMismatch,
    Unauthorized,
    ValidationFailed,
)

check = SERVER_CHECKS.check

PROGRESS = TaskProgressEvent.event_name

BURST = 30
"""Progress reports sent back to back in `progress.coalesced`."""

EVENTS_PER_SECOND = 10
"""The most `task_progress_event`s a second per task (about: see `RATE_SLACK`)."""

RATE_SLACK = 1.2
"""How far over `EVENTS_PER_SECOND` a server's timers may drift."""


def _accepted(answer: httpx.Response, what: str) -> None:
    expect.status(answer, 204, what)
    expect.that(not answer.content, f"an empty 204 {what}", answer.text)


def _progress_of(ctx: ServerContext, task_id: object) -> dict[str, Any] | None:
    progress = ctx.task(task_id).progress
    return None if progress is None else progress.model_dump()


@check(
    "progress.report",
    "PUT /tasks/{id}/progress {current, total?, message?, worker_id?} is 204 while "
    "the task runs; GET shows the latest report, the room's observers get "
    "task_progress_event {id, room_id, progress}; 401, 403, 404 and 422 refused",
)
def _report(ctx: ServerContext) -> None:
    served = ctx.serving()
    observer = ctx.observer(served.room_id)
    _served, task = ctx.running_task(served)
    expect.equal(task.progress, None, "progress of a task that reported none")
    first: dict[str, Any] = {"current": 1, "total": 4, "message": "one of four"}
    answer = ctx.report_progress(task.id, **first, worker_id=served.worker_id)
    _accepted(answer, "from a progress report of the running task")
    expect.equal(_progress_of(ctx, task.id), first, "progress read by GET")
    got = observer.wait_for(PROGRESS, about(task.id), what="a task_progress_event")
    event = expect.model(got.payload, TaskProgressEvent, "task_progress_event")
    expect.equal(
        (event.id, event.room_id, event.progress),
        (str(task.id), served.room_id, TaskProgress(**first)),
        "(id, room_id, progress) of the event",
    )
    _accepted(ctx.report_progress(task.id, current=2.5), "from an unfenced report")
    latest = {"current": 2.5, "total": None, "message": None}
    expect.equal(_progress_of(ctx, task.id), latest, "progress after a second report")
    observer.wait_for(
        PROGRESS,
        lambda p: about(task.id)(p) and p["progress"]["current"] == 2.5,
        what="the event of the second report",
    )
    refusals = [
        (ctx.anonymous, {"current": 3}, Unauthorized, "without credentials"),
        (ctx.other, {"current": 3}, Forbidden, "from another user"),
        (ctx.user, {"current": -1}, ValidationFailed, "with current -1"),
        (ctx.user, {"current": 1, "total": 0}, ValidationFailed, "with total 0"),
        (ctx.user, {"total": 3}, ValidationFailed, "without current"),
        (ctx.user, {"current": 1, "percent": 3}, ValidationFailed, "an unknown field"),
    ]
    for rest, body, kind, what in refusals:
        expect.problem(ctx.report_progress(task.id, rest, **body), kind, what)
    answer = ctx.report_progress(UNKNOWN, current=1)
    expect.problem(answer, TaskNotFound, "for an unknown task")
    expect.equal(_progress_of(ctx, task.id), latest, "progress after the refusals")


@check(
    "progress.not-running",
    "progress for a task pending, claimed, or no longer running (completed, "
    "cancelled) is 409 task-not-running and changes nothing; GET keeps the last "
    "report once the task ended",
)
def _not_running(ctx: ServerContext) -> None:
    served = ctx.serving()
    pending = ctx.submit(served.room_id, served.full_name)
    answer = ctx.report_progress(pending.id, ctx.admin, current=1)
    expect.problem(answer, TaskNotRunning, "for a pending task (as an admin)")
    claimed = ctx.claim(served.worker_id)
    expect.equal(claimed.id if claimed else None, pending.id, "the claimed task")
    answer = ctx.report_progress(pending.id, current=1, worker_id=served.worker_id)
    expect.problem(answer, TaskNotRunning, "for a claimed task")
    expect.equal(_progress_of(ctx, pending.id), None, "progress of the claimed task")
    ctx.update(pending.id, "running")
    _accepted(ctx.report_progress(pending.id, current=1), "while it runs")
    ctx.update(pending.id, "completed", result=1)
    answer = ctx.report_progress(pending.id, current=2, worker_id=served.worker_id)
    expect.problem(answer, TaskNotRunning, "for a completed task")
    last = {"current": 1, "total": None, "message": None}
    expect.equal(_progress_of(ctx, pending.id), last, "progress of the completed task")
    _served, cancelled = ctx.running_task(served)
    ctx.update(cancelled.id, "cancelled", rest=ctx.admin)
    answer = ctx.report_progress(cancelled.id, current=1, worker_id=served.worker_id)
    expect.problem(answer, TaskNotRunning, "for a cancelled task")


@check(
    "progress.fencing",
    "progress naming a worker_id that does not hold the task is 409 "
    "task-worker-mismatch and changes nothing",
)
def _fencing(ctx: ServerContext) -> None:
    served, task = ctx.running_task()
    stranger = ctx.create_worker()
    answer = ctx.report_progress(task.id, current=1, worker_id=stranger)
    expect.problem(answer, TaskWorkerMismatch, "for another worker of the owner")
    expect.equal(_progress_of(ctx, task.id), None, "progress after the refusal")
    answer = ctx.report_progress(task.id, current=1, worker_id=served.worker_id)
    _accepted(answer, "from the task's own worker")


@check(
    "progress.coalesced",
    f"{BURST} reports back to back: the room gets about {EVENTS_PER_SECOND} "
    "task_progress_events a second at most, in order, the latest always, and "
    "before the task's final task_status_event",
)
def _coalesced(ctx: ServerContext) -> None:
    served = ctx.serving()
    observer = ctx.observer(served.room_id)
    _served, task = ctx.running_task(served)
    started = time.monotonic()
    for current in range(1, BURST + 1):
        answer = ctx.report_progress(
            task.id, current=current, total=BURST, worker_id=served.worker_id
        )
        _accepted(answer, f"from report {current} of {BURST}")
    final = {"current": BURST, "total": BURST, "message": None}
    expect.equal(_progress_of(ctx, task.id), final, "progress after the burst")
    ctx.update(task.id, "completed", worker_id=served.worker_id)
    done = observer.wait_for(
        STATUS,
        lambda p: about(task.id)(p) and p["status"] == "completed",
        what="the completed task_status_event",
    )
    received = observer.received()
    finished = next(i for i, e in enumerate(received) if e is done)
    events = [
        (i, e)
        for i, e in enumerate(received)
        if e.name == PROGRESS and about(task.id)(e.payload)
    ]
    expect.that(events, "task_progress_events of the burst", "none")
    seen = [e.payload["progress"]["current"] for _i, e in events]
    expect.equal(seen[-1], BURST, "current of the last task_progress_event")
    expect.that(
        seen == sorted(set(seen)), "the reports' values in the order sent", seen
    )
    late = [e.payload for i, e in events if i > finished]
    expect.that(not late, "every task_progress_event before the completed one", late)
    elapsed = events[-1][1].at - started
    allowed = 2 + int(elapsed * EVENTS_PER_SECOND * RATE_SLACK)
    expect.that(
        len(events) <= allowed,
        f"at most {allowed} task_progress_events in {elapsed:.2f} s",
        f"{len(events)}: {seen}",
    )
