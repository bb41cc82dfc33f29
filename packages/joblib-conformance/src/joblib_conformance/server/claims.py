"""Checks of `POST /tasks/claim`: order, atomicity, refusals, and ours: start, held."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx

from joblib_conformance import expect
from joblib_conformance.server.registry import SERVER_CHECKS
from joblib_conformance.server.workers import UNKNOWN
from joblib_conformance.target import ServerContext
from joblib_protocol import (
    Forbidden,
    TaskClaimResponse,
    TaskStatus,
    TaskStatusEvent,
    WorkerNotFound,
)

check = SERVER_CHECKS.check

CLAIMERS = 8
"""Workers claiming at the same moment in `core.claim.exactly-once`."""
CONCURRENT_TASKS = 24

WAKE_WITHIN = 0.5
"""Seconds within which a held request must answer once its answer exists."""


@check(
    "core.claim.fifo",
    "POST /tasks/claim takes the oldest pending task first, then answers {task: null}",
)
def _fifo(ctx: ServerContext) -> None:
    served = ctx.serving()
    submitted = [ctx.submit(served.room_id, served.full_name).id for _ in range(3)]
    claimed = []
    for _ in submitted:
        task = ctx.claim(served.worker_id)
        expect.that(task is not None, "a task while some are pending", task)
        assert task is not None
        expect.equal(task.status, TaskStatus.CLAIMED, "status of a claimed task")
        expect.equal(str(task.worker_id), served.worker_id, "worker_id of the claim")
        claimed.append(task.id)
    expect.equal(claimed, submitted, "the claimed tasks, in submission order")
    expect.equal(ctx.claim(served.worker_id), None, "task once none is pending")
    expect.equal(ctx.task(submitted[0]).status, TaskStatus.CLAIMED, "status read")


@check(
    "core.claim.across-jobs",
    "a worker serving several jobs gets the oldest pending task among all of them",
)
def _across_jobs(ctx: ServerContext) -> None:
    room_id = ctx.room()
    first = ctx.serving(room_id)
    second = ctx.register(room_id, ctx.name(), worker_id=first.worker_id)
    order = [
        ctx.submit(room_id, first.full_name).id,
        ctx.submit(room_id, second.full_name).id,
        ctx.submit(room_id, first.full_name).id,
    ]
    got = []
    for _ in order:
        task = ctx.claim(first.worker_id)
        got.append(task.id if task is not None else None)
    expect.equal(got, order, "claims across two jobs, oldest first")


@check(
    "core.claim.only-own-jobs",
    "a claim never takes a task of a job its worker does not serve",
)
def _only_own_jobs(ctx: ServerContext) -> None:
    room_id = ctx.room()
    mine = ctx.serving(room_id)
    theirs = ctx.serving(room_id)
    ctx.submit(room_id, theirs.full_name)
    expect.equal(ctx.claim(mine.worker_id), None, "a claim with only others' tasks")
    idle = ctx.create_worker()
    expect.equal(ctx.claim(idle), None, "a claim by a worker without jobs")


@check(
    "core.claim.refused",
    "claiming for an unknown worker is 404 worker-not-found, for another's 403",
)
def _refused(ctx: ServerContext) -> None:
    served = ctx.serving()
    ctx.submit(served.room_id, served.full_name)
    answer = ctx.user.post("/tasks/claim", json={"worker_id": UNKNOWN})
    expect.problem(answer, WorkerNotFound)
    answer = ctx.other.post("/tasks/claim", json={"worker_id": served.worker_id})
    expect.problem(answer, Forbidden, "for another identity's worker")
    left = ctx.claim(served.worker_id)
    expect.that(left is not None, "the task still there for its own worker", left)


@check(
    "core.claim.exactly-once",
    f"{CLAIMERS} workers claiming at once: every task claimed exactly once",
)
def _exactly_once(ctx: ServerContext) -> None:
    served = ctx.serving()
    workers = [served.worker_id] + [
        str(
            ctx.register(
                served.room_id, served.job.name, worker_id=w, expect_status=200
            ).worker_id
        )
        for w in (ctx.create_worker() for _ in range(CLAIMERS - 1))
    ]
    submitted = {
        str(ctx.submit(served.room_id, served.full_name).id)
        for _ in range(CONCURRENT_TASKS)
    }
    start = threading.Barrier(CLAIMERS)

    def claimer(worker_id: str) -> list[tuple[str, str | int]]:
        got: list[tuple[str, str | int]] = []
        with httpx.Client(
            base_url=ctx.user.http.base_url,
            headers=ctx.user.http.headers,
            timeout=ctx.timeout,
        ) as http:
            start.wait(ctx.timeout)
            while True:
                answer = http.post("/tasks/claim", json={"worker_id": worker_id})
                if answer.status_code != 200:
                    got.append((worker_id, answer.status_code))
                    return got
                task = TaskClaimResponse.model_validate(answer.json()).task
                if task is None:
                    return got
                if str(task.worker_id) != worker_id:
                    got.append((worker_id, f"worker_id {task.worker_id}"))
                got.append((worker_id, str(task.id)))

    with ThreadPoolExecutor(CLAIMERS) as pool:
        claims = [c for got in pool.map(claimer, workers) for c in got]
    errors = [c for c in claims if c[1] not in submitted]
    expect.that(not errors, "every claim answered 200 with its own worker_id", errors)
    counts = Counter(task for _worker, task in claims)
    twice = {task: n for task, n in counts.items() if n > 1}
    expect.that(not twice, "no task claimed twice", twice)
    expect.equal(set(counts), submitted, "the set of claimed tasks")
    for task_id in list(submitted)[:3]:
        expect.equal(ctx.task(task_id).status, TaskStatus.CLAIMED, "status read")


@check(
    "ours.claim.start",
    'POST /tasks/claim {"start": true} answers the task running; observers see '
    "claimed, then running",
)
def _start(ctx: ServerContext) -> None:
    served = ctx.serving()
    observer = ctx.observer(served.room_id)
    task = ctx.submit(served.room_id, served.full_name)
    claimed = ctx.claim(served.worker_id, start=True)
    expect.that(claimed is not None, "a task", claimed)
    assert claimed is not None
    expect.equal((claimed.id, claimed.status), (task.id, TaskStatus.RUNNING), "claim")
    expect.aware(claimed.started_at, "started_at")
    observer.wait_for(
        TaskStatusEvent.event_name, lambda p: p["status"] == "running", what="running"
    )
    seen = [e.payload["status"] for e in observer.received(TaskStatusEvent.event_name)]
    expect.equal(seen, ["pending", "claimed", "running"], "the statuses announced")


@check(
    "ours.claim.held",
    "a claim with Prefer: wait=N is held until a task comes (oldest held claim "
    "first), or answers {task: null} after N s; Preference-Applied: wait=N",
)
def _held(ctx: ServerContext) -> None:
    served = ctx.serving()
    started = time.monotonic()
    empty = ctx.user.post(
        "/tasks/claim",
        json={"worker_id": served.worker_id},
        headers={"Prefer": "wait=1"},
    )
    took = time.monotonic() - started
    body = expect.status(empty, 200, "from a held claim nothing answers")
    expect.equal(body, {"task": None}, "the answer of a held claim that timed out")
    expect.that(0.8 <= took < 4, "held about 1 s", f"{took:.2f} s")
    expect.equal(empty.headers.get("preference-applied"), "wait=1", "header")

    second = str(
        ctx.register(
            served.room_id,
            served.job.name,
            worker_id=ctx.create_worker(),
            expect_status=200,
        ).worker_id
    )
    answers: dict[str, tuple[float, httpx.Response]] = {}

    def hold(worker_id: str) -> None:
        try:
            answer = ctx.user.post(
                "/tasks/claim",
                json={"worker_id": worker_id},
                headers={"Prefer": "wait=5"},
            )
        except Exception:
            return  # no answer (or the check ended): it fails on the missing one
        answers[worker_id] = (time.monotonic(), answer)

    first_hold = threading.Thread(target=hold, args=(served.worker_id,))
    first_hold.start()
    # Scenario timing, not a wait for a condition: the held claims must reach
    # the server in this order before the task comes.
    time.sleep(0.3)
    second_hold = threading.Thread(target=hold, args=(second,))
    second_hold.start()
    time.sleep(0.3)
    task = ctx.submit(served.room_id, served.full_name)
    submitted = time.monotonic()
    first_hold.join(ctx.timeout)
    expect.that(served.worker_id in answers, "the first held claim answered", answers)
    at, answer = answers[served.worker_id]
    got = expect.model(expect.status(answer, 200), TaskClaimResponse, "the claim")
    expect.equal(got.task.id if got.task else None, task.id, "task of the 1st claim")
    expect.that(
        at - submitted < WAKE_WITHIN,
        f"the held claim answered within {WAKE_WITHIN} s of the submit",
        f"{at - submitted:.2f} s",
    )
    expect.that(
        answer.headers.get("preference-applied", "").startswith("wait="),
        "Preference-Applied: wait=…",
        dict(answer.headers),
    )
    expect.that(second not in answers, "the second claim still held", answers)
    later = ctx.submit(served.room_id, served.full_name)
    second_hold.join(ctx.timeout)
    expect.that(second in answers, "the second held claim answered", answers)
    got = expect.model(expect.status(answers[second][1], 200), TaskClaimResponse, "")
    expect.equal(got.task.id if got.task else None, later.id, "task of the 2nd claim")


@check(
    "ours.claim.request-id",
    "a claim sent again with the same request_id gets the same task back",
)
def _request_id(ctx: ServerContext) -> None:
    served = ctx.serving()
    first = ctx.submit(served.room_id, served.full_name)
    second = ctx.submit(served.room_id, served.full_name)
    once = ctx.claim(served.worker_id, request_id="conformance-1")
    again = ctx.claim(served.worker_id, request_id="conformance-1")
    expect.equal(
        (once.id if once else None, again.id if again else None),
        (first.id, first.id),
        "the tasks of a claim and its retry",
    )
    other = ctx.claim(served.worker_id, request_id="conformance-2")
    expect.equal(other.id if other else None, second.id, "a new request_id's task")
