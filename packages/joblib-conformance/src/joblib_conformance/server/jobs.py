"""Checks of the job routes: register, list, get, soft delete, `@global`."""

from __future__ import annotations

from typing import Any

import httpx

from joblib_conformance import expect
from joblib_conformance.checks import CheckSkipped
from joblib_conformance.rest import segment
from joblib_conformance.server.registry import SERVER_CHECKS
from joblib_conformance.server.workers import UNKNOWN
from joblib_conformance.target import SCHEMA, ServerContext
from joblib_protocol import (
    GLOBAL_ROOM,
    INTERNAL_ROOM,
    DisconnectPolicy,
    Forbidden,
    InternalJobNotConfigured,
    InvalidCategory,
    InvalidRoomId,
    JobNotFound,
    JobResponse,
    JobSummary,
    PaginatedResponse,
    SchemaConflict,
    WorkerNotFound,
)

check = SERVER_CHECKS.check


def _jobs(ctx: ServerContext, room_id: str) -> list[str]:
    body = expect.status(ctx.user.get(f"/rooms/{segment(room_id)}/jobs?limit=500"), 200)
    page = expect.model(body, PaginatedResponse[JobSummary], f"the jobs of {room_id}")
    return [job.full_name for job in page.items]


@check(
    "core.jobs.register",
    "PUT /rooms/{room}/jobs: 201 new, 200 same schema again, links each worker",
)
def _register(ctx: ServerContext) -> None:
    room_id, name = ctx.room(), ctx.name()
    job = ctx.register(room_id, name)
    full_name = ctx.full_name(room_id, name)
    expect.equal(job.full_name, full_name, "full_name")
    expect.equal(
        (job.room_id, job.category, job.name),
        (room_id, ctx.target.category, name),
        "(room_id, category, name)",
    )
    expect.equal(job.schema_, SCHEMA, "the schema")
    expect.that(job.worker_id is not None, "the created worker's id", job.worker_id)
    expect.equal(job.workers, [job.worker_id], "workers")
    again = ctx.register(room_id, name, worker_id=str(job.worker_id), expect_status=200)
    expect.equal(again.id, job.id, "the job's id when registered again")
    second = ctx.create_worker()
    both = ctx.register(room_id, name, worker_id=second, expect_status=200)
    expect.equal(
        sorted(map(str, both.workers)),
        sorted([str(job.worker_id), second]),
        "workers after a second worker registered",
    )
    expect.equal(str(both.worker_id), second, "worker_id of the second registration")


@check(
    "core.jobs.register-refused",
    "PUT /rooms/{room}/jobs refuses: 409 schema-conflict, 400 invalid-category and "
    "invalid-room-id, 403 reserved rooms for non-admins, 404 worker-not-found",
)
def _register_refused(ctx: ServerContext) -> None:
    served = ctx.serving()
    name = served.job.name

    def put(room_id: str, **changes: Any) -> httpx.Response:
        body = {"category": ctx.target.category, "name": name, "schema": SCHEMA}
        return ctx.user.put(f"/rooms/{segment(room_id)}/jobs", json=body | changes)

    expect.problem(
        put(served.room_id, schema={"type": "object", "title": "other"}),
        SchemaConflict,
        "for another schema",
    )
    expect.problem(
        put(served.room_id, category="no-such-category"),
        InvalidCategory,
    )
    for bad in ("bad:room", "@elsewhere"):
        expect.problem(put(bad), InvalidRoomId, f"for room {bad!r}")
    for reserved in (GLOBAL_ROOM, INTERNAL_ROOM):
        expect.problem(put(reserved), Forbidden, f"for a user in {reserved}")
    expect.problem(
        put(ctx.room(), worker_id=UNKNOWN),
        WorkerNotFound,
        "for an unknown worker_id",
    )
    foreign = ctx.create_worker(ctx.other)
    expect.problem(
        put(ctx.room(), worker_id=foreign),
        WorkerNotFound,
        "for another identity's worker_id",
    )


@check(
    "core.jobs.list",
    "GET /rooms/{room}/jobs: the room's jobs and @global ones, newest first",
)
def _list_jobs(ctx: ServerContext) -> None:
    room_id = ctx.room()
    first = ctx.serving(room_id)
    second = ctx.serving(room_id)
    elsewhere = ctx.serving()
    everywhere = ctx.serving(GLOBAL_ROOM, rest=ctx.admin)
    listed = _jobs(ctx, room_id)
    for served in (first, second, everywhere):
        expect.that(served.full_name in listed, f"{served.full_name} listed", listed)
    expect.that(
        elsewhere.full_name not in listed, "another room's job left out", listed
    )
    expect.that(
        listed.index(second.full_name) < listed.index(first.full_name),
        "the newer job listed first",
        listed,
    )
    global_jobs = _jobs(ctx, GLOBAL_ROOM)
    expect.that(
        everywhere.full_name in global_jobs and first.full_name not in global_jobs,
        "only @global jobs in the @global room's list",
        global_jobs[:10],
    )
    answer = ctx.user.get(f"/rooms/{room_id}/jobs?limit=1")
    page = expect.model(
        expect.status(answer, 200), PaginatedResponse[JobSummary], "a page of one"
    )
    expect.equal((len(page.items), page.limit), (1, 1), "(items, limit) with limit=1")
    expect.that(page.total >= 3, "total counting every visible job (≥ 3)", page.total)


