"""Checks of the task routes: submit, read, list, paginate, and the state machine."""

from __future__ import annotations

from urllib.parse import urlsplit

from joblib_conformance import expect
from joblib_conformance.rest import segment
from joblib_conformance.server.registry import SERVER_CHECKS
from joblib_conformance.server.workers import UNKNOWN
from joblib_conformance.target import ServerContext
from joblib_protocol import (
    API_PREFIX,
    GLOBAL_ROOM,
    VALID_TRANSITIONS,
    Forbidden,
    InvalidRoomId,
    InvalidTaskTransition,
    JobNotFound,
    PaginatedResponse,
    TaskNotFound,
    TaskResponse,
    TaskStatus,
    ValidationFailed,
)

check = SERVER_CHECKS.check


def _page(ctx: ServerContext, path: str) -> PaginatedResponse[TaskResponse]:
    body = expect.status(ctx.user.get(path), 200, f"from GET {path}")
    return expect.model(body, PaginatedResponse[TaskResponse], f"GET {path}")


@check(
    "core.tasks.submit",
    "POST /rooms/{room}/tasks/{full_name}: 202 pending task, Location, Retry-After",
)
def _submit(ctx: ServerContext) -> None:
    served = ctx.serving()
    payload = {"angle": 90, "nested": {"list": [1, "two", None]}}
    answer = ctx.user.post(
        f"/rooms/{served.room_id}/tasks/{segment(served.full_name)}",
        json={"payload": payload},
    )
    task = expect.model(
        expect.status(answer, 202, "from submitting"), TaskResponse, "the task"
    )
    expect.equal(task.status, TaskStatus.PENDING, "status")
    expect.equal(
        (task.job_name, task.room_id, task.payload),
        (served.full_name, served.room_id, payload),
        "(job_name, room_id, payload)",
    )
    expect.aware(task.created_at, "created_at")
    expect.equal(
        (task.started_at, task.completed_at, task.worker_id, task.error),
        (None, None, None, None),
        "(started_at, completed_at, worker_id, error)",
    )
    expect.equal(task.queue_position, 1, "queue_position of the only pending task")
    location = answer.headers.get("location", "")
    expect.equal(urlsplit(location).path, f"{API_PREFIX}/tasks/{task.id}", "Location")
    expect.equal(answer.headers.get("retry-after"), "1", "Retry-After")
    expect.equal(ctx.task(task.id), task, "GET /tasks/{id} of the new task")


@check(
    "core.tasks.submit-refused",
    "submitting: 404 job-not-found for unknown jobs and other rooms' jobs, "
    "400 invalid-room-id",
)
def _submit_refused(ctx: ServerContext) -> None:
    served = ctx.serving()
    cases = [
        (served.room_id, ctx.full_name(served.room_id, ctx.name("Missing"))),
        (ctx.room(), served.full_name),
    ]
    for room_id, name in cases:
        answer = ctx.user.post(
            f"/rooms/{room_id}/tasks/{segment(name)}", json={"payload": {}}
        )
        expect.problem(answer, JobNotFound, f"for {name} from {room_id}")
    answer = ctx.user.post(
        f"/rooms/bad:room/tasks/{segment(served.full_name)}", json={"payload": {}}
    )
    expect.problem(answer, InvalidRoomId)


@check(
    "core.tasks.global-job",
    "a task of an @global job belongs to the room it was submitted in",
)
def _global_job(ctx: ServerContext) -> None:
    served = ctx.serving(GLOBAL_ROOM, rest=ctx.admin)
    room_id = ctx.room()
    task = ctx.submit(room_id, served.full_name)
    expect.equal((task.room_id, task.job_name), (room_id, served.full_name), "task")
    listed = _page(ctx, f"/rooms/{room_id}/tasks")
    expect.equal([t.id for t in listed.items], [task.id], "the room's tasks")
    of_job = _page(ctx, f"/rooms/{room_id}/jobs/{segment(served.full_name)}/tasks")
    expect.equal([t.id for t in of_job.items], [task.id], "the job's tasks there")


@check("core.tasks.get", "GET /tasks/{id}: the task; 404 task-not-found")
def _get(ctx: ServerContext) -> None:
    served = ctx.serving()
    task = ctx.submit(served.room_id, served.full_name)
    expect.equal(ctx.task(task.id, ctx.other), task, "the task read by another user")
    expect.problem(ctx.user.get(f"/tasks/{UNKNOWN}"), TaskNotFound)


