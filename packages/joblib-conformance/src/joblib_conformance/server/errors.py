"""Checks of authentication on every route, and of ours: problem documents for
bad input, unknown routes, oversized and unfinished bodies, and locked rooms."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from joblib_conformance import expect
from joblib_conformance.checks import CheckFailed, CheckSkipped
from joblib_conformance.rest import Rest, segment, unfinished_body
from joblib_conformance.server.registry import SERVER_CHECKS
from joblib_conformance.target import SCHEMA, Served, ServerContext
from joblib_protocol import (
    GLOBAL_ROOM,
    JobNotFound,
    MethodNotAllowed,
    NotFound,
    PaginatedResponse,
    PayloadTooLarge,
    RequestTimeout,
    RoomLocked,
    TaskResponse,
    TaskStatus,
    Unauthorized,
    ValidationFailed,
)

check = SERVER_CHECKS.check

Request = Callable[[Rest], httpx.Response]


def _every_route(ctx: ServerContext) -> tuple[dict[str, Request], Served, str]:
    """One request per documented route, with real ids (a job, its worker, a
    pending task, also returned), each as the given client sends it."""
    served = ctx.serving()
    task = str(ctx.submit(served.room_id, served.full_name).id)
    room, job, worker = served.room_id, segment(served.full_name), served.worker_id
    register = {"category": ctx.target.category, "name": served.job.name}
    routes: dict[str, Request] = {
        "POST /workers": lambda r: r.post("/workers"),
        "GET /workers": lambda r: r.get("/workers"),
        "PATCH /workers/{id}": lambda r: r.patch(f"/workers/{worker}"),
        "DELETE /workers/{id}": lambda r: r.delete(f"/workers/{worker}"),
        "PUT /rooms/{room}/jobs": lambda r: r.put(
            f"/rooms/{room}/jobs", json=register | {"schema": SCHEMA}
        ),
        "GET /rooms/{room}/jobs": lambda r: r.get(f"/rooms/{room}/jobs"),
        "GET /rooms/{room}/jobs/{name}": lambda r: r.get(f"/rooms/{room}/jobs/{job}"),
        "GET /rooms/{room}/jobs/{name}/tasks": lambda r: r.get(
            f"/rooms/{room}/jobs/{job}/tasks"
        ),
        "GET /rooms/{room}/workers": lambda r: r.get(f"/rooms/{room}/workers"),
        "GET /rooms/{room}/tasks": lambda r: r.get(f"/rooms/{room}/tasks"),
        "POST /rooms/{room}/tasks/{name}": lambda r: r.post(
            f"/rooms/{room}/tasks/{job}", json={"payload": {}}
        ),
        "POST /tasks/claim": lambda r: r.post(
            "/tasks/claim", json={"worker_id": worker}
        ),
        "GET /tasks/{id}": lambda r: r.get(f"/tasks/{task}"),
        "PATCH /tasks/{id}": lambda r: r.patch(
            f"/tasks/{task}", json={"status": "cancelled"}
        ),
    }
    return routes, served, task


@check(
    "core.auth.rest",
    "every route answers 401 without credentials or with a wrong token, and "
    "changes nothing",
)
def _rest_auth(ctx: ServerContext) -> None:
    routes, served, task = _every_route(ctx)
    wrong = Rest(ctx.target.url, "not-a-token", timeout=ctx.timeout)
    ctx.stack.callback(wrong.close)
    let_in = {}
    for who, rest in (("no credentials", ctx.anonymous), ("a wrong token", wrong)):
        for route, send in routes.items():
            answer = send(rest)
            if answer.status_code != 401:
                let_in[f"{route} with {who}"] = answer.status_code
    expect.that(not let_in, "401 from every route", let_in)
    expect.equal(ctx.task(task).status, TaskStatus.PENDING, "an untouched task")
    expect.status(ctx.user.patch(f"/workers/{served.worker_id}"), 200, "its worker")


@check(
    "ours.errors.unauthorized",
    "401 answers are problem documents of type unauthorized",
)
def _unauthorized(ctx: ServerContext) -> None:
    routes, _served, _task = _every_route(ctx)
    for route, send in routes.items():
        expect.problem(send(ctx.anonymous), Unauthorized, f"from {route}")
    expect.problem(ctx.anonymous.get("/openapi.json"), Unauthorized, "openapi.json")


@check(
    "ours.errors.bad-input",
    "malformed JSON, wrong types, bad ids, query values and Idempotency-Keys are "
    "422 validation-error with the field errors, never a 5xx",
)
def _bad_input(ctx: ServerContext) -> None:
    served = ctx.serving()
    task = ctx.submit(served.room_id, served.full_name)
    room, job = served.room_id, segment(served.full_name)
    raw = {"content": b"{not json", "headers": {"Content-Type": "application/json"}}
    cases: dict[str, Request] = {
        "PUT jobs, not JSON": lambda r: r.put(f"/rooms/{room}/jobs", **raw),
        "PUT jobs, a list": lambda r: r.put(f"/rooms/{room}/jobs", json=[]),
        "PUT jobs, wrong types": lambda r: r.put(
            f"/rooms/{room}/jobs", json={"category": 5, "name": ["x"]}
        ),
        "submit, payload not an object": lambda r: r.post(
            f"/rooms/{room}/tasks/{job}", json={"payload": "x"}
        ),
        "submit, NaN": lambda r: r.post(
            f"/rooms/{room}/tasks/{job}",
            content=b'{"payload": {"x": NaN}}',
            headers={"Content-Type": "application/json"},
        ),
        "claim, no body": lambda r: r.post("/tasks/claim"),
        "claim, not a UUID": lambda r: r.post(
            "/tasks/claim", json={"worker_id": "not-a-uuid"}
        ),
        "update, unknown status": lambda r: r.patch(
            f"/tasks/{task.id}", json={"status": "exploded"}
        ),
        "update, not JSON": lambda r: r.patch(f"/tasks/{task.id}", **raw),
        "GET task, not a UUID": lambda r: r.get("/tasks/not-a-uuid"),
        "heartbeat, not a UUID": lambda r: r.patch("/workers/not-a-uuid"),
        "heartbeat, tasks not a list": lambda r: r.patch(
            f"/workers/{served.worker_id}", json={"tasks": "all"}
        ),
        "heartbeat, a task not a UUID": lambda r: r.patch(
            f"/workers/{served.worker_id}", json={"tasks": ["not-a-uuid"]}
        ),
        "submit, empty Idempotency-Key": lambda r: r.post(
            f"/rooms/{room}/tasks/{job}",
            json={"payload": {}},
            headers={"Idempotency-Key": ""},
        ),
        "submit, Idempotency-Key too long": lambda r: r.post(
            f"/rooms/{room}/tasks/{job}",
            json={"payload": {}},
            headers={"Idempotency-Key": "k" * 256},
        ),
        "submit, Idempotency-Key not ASCII": lambda r: r.post(
            f"/rooms/{room}/tasks/{job}",
            json={"payload": {}},
            headers={"Idempotency-Key": "naïve".encode()},
        ),
        "limit=-1": lambda r: r.get(f"/rooms/{room}/tasks?limit=-1"),
        "limit=501": lambda r: r.get(f"/rooms/{room}/tasks?limit=501"),
        "limit=abc": lambda r: r.get(f"/rooms/{room}/tasks?limit=abc"),
        "offset=-1": lambda r: r.get(f"/rooms/{room}/tasks?offset=-1"),
        "status=bogus": lambda r: r.get(f"/rooms/{room}/tasks?status=bogus"),
    }
    wrong = {}
    for what, send in cases.items():
        answer = send(ctx.user)
        try:
            body = expect.problem(answer, ValidationFailed)
        except CheckFailed:
            wrong[what] = expect.shown(answer)
            continue
        if not isinstance(body.get("errors"), list) or not body["errors"]:
            wrong[what] = f"no field errors in {body}"
    expect.that(not wrong, "422 validation-error with errors for each", wrong)
    expect.equal(ctx.task(task.id).status, TaskStatus.PENDING, "an untouched task")


@check(
    "ours.errors.routing",
    "an unknown path is 404 not-found, a known path with another method 405 "
    "method-not-allowed",
)
def _routing(ctx: ServerContext) -> None:
    expect.problem(ctx.user.get("/no-such-route"), NotFound)
    expect.problem(ctx.user.put("/workers"), MethodNotAllowed, "for PUT /workers")


@check(
    "ours.errors.too-large",
    "a body over the server's size limit is 413 payload-too-large",
)
def _too_large(ctx: ServerContext) -> None:
    served = ctx.serving()
    filler = "x" * (ctx.target.max_body_bytes + 1)
    answer = ctx.user.post(
        f"/rooms/{served.room_id}/tasks/{segment(served.full_name)}",
        json={"payload": {"filler": filler}},
    )
    expect.problem(answer, PayloadTooLarge, f"over {ctx.target.max_body_bytes} bytes")


UNFINISHED = b'{"payload": {"angle": '
"""The part of a body the 408 check sends before it falls silent."""


@check(
    "ours.errors.request-timeout",
    "a body that has not all arrived within the server's body timeout is 408 "
    "request-timeout, and nothing is submitted (needs --body-timeout)",
)
def _request_timeout(ctx: ServerContext) -> None:
    limit = ctx.target.body_timeout
    if limit is None:
        raise CheckSkipped(
            "give --body-timeout SECONDS (the server's body time limit) to check 408"
        )
    served = ctx.serving()
    path = f"/rooms/{segment(served.room_id)}/tasks/{segment(served.full_name)}"
    wait = limit + ctx.timeout
    try:
        answer, seconds = unfinished_body(
            ctx.target.url,
            path,
            ctx.target.user_token,
            part=UNFINISHED,
            length=len(UNFINISHED) + 10,
            wait=wait,
        )
    except TimeoutError as exc:
        raise CheckFailed(f"408 within {wait:g} s of an unfinished body", exc) from None
    expect.problem(answer, RequestTimeout, "for a body that stopped halfway")
    expect.that(
        seconds >= limit * 0.9,
        f"the answer no sooner than the body timeout ({limit:g} s)",
        f"after {seconds:.2f} s",
    )
    body = expect.status(ctx.user.get(f"/rooms/{segment(served.room_id)}/tasks"), 200)
    page = expect.model(body, PaginatedResponse[TaskResponse], "the room's tasks")
    expect.equal(page.total, 0, "tasks in the room after the unfinished submit")


@check(
    "ours.errors.room-locked",
    "a submit or registration into a room the access policy locks is 423 "
    "room-locked and changes nothing (needs --locked-room)",
)
def _room_locked(ctx: ServerContext) -> None:
    room = ctx.target.locked_room
    if room is None:
        raise CheckSkipped(
            "give --locked-room ROOM (a room locked for the user) to check 423"
        )
    locked = segment(room)
    name = ctx.name("Locked")
    answer = ctx.user.put(
        f"/rooms/{locked}/jobs",
        json={"category": ctx.target.category, "name": name, "schema": SCHEMA},
    )
    expect.problem(answer, RoomLocked, f"for a registration in {room}")
    expect.problem(
        ctx.user.get(f"/rooms/{locked}/jobs/{segment(ctx.full_name(room, name))}"),
        JobNotFound,
        "for the job the refused registration named",
    )
    everywhere = ctx.serving(GLOBAL_ROOM, rest=ctx.admin)
    answer = ctx.user.post(
        f"/rooms/{locked}/tasks/{segment(everywhere.full_name)}",
        json={"payload": {}},
    )
    expect.problem(answer, RoomLocked, f"for a submit in {room}")
    body = expect.status(
        ctx.user.get(f"/rooms/{locked}/jobs/{segment(everywhere.full_name)}/tasks"),
        200,
        f"from the @global job's tasks in {room}",
    )
    page = expect.model(body, PaginatedResponse[TaskResponse], "the job's tasks")
    expect.equal(page.total, 0, f"tasks of the @global job in {room}")
