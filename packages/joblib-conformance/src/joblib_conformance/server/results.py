"""Checks of results: what a job returned, sent with its `completed` report and
read back by `GET /tasks/{id}` and its long-poll."""

from __future__ import annotations

from typing import Any

from joblib_conformance import expect
from joblib_conformance.checks import CheckSkipped
from joblib_conformance.server.longpoll import long_poll_woken_by
from joblib_conformance.server.registry import SERVER_CHECKS
from joblib_conformance.target import ServerContext
from joblib_protocol import PayloadTooLarge, TaskResponse, TaskStatus, ValidationFailed

check = SERVER_CHECKS.check

RESULT: dict[str, Any] = {
    "angle": 90.5,
    "nested": {"list": [1, "two", None, True], "empty": {}},
    "text": "ünïcode ✓",
}
"""A result with every kind of JSON value in it."""


@check(
    "results.round-trip",
    "PATCH /tasks/{id} completed with a result (any JSON value) stores it: the "
    "answer, GET /tasks/{id} and a waiting long-poll show it; no result is null",
)
def _round_trip(ctx: ServerContext) -> None:
    served, task = ctx.running_task()
    done, answer = long_poll_woken_by(
        ctx,
        task.id,
        lambda: ctx.update(
            task.id, "completed", result=RESULT, worker_id=served.worker_id
        ),
    )
    expect.equal(done.result, RESULT, "result in the PATCH's answer")
    expect.equal(ctx.task(task.id).result, RESULT, "result read by GET /tasks/{id}")
    polled = expect.model(expect.status(answer, 200), TaskResponse, "the long-poll")
    expect.equal(
        (polled.status, polled.result),
        (TaskStatus.COMPLETED, RESULT),
        "(status, result) in the long-poll's answer",
    )
    for value in ([1, "two", {"three": 3}], "a string", 42, False):
        _served, other = ctx.running_task(served)
        ctx.update(other.id, "completed", result=value)
        expect.equal(ctx.task(other.id).result, value, f"the result {value!r} read")
    _served, plain = ctx.running_task(served)
    ctx.update(plain.id, "completed")
    expect.equal(ctx.task(plain.id).result, None, "result of a task completed bare")


@check(
    "results.completed-only",
    "a result with any status but completed (failed, cancelled, running) is 422 "
    "validation-error and changes nothing",
)
def _completed_only(ctx: ServerContext) -> None:
    served, running = ctx.running_task()
    cases = {
        "failed": {"status": "failed", "error": "no", "result": {"partial": 1}},
        "cancelled": {"status": "cancelled", "result": [1]},
    }
    for what, body in cases.items():
        answer = ctx.user.patch(f"/tasks/{running.id}", json=body)
        problem = expect.problem(answer, ValidationFailed, f"for a result with {what}")
        expect.that(
            isinstance(problem.get("errors"), list) and problem["errors"],
            f"the field errors of a result with {what}",
            problem,
        )
    expect.equal(ctx.task(running.id), running, "the running task, unchanged")
    submitted = ctx.submit(served.room_id, served.full_name)
    claimed = ctx.claim(served.worker_id)
    expect.equal(claimed.id if claimed else None, submitted.id, "the claimed task")
    answer = ctx.user.patch(
        f"/tasks/{submitted.id}", json={"status": "running", "result": 1}
    )
    expect.problem(answer, ValidationFailed, "for a result with running")
    expect.equal(ctx.task(submitted.id).status, TaskStatus.CLAIMED, "status, unchanged")
    done = ctx.update(running.id, "completed", result="fine")
    expect.equal(done.result, "fine", "the result once completed")


@check(
    "results.too-large",
    "a result over the server's max_result_bytes (as compact JSON) is 413 "
    "payload-too-large and changes nothing; one of exactly that size is kept "
    "(needs --max-result-bytes)",
)
def _too_large(ctx: ServerContext) -> None:
    limit = ctx.target.max_result_bytes
    if limit is None:
        raise CheckSkipped(
            "give --max-result-bytes N (the server's result size limit) to check 413"
        )
    _served, task = ctx.running_task()
    # A JSON string of n 'x' is n + 2 bytes, quotes included.
    over = "x" * (limit - 1)
    answer = ctx.user.patch(
        f"/tasks/{task.id}", json={"status": "completed", "result": over}
    )
    expect.problem(answer, PayloadTooLarge, f"for a result of {limit + 1} bytes")
    expect.equal(ctx.task(task.id), task, "the running task, unchanged")
    fits = "x" * (limit - 2)
    done = ctx.update(task.id, "completed", result=fits)
    expect.equal(done.status, TaskStatus.COMPLETED, f"a result of {limit} bytes kept")
    expect.that(ctx.task(task.id).result == fits, "the result read back", "another")
