"""Checks of the task long-poll: `GET /tasks/{id}` with `Prefer: wait=N`."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar
from uuid import UUID

import httpx

from joblib_conformance import expect
from joblib_conformance.server.claims import WAKE_WITHIN
from joblib_conformance.server.registry import SERVER_CHECKS
from joblib_conformance.target import ServerContext
from joblib_protocol import TaskResponse, TaskStatus

check = SERVER_CHECKS.check

T = TypeVar("T")


def long_poll_woken_by(
    ctx: ServerContext, task_id: UUID, complete: Callable[[], T]
) -> tuple[T, httpx.Response]:
    """Long-poll the task from a thread, run `complete`, and expect a prompt answer.

    Returns what `complete` returned and the long-poll's answer, which must come
    within `WAKE_WITHIN` seconds of `complete` returning.
    """
    answers: list[tuple[float, httpx.Response]] = []

    def poll() -> None:
        try:
            answer = ctx.user.get(f"/tasks/{task_id}", headers={"Prefer": "wait=5"})
        except Exception:
            return  # the check fails on the missing answer
        answers.append((time.monotonic(), answer))

    waiting = threading.Thread(target=poll)
    waiting.start()
    # Scenario timing: the long-poll must be waiting before the task completes.
    time.sleep(0.3)
    value = complete()
    completed = time.monotonic()
    waiting.join(ctx.timeout)
    expect.that(answers, "an answer to the long-poll", "none")
    at, answer = answers[0]
    expect.that(
        at - completed < WAKE_WITHIN,
        f"the long-poll answered within {WAKE_WITHIN} s of the completion",
        f"{at - completed:.2f} s",
    )
    return value, answer


def _applied(answer: httpx.Response) -> None:
    expect.that(
        answer.headers.get("preference-applied", "").startswith("wait="),
        "Preference-Applied: wait=… on a long-poll",
        dict(answer.headers),
    )


@check(
    "core.longpoll.wake",
    "a long-poll (Prefer: wait=N) answers as soon as its task completes",
)
def _wake(ctx: ServerContext) -> None:
    _served, task = ctx.running_task()
    _, answer = long_poll_woken_by(
        ctx, task.id, lambda: ctx.update(task.id, "completed")
    )
    done = expect.model(expect.status(answer, 200), TaskResponse, "the long-poll")
    expect.equal(done.status, TaskStatus.COMPLETED, "status in the long-poll's answer")
    _applied(answer)


@check(
    "core.longpoll.terminal",
    "a long-poll of a task already completed, failed or cancelled answers at once",
)
def _terminal(ctx: ServerContext) -> None:
    _served, task = ctx.running_task()
    ctx.update(task.id, "failed", error="no")
    started = time.monotonic()
    answer = ctx.user.get(f"/tasks/{task.id}", headers={"Prefer": "wait=5"})
    took = time.monotonic() - started
    done = expect.model(expect.status(answer, 200), TaskResponse, "the long-poll")
    expect.equal(done.status, TaskStatus.FAILED, "status")
    expect.that(took < 2, "an answer at once (< 2 s)", f"{took:.2f} s")


@check(
    "core.longpoll.timeout",
    "a long-poll of a task that stays pending answers it after about N seconds",
)
def _timeout(ctx: ServerContext) -> None:
    served = ctx.serving()
    task = ctx.submit(served.room_id, served.full_name)
    started = time.monotonic()
    answer = ctx.user.get(f"/tasks/{task.id}", headers={"Prefer": "wait=1"})
    took = time.monotonic() - started
    still = expect.model(expect.status(answer, 200), TaskResponse, "the long-poll")
    expect.equal(still.status, TaskStatus.PENDING, "status")
    expect.that(0.8 <= took < 4, "an answer after about 1 s", f"{took:.2f} s")
    _applied(answer)
