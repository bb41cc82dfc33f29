"""Checks of the worker routes: create, list, heartbeat, delete."""

from __future__ import annotations

import time

from joblib_conformance import expect
from joblib_conformance.server.registry import SERVER_CHECKS
from joblib_conformance.target import ServerContext
from joblib_protocol import (
    ErrorCode,
    Forbidden,
    PaginatedResponse,
    TaskStatus,
    WorkerNotFound,
    WorkerResponse,
    WorkerSummary,
)

check = SERVER_CHECKS.check
UNKNOWN = "00000000-0000-4000-8000-000000000000"
"""A well-formed worker or task id that no server has handed out."""

NOT_HELD = "Worker does not hold the task"
"""The `error` of a task its worker's heartbeat left out (ours)."""

MARGIN_SLACK = 0.5
"""Seconds past the heartbeat task margin the kit waits, for clocks and latency."""


@check(
    "core.workers.create", "POST /workers creates a worker: 201 {id, last_heartbeat}"
)
def _create(ctx: ServerContext) -> None:
    answer = ctx.user.post("/workers")
    body = expect.status(answer, 201, "from POST /workers")
    worker = expect.model(body, WorkerResponse, "POST /workers")
    ctx.remember_worker(str(worker.id))
    expect.aware(worker.last_heartbeat, "last_heartbeat")


@check(
    "core.workers.heartbeat",
    "PATCH /workers/{id} records a heartbeat for the owner; 404 unknown, 403 another's",
)
def _heartbeat(ctx: ServerContext) -> None:
    created = expect.model(
        expect.status(ctx.user.post("/workers"), 201), WorkerResponse, "the worker"
    )
    worker_id = ctx.remember_worker(str(created.id))
    beat = expect.model(
        expect.status(ctx.user.patch(f"/workers/{worker_id}"), 200, "heartbeat"),
        WorkerResponse,
        "the heartbeat's answer",
    )
    expect.equal(str(beat.id), worker_id, "the heartbeat's id")
    expect.that(
        expect.aware(beat.last_heartbeat, "last_heartbeat") >= created.last_heartbeat,
        f"last_heartbeat at or after creation ({created.last_heartbeat})",
        beat.last_heartbeat,
    )
    expect.problem(ctx.user.patch(f"/workers/{UNKNOWN}"), WorkerNotFound, "unknown")
    expect.problem(ctx.other.patch(f"/workers/{worker_id}"), Forbidden, "not owner")


@check(
    "core.workers.delete",
    "DELETE /workers/{id}: 204 for owner or admin, 403 for others, 404 once gone",
)
def _delete(ctx: ServerContext) -> None:
    worker_id = ctx.create_worker()
    expect.problem(ctx.other.delete(f"/workers/{worker_id}"), Forbidden, "not owner")
    expect.status(ctx.user.patch(f"/workers/{worker_id}"), 200, "refused delete kept")
    answer = ctx.user.delete(f"/workers/{worker_id}")
    expect.status(answer, 204, "owner deletes")
    expect.that(not answer.content, "an empty 204", answer.text)
    expect.problem(ctx.user.patch(f"/workers/{worker_id}"), WorkerNotFound, "deleted")
    expect.problem(ctx.user.delete(f"/workers/{worker_id}"), WorkerNotFound, "again")
    someone = ctx.create_worker(ctx.other)
    expect.status(ctx.admin.delete(f"/workers/{someone}"), 204, "admin deletes")


@check(
    "core.workers.list",
    "GET /workers: a page of {id, last_heartbeat, job_count}, newest first",
)
def _list_all(ctx: ServerContext) -> None:
    older = ctx.create_worker()
    served = ctx.serving()
    body = expect.status(ctx.user.get("/workers?limit=500"), 200, "GET /workers")
    page = expect.model(body, PaginatedResponse[WorkerSummary], "GET /workers")
    ids = [str(item.id) for item in page.items]
    expect.that(
        served.worker_id in ids and older in ids,
        "both new workers listed",
        ids[:10],
    )
    expect.that(
        ids.index(served.worker_id) < ids.index(older),
        "the newer worker listed first",
        ids[:10],
    )
    counts = {str(item.id): item.job_count for item in page.items}
    expect.equal(counts[served.worker_id], 1, "job_count of a worker with one job")
    expect.equal(counts[older], 0, "job_count of a worker without jobs")


@check(
    "core.workers.room",
    "GET /rooms/{room}/workers lists the workers serving the room's jobs only",
)
def _list_room(ctx: ServerContext) -> None:
    here = ctx.serving()
    elsewhere = ctx.serving()
    body = expect.status(ctx.user.get(f"/rooms/{here.room_id}/workers"), 200)
    page = expect.model(body, PaginatedResponse[WorkerSummary], "the room's workers")
    ids = {str(item.id) for item in page.items}
    expect.that(here.worker_id in ids, "the room's worker listed", ids)
    expect.that(elsewhere.worker_id not in ids, "another room's worker left out", ids)


@check(
    "ours.workers.heartbeat-tasks",
    "a heartbeat {tasks: [...]} releases the worker's claimed and running tasks it "
    "leaves out (failed, error_code not_held) once claimed longer than the margin, "
    "and none sooner; a heartbeat without tasks releases nothing",
)
def _heartbeat_tasks(ctx: ServerContext) -> None:
    margin = ctx.target.heartbeat_task_margin
    served = ctx.serving(on_disconnect={"action": "fail"})
    worker = f"/workers/{served.worker_id}"
    kept = ctx.submit(served.room_id, served.full_name)
    left_out = ctx.submit(served.room_id, served.full_name)
    ctx.claim(served.worker_id)
    ctx.update(kept.id, "running")
    sent = time.monotonic()
    claimed = ctx.claim(served.worker_id)
    received = time.monotonic()
    expect.equal(claimed.id if claimed else None, left_out.id, "the second claim")

    def beat(body: dict[str, object] | None, what: str) -> None:
        if body is None:
            answer = ctx.user.patch(worker)
        else:
            answer = ctx.user.patch(worker, json=body)
        expect.model(expect.status(answer, 200, what), WorkerResponse, what)

    beat({"tasks": [str(kept.id)]}, "a heartbeat listing one task")
    # The claim can be no older on the server than this, so it must still count.
    if time.monotonic() - sent < margin:
        expect.equal(
            ctx.task(left_out.id).status,
            TaskStatus.CLAIMED,
            f"a claim younger than the margin ({margin:g} s) kept",
        )
    time.sleep(max(0.0, received + margin + MARGIN_SLACK - time.monotonic()))
    beat(None, "a heartbeat without a body")
    beat({}, "a heartbeat without tasks")
    expect.equal(
        ctx.task(left_out.id).status, TaskStatus.CLAIMED, "the task after those"
    )
    beat({"tasks": [str(kept.id)]}, "a heartbeat leaving the claimed task out")
    released = ctx.task(left_out.id)
    expect.equal(
        (released.status, released.error_code, released.error),
        (TaskStatus.FAILED, ErrorCode.NOT_HELD, NOT_HELD),
        "(status, error_code, error) of the task left out",
    )
    still = ctx.task(kept.id)
    expect.equal(
        (still.status, str(still.worker_id)),
        (TaskStatus.RUNNING, served.worker_id),
        "(status, worker_id) of the task listed",
    )
