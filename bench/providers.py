"""Section 7, providers: reads answered from the cache, and by a worker.

A `JobManager` worker process (`bench.provider_worker`, the SDK with its socket)
serves provider `bench:bench:blob`, answering `provider_result_bytes` bytes per
key. Three measurements, all over REST as a reader sends them
(`GET /rooms/{room}/providers/{full_name}?key=K`, `Prefer: wait=10`):

- miss → result: a key never read before, one at a time: the server dispatches
  `provider_request` over Socket.IO, the worker's pool thread calls `read()` and
  uploads the bytes, and the held read answers them;
- cache hit: one key read again and again, one at a time;
- hot key: `provider_readers` concurrent readers (a session each) reading one
  cached key for `provider_hot_reads` reads in all: reads per second, and the
  CPU the server and this process used meanwhile (fractions of one core).

Every answer's length is checked; a wrong one counts as an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass
from typing import Any

from bench.api import API, ROOM
from bench.client import BenchClient, Session, run_concurrently, summarize_ms
from bench.config import Config
from bench.server import (
    REPO_ROOT,
    TOKEN,
    CpuMeter,
    ServerProcess,
    WorkerProcess,
    joblib_on,
)

SPAWN_TIMEOUT = 60.0
READ_WAIT_SECONDS = 10
HOT_KEY = -1
HOT_SECONDS = 120.0


@dataclass
class ProviderWorker(WorkerProcess):
    """A `bench.provider_worker` process and the provider it serves."""

    provider: str = ""

    async def stop(self) -> None:
        """Close its stdin (it leaves cleanly), then reap it."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.process.wait(), 10)
        await self.reap()


async def _spawn(server: ServerProcess, size: int) -> ProviderWorker:
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bench.provider_worker", server.url, TOKEN, ROOM),
        str(size),
        cwd=REPO_ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    worker = ProviderWorker(process)
    try:
        worker.provider = (await worker.line(SPAWN_TIMEOUT))["provider"]
    except BaseException:
        await worker.reap()
        raise
    return worker


class Reader:
    """One reader's session: timed reads of the bench provider."""

    def __init__(self, session: Session, provider: str, size: int) -> None:
        self.session = session
        self.path = f"{API}/rooms/{ROOM}/providers/{provider}"
        self.size = size

    async def read(self, key: int, route: str) -> float | None:
        """Seconds one read of `key` took; None when it failed."""
        started = time.perf_counter()
        response = await self.session.call(
            route,
            "GET",
            self.path,
            params={"key": str(key)},
            headers={"Prefer": f"wait={READ_WAIT_SECONDS}"},
        )
        if response is None:
            return None
        elapsed = time.perf_counter() - started
        if len(response.content) != self.size:
            self.session.error(
                f"{route}: {len(response.content)} bytes, not {self.size}"
            )
            return None
        return elapsed


async def measure_misses(reader: Reader, repeats: int) -> list[float]:
    """Read `repeats` keys never read before, one at a time."""
    times: list[float] = []
    for key in range(repeats):
        elapsed = await reader.read(key, "provider_miss")
        if elapsed is not None:
            times.append(elapsed)
    return times


async def measure_hits(reader: Reader, repeats: int) -> list[float]:
    """Read one cached key `repeats` times, one at a time."""
    await reader.read(HOT_KEY, "provider_warmup")  # the miss that fills the cache
    times: list[float] = []
    for _ in range(repeats):
        elapsed = await reader.read(HOT_KEY, "provider_hit")
        if elapsed is not None:
            times.append(elapsed)
    return times


async def measure_hot_key(
    server: ServerProcess,
    client: BenchClient,
    provider: str,
    size: int,
    readers: int,
    reads: int,
) -> dict[str, Any]:
    """`readers` concurrent readers on the one cached key: reads per second."""
    sessions = [Reader(client.session(), provider, size) for _ in range(readers)]
    for reader in sessions:  # each session's connection open before the clock
        await reader.read(HOT_KEY, "provider_warmup")

    def step(reader: Reader) -> Any:
        async def one(index: int) -> None:
            await reader.read(HOT_KEY, "provider_hot")

        return one

    meter = CpuMeter(server)
    started = time.perf_counter()
    done = await run_concurrently(
        reads, [step(reader) for reader in sessions], started + HOT_SECONDS
    )
    seconds = time.perf_counter() - started
    return {
        "readers": readers,
        "reads": done,
        "reads_per_s": round(done / seconds, 1) if seconds > 0 else None,
        **meter.read(),
    }


async def run(database: str, config: Config) -> dict[str, Any]:
    """Provider reads on a fresh server: misses, hits, and a hot key."""
    size = config.provider_result_bytes
    async with (
        joblib_on(database) as (server, _url),
        BenchClient(server.url, TOKEN) as client,
    ):
        worker = await _spawn(server, size)
        try:
            reader = Reader(client.session(), worker.provider, size)
            misses = await measure_misses(reader, config.provider_miss_repeats)
            hits = await measure_hits(reader, config.provider_hit_repeats)
            hot = await measure_hot_key(
                server,
                client,
                worker.provider,
                size,
                config.provider_readers,
                config.provider_hot_reads,
            )
        finally:
            await worker.stop()
        return {
            "result_bytes": size,
            "miss_ms": summarize_ms(misses),
            "hit_ms": summarize_ms(hits),
            "hot_key": hot,
            "routes": client.stats.summary(),
            "errors": client.stats.errors,
            "error_samples": client.stats.error_samples,
        }
