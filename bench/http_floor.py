"""Section 1, the HTTP floor: requests/s of a trivial Starlette endpoint.

The endpoint (`bench.floor_app`) is served like joblib-server (a uvicorn subprocess,
same flags) and driven by the same client code (`BenchClient` sessions, one per
concurrent loop) at each concurrency. The best rate is this machine's physical limit
for this client and server stack; every other rate is reported as a fraction of it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.client import BenchClient, Session, run_concurrently, summarize_ms
from bench.config import Config
from bench.floor_app import FLOOR_PATH
from bench.server import CpuMeter, floor_server


def _floor_step(session: Session) -> Callable[[int], Awaitable[None]]:
    async def step(index: int) -> None:
        await session.call("floor", "GET", FLOOR_PATH)

    return step


async def run(config: Config) -> dict[str, Any]:
    """Measure the floor at each concurrency; `requests_per_s` is the best."""
    levels: list[dict[str, Any]] = []
    errors = 0
    async with floor_server() as server, BenchClient(server.url) as client:
        for concurrency in config.floor_concurrency:
            steps = [_floor_step(client.session()) for _ in range(concurrency)]
            # Warm the connections up, so the timed run opens none.
            await run_concurrently(concurrency * 5, steps, time.perf_counter() + 30)
            client.reset()
            meter = CpuMeter(server)
            deadline = time.perf_counter() + config.case_seconds
            done = await run_concurrently(config.floor_requests, steps, deadline)
            usage = meter.read()
            stats = client.reset()
            errors += stats.errors
            levels.append(
                {
                    "concurrency": concurrency,
                    "requests": done,
                    "requests_per_s": round(done / usage["seconds"], 1),
                    "latency_ms": summarize_ms(stats.latencies["floor"]),
                    **usage,
                    "errors": stats.errors,
                    "error_samples": stats.error_samples,
                }
            )
    best = max(levels, key=lambda level: level["requests_per_s"])
    return {
        "requests_per_s": best["requests_per_s"],
        "best_concurrency": best["concurrency"],
        "levels": levels,
        "errors": errors,
    }
