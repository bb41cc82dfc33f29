"""Section 5, scaling with backlog, and server memory.

Memory: the server's RSS (VmRSS of its process) on a fresh start, after a first
batch of N tasks completed by 4 socket workers (the warm-up: caches and pools fill
up), and after a second batch of N; the second batch should not grow it.

Backlog: for each level (0, 10k, 100k pending tasks in the measured job, seeded in
bulk by `bench.seed`), `backlog_repeats` rounds of submit, claim (the oldest task,
so the claim query walks the whole pending queue's index) and complete, one request
at a time; p50/p95/p99 per route and the server's RSS at each level. The number of
pending tasks stays at the level during the rounds (one in, one out).

This machine's speed drifts between runs and within one, and the levels are
measured half a minute apart. So each round is followed by the same round on a
second job that never has anything pending (the control), and each level also
reports the loaded job's p50 over the control's, measured in the same moments.
"""

from __future__ import annotations

import time
from typing import Any

from bench.api import CATEGORY, ROOM, JoblibApi
from bench.client import BenchClient
from bench.config import Config
from bench.seed import seed_pending
from bench.server import TOKEN, ServerProcess, joblib_on
from bench.throughput import run_case
from bench.workers import PollingWorker

MEMORY_WORKERS = 4
BACKLOG_JOB = "backlog"
CONTROL_JOB = "backlog-control"


async def measure_memory(server: ServerProcess, config: Config) -> dict[str, Any]:
    """RSS before, after a warm-up batch, and after a second batch of tasks."""
    rss = [round(server.rss_mib(), 1)]
    errors = 0
    for batch in range(2):
        case = await run_case(
            server,
            f"memory-{batch}",
            MEMORY_WORKERS,
            config.memory_tasks,
            "stream",
            config,
        )
        errors += case["errors"]
        rss.append(round(server.rss_mib(), 1))
    return {
        "tasks_per_batch": config.memory_tasks,
        "rss_mib": {"start": rss[0], "after_batch_1": rss[1], "after_batch_2": rss[2]},
        "growth_mib": round(rss[2] - rss[1], 1),
        "errors": errors,
    }


async def measure_level(
    loaded: tuple[BenchClient, PollingWorker],
    control: tuple[BenchClient, PollingWorker],
    repeats: int,
) -> dict[str, Any]:
    """`repeats` rounds of submit, claim, complete, one request at a time, each
    followed by the same round on the control job."""
    sides = [loaded, control]
    submitters = [JoblibApi(client.session()) for client, _ in sides]
    for client, _ in sides:
        client.reset()
    for index in range(repeats):
        for (client, worker), submitter in zip(sides, submitters, strict=True):
            await submitter.submit(worker.full_name, {"round": index})
            task = await worker.api.claim(worker.id)
            if task is None:
                client.stats.error("backlog: the claim found no pending task")
                continue
            await worker.api.complete(task["id"])
    stats, control_stats = (client.reset() for client, _ in sides)
    summary, control_summary = stats.summary(), control_stats.summary()
    routes = ("submit", "claim", "complete")
    return {
        **{f"{route}_ms": summary.get(route) for route in routes},
        "control_ms": {route: control_summary.get(route) for route in routes},
        "errors": stats.errors + control_stats.errors,
        "error_samples": stats.error_samples + control_stats.error_samples,
    }


async def run(database: str, config: Config) -> dict[str, Any]:
    """Memory check, then the backlog levels, on a fresh server and database."""
    async with joblib_on(database) as (server, url):
        memory = await measure_memory(server, config)
        levels: list[dict[str, Any]] = []
        async with (
            BenchClient(server.url, TOKEN) as client,
            BenchClient(server.url, TOKEN) as control_client,
        ):
            worker = await PollingWorker.register(
                client, BACKLOG_JOB, poll_interval=1.0
            )
            control = await PollingWorker.register(
                control_client, CONTROL_JOB, poll_interval=1.0
            )
            pending = 0
            for level in sorted(config.backlog_levels):
                seconds = 0.0
                if level > pending:
                    seconds = await seed_pending(
                        url, ROOM, CATEGORY, BACKLOG_JOB, level - pending
                    )
                    pending = level
                started = time.perf_counter()
                measured = await measure_level(
                    (client, worker), (control_client, control), config.backlog_repeats
                )
                levels.append(
                    {
                        "pending": level,
                        "seed_seconds": round(seconds, 2),
                        "measure_seconds": round(time.perf_counter() - started, 2),
                        "rss_mib": round(server.rss_mib(), 1),
                        **measured,
                    }
                )
            setup_errors = client.stats.errors + control_client.stats.errors
        return {
            "memory": memory,
            "levels": levels,
            "errors": memory["errors"]
            + setup_errors
            + sum(level["errors"] for level in levels),
        }