@check(
    "core.tasks.queue-position",
    "queue_position counts a job's pending tasks from 1, and only while pending",
)
def _queue_position(ctx: ServerContext) -> None:
    served = ctx.serving()
    tasks = [ctx.submit(served.room_id, served.full_name) for _ in range(3)]
    expect.equal([t.queue_position for t in tasks], [1, 2, 3], "positions at submit")
    claimed = ctx.claim(served.worker_id)
    expect.that(claimed is not None, "a claimed task", claimed)
    now = [ctx.task(t.id).queue_position for t in tasks]
    expect.equal(now, [None, 1, 2], "positions after the first was claimed")


@check(
    "core.tasks.list",
    "GET /rooms/{room}/tasks and …/jobs/{full_name}/tasks: newest first, ?status=",
)
def _list_tasks(ctx: ServerContext) -> None:
    room_id = ctx.room()
    first = ctx.serving(room_id)
    second = ctx.serving(room_id)
    a = ctx.submit(room_id, first.full_name)
    b = ctx.submit(room_id, second.full_name)
    c = ctx.submit(room_id, first.full_name)
    elsewhere = ctx.serving()
    ctx.submit(elsewhere.room_id, elsewhere.full_name)
    ctx.update(b.id, "cancelled", rest=ctx.admin)
    everything = _page(ctx, f"/rooms/{room_id}/tasks")
    expect.equal(
        [t.id for t in everything.items], [c.id, b.id, a.id], "the room's tasks"
    )
    expect.equal(everything.total, 3, "total")
    pending = _page(ctx, f"/rooms/{room_id}/tasks?status=pending")
    expect.equal([t.id for t in pending.items], [c.id, a.id], "?status=pending")
    cancelled = _page(ctx, f"/rooms/{room_id}/tasks?status=cancelled")
    expect.equal([t.id for t in cancelled.items], [b.id], "?status=cancelled")
    path = f"/rooms/{room_id}/jobs/{segment(first.full_name)}/tasks"
    expect.equal([t.id for t in _page(ctx, path).items], [c.id, a.id], "job's tasks")
    expect.equal(
        [t.id for t in _page(ctx, path + "?status=cancelled").items],
        [],
        "job's tasks with ?status=cancelled",
    )


@check(
    "core.pagination",
    "?limit= and ?offset= page lists newest first, with total, limit and offset",
)
def _pagination(ctx: ServerContext) -> None:
    served = ctx.serving()
    ids = [ctx.submit(served.room_id, served.full_name).id for _ in range(5)]
    newest_first = ids[::-1]
    base = f"/rooms/{served.room_id}/tasks"
    cases = [
        ("", newest_first, 50, 0),
        ("?limit=2", newest_first[:2], 2, 0),
        ("?limit=2&offset=2", newest_first[2:4], 2, 2),
        ("?limit=2&offset=4", newest_first[4:], 2, 4),
        ("?offset=10", [], 50, 10),
        ("?limit=0", [], 0, 0),
        ("?limit=500", newest_first, 500, 0),
    ]
    for query, wanted, limit, offset in cases:
        page = _page(ctx, base + query)
        expect.equal(
            ([t.id for t in page.items], page.total, page.limit, page.offset),
            (wanted, 5, limit, offset),
            f"(items, total, limit, offset) of {query or 'the default page'}",
        )


def _in_state(ctx: ServerContext, state: TaskStatus) -> TaskResponse:
    """A fresh task in `state`, reached the core way (claim, then PATCH)."""
    served = ctx.serving()
    task = ctx.submit(served.room_id, served.full_name)
    if state == TaskStatus.PENDING:
        return task
    if state == TaskStatus.CANCELLED:
        return ctx.update(task.id, "cancelled", rest=ctx.admin)
    claimed = ctx.claim(served.worker_id)
    expect.that(claimed is not None, "a claimed task", claimed)
    assert claimed is not None
    if state == TaskStatus.CLAIMED:
        return claimed
    running = ctx.update(task.id, "running")
    if state == TaskStatus.RUNNING:
        return running
    return ctx.update(task.id, state.value)