@check(
    "core.jobs.get",
    "GET /rooms/{room}/jobs/{full_name}: the job; 404 job-not-found for unknown "
    "names and other rooms' jobs",
)
def _get(ctx: ServerContext) -> None:
    served = ctx.serving()
    path = f"/rooms/{served.room_id}/jobs/{segment(served.full_name)}"
    job = expect.model(expect.status(ctx.other.get(path), 200), JobResponse, "the job")
    expect.equal(job.full_name, served.full_name, "full_name")
    expect.equal([str(w) for w in job.workers], [served.worker_id], "workers")
    everywhere = ctx.serving(GLOBAL_ROOM, rest=ctx.admin)
    expect.status(
        ctx.user.get(f"/rooms/{served.room_id}/jobs/{segment(everywhere.full_name)}"),
        200,
        "for an @global job seen from a room",
    )
    unknown = ctx.full_name(served.room_id, ctx.name("Missing"))
    for room_id, name in (
        (served.room_id, unknown),
        (ctx.room(), served.full_name),
        (served.room_id, "not-a-full-name"),
    ):
        expect.problem(
            ctx.user.get(f"/rooms/{room_id}/jobs/{segment(name)}"),
            JobNotFound,
            f"for {name} seen from {room_id}",
        )


@check(
    "core.jobs.soft-delete",
    "a job left with no worker and no open task disappears, and comes back when "
    "registered again",
)
def _soft_delete(ctx: ServerContext) -> None:
    served = ctx.serving()
    path = f"/rooms/{served.room_id}/jobs/{segment(served.full_name)}"
    task = ctx.submit(served.room_id, served.full_name)
    expect.status(ctx.user.delete(f"/workers/{served.worker_id}"), 204)
    kept = expect.status(ctx.user.get(path), 200, "while a task is still pending")
    expect.equal(kept.get("workers"), [], "workers of a job nobody serves")
    ctx.update(task.id, "cancelled", rest=ctx.admin)
    expect.problem(ctx.user.get(path), JobNotFound, "once nothing needs the job")
    listed = _jobs(ctx, served.room_id)
    expect.that(served.full_name not in listed, "the job no longer listed", listed)
    back = ctx.register(served.room_id, served.job.name, expect_status=201)
    expect.equal(back.full_name, served.full_name, "the revived job's name")
    expect.status(ctx.user.get(path), 200, "once registered again")


@check(
    "core.jobs.internal-not-configured",
    "a task for an @internal job on a server that runs none: 503 "
    "internal-job-not-configured (skipped when the server runs internal jobs)",
    required=False,
)
def _internal_not_configured(ctx: ServerContext) -> None:
    served = ctx.serving(INTERNAL_ROOM, rest=ctx.admin)
    answer = ctx.user.post(
        f"/rooms/{ctx.room()}/tasks/{segment(served.full_name)}", json={"payload": {}}
    )
    if answer.status_code == 202:
        raise CheckSkipped("this server runs @internal jobs")
    expect.problem(answer, InternalJobNotConfigured)


@check(
    "ours.jobs.on-disconnect",
    "JobResponse.on_disconnect shows the policy in force: the server's defaults, or "
    "what the registration set",
)
def _on_disconnect(ctx: ServerContext) -> None:
    plain = ctx.serving()
    expect.that(
        plain.job.on_disconnect is not None,
        "on_disconnect in the answer of a registration that set none",
        plain.job.on_disconnect,
    )
    policy = {"action": "requeue", "max_attempts": 2, "grace_seconds": 0}
    served = ctx.serving(on_disconnect=policy)
    expect.equal(served.job.on_disconnect, DisconnectPolicy(**policy), "the policy set")
    path = f"/rooms/{served.room_id}/jobs/{segment(served.full_name)}"
    job = expect.model(expect.status(ctx.user.get(path), 200), JobResponse, "the job")
    expect.equal(job.on_disconnect, DisconnectPolicy(**policy), "the policy read back")


@check(
    "ours.jobs.owner-only",
    "registering another identity's room job (linking a worker to it) is 403 "
    "forbidden and changes nothing; an admin may link to it",
)
def _owner_only(ctx: ServerContext) -> None:
    served = ctx.serving()
    room, name = served.room_id, served.job.name
    body = {"category": ctx.target.category, "name": name, "schema": SCHEMA}
    foreign = ctx.create_worker(ctx.other)
    for what, extra in (
        ("with one of its workers", {"worker_id": foreign}),
        ("with a new worker", {}),
    ):
        answer = ctx.other.put(f"/rooms/{segment(room)}/jobs", json=body | extra)
        expect.problem(answer, Forbidden, f"for another identity's job, {what}")
    path = f"/rooms/{segment(room)}/jobs/{segment(served.full_name)}"
    job = expect.model(expect.status(ctx.user.get(path), 200), JobResponse, "the job")
    expect.equal(
        [str(w) for w in job.workers],
        [served.worker_id],
        "the job's workers, unchanged",
    )
    workers = expect.status(ctx.user.get(f"/rooms/{segment(room)}/workers"), 200)
    listed = [item.get("id") for item in workers.get("items", [])]
    expect.equal(listed, [served.worker_id], "the room's workers, unchanged")
    linked = ctx.register(
        room,
        name,
        rest=ctx.admin,
        worker_id=ctx.create_worker(ctx.admin),
        expect_status=200,
    )
    expect.equal(len(linked.workers), 2, "the job's workers once an admin linked one")
