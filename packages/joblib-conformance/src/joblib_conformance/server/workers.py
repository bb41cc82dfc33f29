"""Checks of the worker routes: create, list, heartbeat, delete."""

from __future__ import annotations

from joblib_conformance import expect
from joblib_conformance.server.registry import SERVER_CHECKS
from joblib_conformance.target import ServerContext
from joblib_protocol import (
    Forbidden,
    PaginatedResponse,
    WorkerNotFound,
    WorkerResponse,
    WorkerSummary,
)

check = SERVER_CHECKS.check
UNKNOWN = "00000000-0000-4000-8000-000000000000"
"""A well-formed worker or task id that no server has handed out."""


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