@check(
    "core.tasks.transitions",
    "PATCH /tasks/{id} makes each valid transition and sets started_at, "
    "completed_at and error",
)
def _transitions(ctx: ServerContext) -> None:
    for source in (TaskStatus.PENDING, TaskStatus.CLAIMED, TaskStatus.RUNNING):
        for target in sorted(VALID_TRANSITIONS[source]):
            if target == TaskStatus.CLAIMED:
                continue  # only POST /tasks/claim claims
            before = _in_state(ctx, source)
            error = "it broke" if target == TaskStatus.FAILED else None
            # A pending task has no worker whose owner could report it.
            rest = ctx.admin if source == TaskStatus.PENDING else ctx.user
            after = ctx.update(before.id, target.value, error=error, rest=rest)
            what = f"{source.value} → {target.value}"
            expect.equal(after.status, target, f"status after {what}")
            if target == TaskStatus.RUNNING:
                expect.aware(after.started_at, f"started_at after {what}")
            if target in (
                TaskStatus.COMPLETED,
                TaskStatus.FAILED,
                TaskStatus.CANCELLED,
            ):
                expect.aware(after.completed_at, f"completed_at after {what}")
            expect.equal(after.error, error, f"error after {what}")
            expect.equal(ctx.task(before.id), after, f"the task read after {what}")


@check(
    "core.tasks.invalid-transitions",
    "every invalid transition (and claiming by PATCH) is 409 invalid-task-transition "
    "and changes nothing",
)
def _invalid_transitions(ctx: ServerContext) -> None:
    for source in TaskStatus:
        task = _in_state(ctx, source)
        for target in TaskStatus:
            if target in VALID_TRANSITIONS[source] and target != TaskStatus.CLAIMED:
                continue
            answer = ctx.admin.patch(f"/tasks/{task.id}", json={"status": target})
            expect.problem(
                answer, InvalidTaskTransition, f"for {source.value} → {target.value}"
            )
        expect.equal(ctx.task(task.id), task, f"the {source.value} task, unchanged")


@check(
    "core.tasks.update-refused",
    "PATCH /tasks/{id}: 403 for someone else's task, 404 task-not-found; admins may",
)
def _update_refused(ctx: ServerContext) -> None:
    _served, task = ctx.running_task()
    answer = ctx.other.patch(f"/tasks/{task.id}", json={"status": "completed"})
    expect.problem(answer, Forbidden, "for another user's running task")
    expect.equal(ctx.task(task.id).status, TaskStatus.RUNNING, "status, unchanged")
    answer = ctx.user.patch(f"/tasks/{UNKNOWN}", json={"status": "cancelled"})
    expect.problem(answer, TaskNotFound)
    done = ctx.update(task.id, "completed", rest=ctx.admin)
    expect.equal(done.status, TaskStatus.COMPLETED, "status after the admin's update")


@check(
    "ours.tasks.submitter-cancels",
    "the submitter of a task may cancel it, and do nothing else with it",
)
def _submitter_cancels(ctx: ServerContext) -> None:
    served, running = ctx.running_task()
    task = ctx.submit(served.room_id, served.full_name, rest=ctx.other)
    answer = ctx.other.patch(f"/tasks/{running.id}", json={"status": "cancelled"})
    expect.problem(answer, Forbidden, "cancelling a task another user submitted")
    claimed = ctx.claim(served.worker_id)
    expect.that(claimed is not None and claimed.id == task.id, "the task", claimed)
    answer = ctx.other.patch(f"/tasks/{task.id}", json={"status": "running"})
    expect.problem(answer, Forbidden, "the submitter starting the task")
    cancelled = ctx.update(task.id, "cancelled", rest=ctx.other)
    expect.equal(cancelled.status, TaskStatus.CANCELLED, "status")


@check(
    "ours.pagination.offset-cap",
    "every list takes ?offset= up to the server's max_list_offset, and answers an "
    "offset above it with 422 validation-error",
)
def _offset_cap(ctx: ServerContext) -> None:
    served = ctx.serving()
    room, job = served.room_id, segment(served.full_name)
    cap = ctx.target.max_list_offset
    lists = [
        "/workers",
        f"/rooms/{room}/jobs",
        f"/rooms/{room}/jobs/{job}/tasks",
        f"/rooms/{room}/workers",
        f"/rooms/{room}/tasks",
    ]
    for path in lists:
        at_cap = expect.status(ctx.user.get(f"{path}?offset={cap}"), 200, f"{path}")
        # Only GET /workers reads beyond the check's own room: it may be longer.
        expect.equal(
            (at_cap.get("offset"), at_cap.get("items") if path != "/workers" else []),
            (cap, []),
            f"(offset, items) of {path}?offset={cap}",
        )
        over = ctx.user.get(f"{path}?offset={cap + 1}")
        body = expect.problem(over, ValidationFailed, f"for {path}?offset={cap + 1}")
        expect.that(
            isinstance(body.get("errors"), list) and body["errors"],
            f"the field errors of {path}?offset={cap + 1}",
            body,
        )
