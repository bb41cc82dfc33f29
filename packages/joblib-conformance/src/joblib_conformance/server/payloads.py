"""Checks of ours: payloads checked against their job's JSON Schema at submit
(422 invalid-payload, nothing stored), schemas checked at registration (422
invalid-schema)."""

from __future__ import annotations

from typing import Any

from joblib_conformance import expect
from joblib_conformance.rest import segment
from joblib_conformance.server.events import STATUS, about
from joblib_conformance.server.registry import SERVER_CHECKS
from joblib_conformance.target import ServerContext
from joblib_protocol import (
    InvalidPayload,
    InvalidSchema,
    JobNotFound,
    PaginatedResponse,
    TaskResponse,
)

check = SERVER_CHECKS.check

STRICT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "angle": {"type": "number"},
        "axis": {"enum": ["x", "y", "z"]},
    },
    "required": ["angle"],
}
"""A schema with a required field and an enum, as pydantic writes them."""


def _errors(body: dict[str, Any], what: str) -> list[dict[str, Any]]:
    """The `errors` of a problem document: each with `loc` (a list) and `msg`."""
    errors: list[dict[str, Any]] = body.get("errors") or []
    expect.that(
        isinstance(errors, list)
        and errors
        and all(
            isinstance(e, dict)
            and isinstance(e.get("loc"), list)
            and isinstance(e.get("msg"), str)
            for e in errors
        ),
        f"errors [{{loc: [...], msg}}, ...] {what}",
        body,
    )
    return errors


@check(
    "ours.payloads.invalid-payload",
    "a submit whose payload does not match its job's JSON Schema is 422 "
    "invalid-payload with errors [{loc, msg}] naming each field, and stores "
    "nothing: no task, no event, its Idempotency-Key unused",
)
def _invalid_payload(ctx: ServerContext) -> None:
    room_id = ctx.room()
    observer = ctx.observer(room_id)
    job = ctx.register(room_id, ctx.name(), schema=STRICT)
    path = f"/rooms/{segment(room_id)}/tasks/{segment(job.full_name)}"
    key = {"Idempotency-Key": f"{ctx.name('key')}"}
    # Each wrong value, as the places (inside the payload) its error may name:
    # a missing field at the object that lacks it (jsonschema) or at the field.
    cases: dict[str, tuple[dict[str, Any], list[list[list[Any]]]]] = {
        "a wrong type": ({"angle": "ninety"}, [[["angle"]]]),
        "a missing field and a value not in the enum": (
            {"axis": "w"},
            [[[], ["angle"]], [["axis"]]],
        ),
    }
    for what, (payload, wrong) in cases.items():
        answer = ctx.user.post(path, json={"payload": payload}, headers=key)
        body = expect.problem(answer, InvalidPayload, f"for {what}")
        errors = _errors(body, f"for {what}")
        # `loc` is the path to the value, ["body", "payload", "angle"] on our
        # server: the kit looks at the part inside the payload.
        places = [_inside_payload(e["loc"]) for e in errors]
        missing = [w for w in wrong if not any(p in w for p in places)]
        expect.that(
            not missing,
            f"an error at each of {wrong} (inside the payload) for {what}",
            [e["loc"] for e in errors],
        )
    body = expect.status(ctx.user.get(f"/rooms/{segment(room_id)}/tasks"), 200)
    page = expect.model(body, PaginatedResponse[TaskResponse], "the room's tasks")
    expect.equal(page.total, 0, "tasks in the room after the refused submits")
    answer = ctx.user.post(
        path, json={"payload": {"angle": 1.5, "axis": "x"}}, headers=key
    )
    task = expect.model(
        expect.status(answer, 202, "from a valid submit with the same key"),
        TaskResponse,
        "the valid task",
    )
    ctx.remember_task(task.id)
    expect.equal(
        answer.headers.get("idempotent-replayed"),
        None,
        "Idempotent-Replayed of the first stored submit with the key",
    )
    observer.wait_for(STATUS, about(task.id), what="the valid task's event")
    strays = [
        e.payload for e in observer.received(STATUS) if not about(task.id)(e.payload)
    ]
    expect.that(not strays, "no event of a refused submit", strays)


def _inside_payload(loc: list[Any]) -> list[Any]:
    """The part of an error's `loc` inside the payload."""
    if "payload" in loc:
        return loc[loc.index("payload") + 1 :]
    return loc


@check(
    "ours.payloads.invalid-schema",
    "a registration whose schema is not a valid JSON Schema (2020-12) is 422 "
    "invalid-schema with errors, and registers nothing",
)
def _invalid_schema(ctx: ServerContext) -> None:
    room_id = ctx.room()
    name = ctx.name()
    cases = {
        "a type that is not one": {"type": "nonsense"},
        "properties as a list": {"type": "object", "properties": ["angle"]},
        "a negative minLength": {"type": "string", "minLength": -1},
    }
    for what, schema in cases.items():
        answer = ctx.user.put(
            f"/rooms/{segment(room_id)}/jobs",
            json={"category": ctx.target.category, "name": name, "schema": schema},
        )
        body = expect.problem(answer, InvalidSchema, f"for {what}")
        _errors(body, f"for {what}")
    full_name = ctx.full_name(room_id, name)
    answer = ctx.user.get(f"/rooms/{segment(room_id)}/jobs/{segment(full_name)}")
    expect.problem(answer, JobNotFound, "for the job the refused registrations named")
    job = ctx.register(room_id, name, schema=STRICT)
    expect.equal(job.schema_, STRICT, "the schema of a valid registration")
