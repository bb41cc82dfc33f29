"""Checks of ours: `Idempotency-Key` on submits."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx

from joblib_conformance import expect
from joblib_conformance.rest import Rest, segment
from joblib_conformance.server.registry import SERVER_CHECKS
from joblib_conformance.target import Served, ServerContext
from joblib_protocol import (
    PaginatedResponse,
    TaskResponse,
    TaskStatus,
)

check = SERVER_CHECKS.check

REPLAYED = "Idempotent-Replayed"

CONCURRENT = 4
"""Submits sent at once with one key: all of them must answer the same task."""


def _submit(
    ctx: ServerContext, served: Served, key: str, rest: Rest | None = None
) -> tuple[TaskResponse, httpx.Response]:
    answer = (rest or ctx.user).post(
        f"/rooms/{segment(served.room_id)}/tasks/{segment(served.full_name)}",
        json={"payload": {"angle": 1}},
        headers={"Idempotency-Key": key},
    )
    body = expect.status(answer, 202, f"from a submit with Idempotency-Key {key!r}")
    task = expect.model(body, TaskResponse, "the submitted task")
    ctx.remember_task(task.id)
    return task, answer


def _replayed(answer: httpx.Response) -> str | None:
    return answer.headers.get(REPLAYED)


@check(
    "ours.tasks.idempotency-key",
    "a submit sent again with the same Idempotency-Key (same identity) answers the "
    "first task as it is now, with Idempotent-Replayed: true, also when sent "
    "concurrently; another key or identity makes a new task",
)
def _idempotency_key(ctx: ServerContext) -> None:
    served = ctx.serving()
    key = f"cf-{uuid.uuid4().hex}"
    first, answer = _submit(ctx, served, key)
    expect.that(
        _replayed(answer) is None,
        f"no {REPLAYED} header on the first submit",
        dict(answer.headers),
    )
    claimed = ctx.claim(served.worker_id)
    expect.equal(claimed.id if claimed else None, first.id, "the claimed task")
    again, answer = _submit(ctx, served, key)
    expect.equal(again.id, first.id, "the task answered to the same key")
    expect.equal(again.status, TaskStatus.CLAIMED, "its status now (claimed)")
    expect.equal(_replayed(answer), "true", f"the {REPLAYED} header")
    expect.equal(
        answer.headers.get("location", "").rsplit("/", 1)[-1],
        str(first.id),
        "the Location of the replayed submit",
    )
    other_key, _answer = _submit(ctx, served, key + "-2")
    other_identity, answer = _submit(ctx, served, key, ctx.other)
    expect.that(
        len({first.id, other_key.id, other_identity.id}) == 3
        and _replayed(answer) is None,
        "a new task for another key, and for another identity's same key",
        [first.id, other_key.id, other_identity.id, _replayed(answer)],
    )

    concurrent = f"cf-{uuid.uuid4().hex}"
    with ThreadPoolExecutor(CONCURRENT) as pool:
        answered = list(
            pool.map(lambda _: _submit(ctx, served, concurrent)[0].id, range(4))
        )
    expect.equal(len(set(answered)), 1, f"one task for {CONCURRENT} concurrent submits")
    body = expect.status(
        ctx.user.get(f"/rooms/{segment(served.room_id)}/tasks?limit=500"), 200
    )
    page = expect.model(body, PaginatedResponse[TaskResponse], "the room's tasks")
    expect.equal(page.total, 4, "tasks in the room (four keys or identities)")
