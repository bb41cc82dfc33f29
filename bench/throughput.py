"""Section 2, throughput: W socket workers complete N tasks, streamed or backlogged.

`stream`: the workers wait in their job's room while `submitters` loops submit the N
tasks; timed from the first submit to the last completion. `backlog`: the N tasks
are submitted first (timed apart), then the workers drain them; timed from the
start of the drain to the last completion. For each: tasks/s, requests/s (of the
requests inside the timed window), requests per completed task (submit + claim +
complete, so 3 is the least possible; empty claims add to it), latency
p50/p95/p99 per route, server and client CPU, and errors (which must be 0).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.api import JoblibApi, Task
from bench.client import BenchClient, run_concurrently
from bench.config import Config
from bench.server import TOKEN, CpuMeter, ServerProcess, joblib_on
from bench.workers import LongPollWorker, SocketWorker, Worker

MODES = ("stream", "backlog")


class Progress:
    """Counts completions; stops the workers when the last one is in."""

    def __init__(self, target: int, workers: list[Worker]) -> None:
        self.target = target
        self.workers = workers
        self.completed = 0
        self.last = time.perf_counter()
        self.stop = asyncio.Event()

    def done(self, task: Task) -> None:
        """Record one completion."""
        self.completed += 1
        self.last = time.perf_counter()
        if self.completed >= self.target:
            self.finish()

    def finish(self) -> None:
        """Stop every worker, idle or not."""
        self.stop.set()
        for worker in self.workers:
            worker.wake()


async def submit_many(
    client: BenchClient, full_name: str, count: int, loops: int, deadline: float
) -> int:
    """Submit `count` tasks over `loops` concurrent sessions; how many went out."""
    apis = [JoblibApi(client.session()) for _ in range(loops)]

    def step_for(api: JoblibApi) -> Callable[[int], Awaitable[None]]:
        async def step(index: int) -> None:
            await api.submit(full_name, {"i": index})

        return step

    return await run_concurrently(count, [step_for(api) for api in apis], deadline)


async def run_case(
    server: ServerProcess,
    job: str,
    workers: int,
    tasks: int,
    mode: str,
    config: Config,
) -> dict[str, Any]:
    """One throughput case on a running server, with its own job and workers."""
    async with BenchClient(server.url, TOKEN) as client:
        kind = LongPollWorker if config.worker_kind == "long-poll" else SocketWorker
        crew: list[Worker] = list(
            await asyncio.gather(
                *(kind.connect(client, job, server.url) for _ in range(workers))
            )
        )
        full_name = crew[0].full_name
        setup = client.reset()
        deadline = time.perf_counter() + config.case_seconds
        progress = Progress(tasks, list(crew))
        result: dict[str, Any] = {"mode": mode, "workers": workers, "tasks": tasks}
        running: list[asyncio.Task[None]] = []
        meter = CpuMeter(server)
        started = time.perf_counter()
        window_start = 0
        try:
            if mode == "backlog":
                await submit_many(client, full_name, tasks, config.submitters, deadline)
                result["submit_per_s"] = round(tasks / meter.read()["seconds"], 1)
            window_start = client.stats.requests()
            meter = CpuMeter(server)
            started = time.perf_counter()
            running = [
                asyncio.create_task(
                    w.run(progress.stop, deadline, on_done=progress.done)
                )
                for w in crew
            ]
            if mode == "stream":
                await submit_many(client, full_name, tasks, config.submitters, deadline)
            await asyncio.wait_for(
                progress.stop.wait(), max(0.0, deadline - time.perf_counter())
            )
        except TimeoutError:
            client.stats.error(f"timed out: {progress.completed} of {tasks} completed")
        finally:
            progress.finish()
            for outcome in await asyncio.gather(*running, return_exceptions=True):
                if isinstance(outcome, BaseException):
                    client.stats.error(f"worker loop: {outcome!r}")
            usage = meter.read()
            for worker in crew:
                await worker.close()
        stats = client.stats
        elapsed = max(progress.last - started, 1e-9)
        completed = progress.completed
        claimed = sum(w.claimed for w in crew)
        requests = stats.requests()
        result.update(
            {
                "completed": completed,
                "seconds": round(elapsed, 3),
                "tasks_per_s": round(completed / elapsed, 1),
                "requests": requests,
                "requests_per_s": round((requests - window_start) / elapsed, 1),
                "requests_per_task": round(requests / max(completed, 1), 3),
                "empty_claims": stats.requests("claim") - claimed,
                "routes": stats.summary(),
                "server_cpu": usage["server_cpu"],
                "client_cpu": usage["client_cpu"],
                "setup_errors": setup.errors,
                "errors": stats.errors + setup.errors,
                "error_samples": setup.error_samples + stats.error_samples,
            }
        )
        return result


async def run(database: str, config: Config) -> dict[str, Any]:
    """Every (workers, mode) case on one fresh server and database."""
    cases: dict[str, Any] = {}
    async with joblib_on(database) as (server, _url):
        for workers in config.workers:
            for mode in MODES:
                cases[f"{mode}-{workers}"] = await run_case(
                    server, f"tp-{mode}-{workers}", workers, config.tasks, mode, config
                )
    return {
        "cases": cases,
        "errors": sum(case["errors"] for case in cases.values()),
    }
