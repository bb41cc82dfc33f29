"""Section 3, latency: dispatch (submit → claimed) and long-poll wake-up.

Dispatch: one idle worker, one task at a time, for three kinds of worker.
Measured from the task's `created_at` (server clock, set inside the submit) to the
moment the worker holds the claim answer (client clock; both are this machine's
wall clock). Once for a socket-connected worker woken by `task_available`, once
for one whose claim is parked with `Prefer: wait` (as JobManager does), once for
a REST worker polling every `poll_interval` seconds. The server-side part
(`started_at - created_at`) is reported as well.

Long-poll wake-up: a `GET /tasks/{id}` with `Prefer: wait=30` is parked on a running
task, then the worker completes it; measured from the task's `completed_at` (server
clock) to the moment the waiting GET answers.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable
from typing import Any

from bench.api import JoblibApi, Task, server_time
from bench.client import BenchClient, summarize_ms
from bench.config import Config
from bench.server import TOKEN, joblib_on
from bench.workers import (
    Handoffs,
    LongPollWorker,
    PollingWorker,
    SocketWorker,
    Worker,
)

STEP_TIMEOUT = 10.0
LONG_POLL_WAIT = 30.0


async def measure_dispatch(
    client: BenchClient,
    worker: Worker,
    repeats: int,
    config: Config,
    jitter: float,
    submitter: JoblibApi | None = None,
) -> dict[str, Any]:
    """Submit one task at a time to an idle `worker`; time until it holds the claim.

    Each submit waits a random 0..`jitter` seconds after the worker went idle, so a
    polling worker is caught at a random point of its poll interval. `submitter`
    (default: a session of `client`) may talk to another server process.
    """
    rng = random.Random(0)
    submitter = submitter or JoblibApi(client.session())
    claims, completions = Handoffs(), Handoffs()
    to_claim: list[float] = []
    server_side: list[float] = []
    stop = asyncio.Event()
    deadline = time.perf_counter() + config.case_seconds
    running = asyncio.create_task(
        worker.run(
            stop,
            deadline,
            on_claimed=lambda task, wall: claims.resolve(task["id"], (task, wall)),
            on_done=lambda task: completions.resolve(task["id"], task),
        )
    )
    try:
        for index in range(repeats):
            await asyncio.wait_for(worker.idling.wait(), STEP_TIMEOUT)
            await asyncio.sleep(rng.uniform(0, jitter))
            task = await submitter.submit(worker.full_name, {"i": index})
            if task is None:
                continue
            claimed, wall = await asyncio.wait_for(
                claims.future(task["id"]), STEP_TIMEOUT
            )
            created = server_time(task["created_at"])
            to_claim.append(wall - created)
            server_side.append(server_time(claimed["started_at"]) - created)
            await asyncio.wait_for(completions.future(task["id"]), STEP_TIMEOUT)
    except TimeoutError:
        client.stats.error(f"dispatch to {worker.full_name}: a step timed out")
    finally:
        stop.set()
        worker.wake()
        await running
        await worker.close()
    return {
        "to_claim_ms": summarize_ms(to_claim),
        "server_ms": summarize_ms(server_side),
    }


async def _answered_at(waiting: Awaitable[Task | None]) -> tuple[Task | None, float]:
    task = await waiting
    return task, time.time()


async def measure_long_poll(
    client: BenchClient,
    repeats: int,
    config: Config,
    waiting: BenchClient | None = None,
    job: str = "lat-long-poll",
) -> dict[str, Any]:
    """Park a long-poll on a running task, complete it, time the wake-up.

    The long-poll goes to `waiting` (default: `client`), which may be another
    server process than the one the worker completes the task through.
    """
    worker = await PollingWorker.register(client, job, poll_interval=1.0)
    submitter = JoblibApi(client.session())
    waiter = JoblibApi((waiting or client).session())
    after_commit: list[float] = []
    after_request: list[float] = []
    for index in range(repeats):
        task = await submitter.submit(worker.full_name, {"i": index})
        running = await worker.api.claim(worker.id)
        if task is None or running is None or running["id"] != task["id"]:
            client.stats.error("long poll: could not claim the submitted task")
            continue
        answer = asyncio.create_task(
            _answered_at(waiter.wait_task(task["id"], LONG_POLL_WAIT))
        )
        await asyncio.sleep(config.long_poll_park_seconds)
        sent = time.time()
        done = await worker.api.complete(task["id"])
        finished, answered = await asyncio.wait_for(answer, LONG_POLL_WAIT + 10)
        if done is None or finished is None or finished["status"] != "completed":
            client.stats.error(f"long poll: answered {finished!r}")
            continue
        after_commit.append(answered - server_time(done["completed_at"]))
        after_request.append(answered - sent)
    return {
        "wake_ms": summarize_ms(after_commit),
        "from_patch_sent_ms": summarize_ms(after_request),
    }


async def run(database: str, config: Config) -> dict[str, Any]:
    """Socket dispatch, polling dispatch and long-poll wake-up on a fresh server."""
    async with (
        joblib_on(database) as (server, _url),
        BenchClient(server.url, TOKEN) as client,
    ):
        woken = await SocketWorker.connect(client, "lat-socket", server.url)
        socket = await measure_dispatch(
            client, woken, config.latency_repeats, config, jitter=0.0
        )
        parked = await LongPollWorker.connect(client, "lat-parked", server.url)
        # A little jitter, so the claim is parked before the submit arrives.
        parking = await measure_dispatch(
            client, parked, config.latency_repeats, config, jitter=0.02
        )
        poller = await PollingWorker.register(
            client, "lat-poll", poll_interval=config.poll_interval
        )
        polling = await measure_dispatch(
            client, poller, config.latency_repeats, config, config.poll_interval
        )
        long_poll = await measure_long_poll(client, config.long_poll_repeats, config)
        return {
            "socket_dispatch": socket,
            "parked_claim_dispatch": parking,
            "polling_dispatch": {**polling, "poll_interval_s": config.poll_interval},
            "long_poll": long_poll,
            "routes": client.stats.summary(),
            "errors": client.stats.errors,
            "error_samples": client.stats.error_samples,
        }
