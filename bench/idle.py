"""Section 10, idle: what idle workers cost the server (issue 18, part 2).

For each N in `idle_workers`, on a fresh server and database: N workers, each
registered over REST (`POST /workers`, `PUT /rooms/{room}/jobs`), with a Socket.IO
socket of its own (`bench.sio`, no thread per worker) in its job's room
(`join_job_room`), holding one claim with `Prefer: wait` as `JobManager`'s claim
loop does, and heartbeating as the SDK does. Once all are settled, over
`idle_window_seconds`: the server process's CPU (a fraction of one core) and the
SQL statements it sent per second (`joblib_db_statements_total` on `/metrics`,
read before and after the window; the second read's own few statements are in
it), and the REST requests the workers made.

The workers' first claims wait a random part of `idle_claim_wait`, and their
heartbeats start at a random moment of their interval, so renewals are spread as
they are between long-running workers rather than all falling in one moment (or
outside the window).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.api import ROOM, JoblibApi
from bench.client import BenchClient, Session, summarize_ms
from bench.config import Config
from bench.server import API, TOKEN, CpuMeter, ServerProcess, joblib_on
from bench.sio import AsyncSocket

JOB = "idle"
SETUP_CONCURRENCY = 16
"""Workers registering at once: enough to settle 1,000 in seconds, few enough
not to time out a 2-core machine."""
STATEMENTS = "joblib_db_statements_total"
JOIN_SECONDS = 30.0
"""How long a join's answer may take while the others are settling."""


@dataclass
class IdleWorker:
    """One idle worker: its REST session, its socket and its background loops."""

    session: Session
    worker_id: str
    socket: AsyncSocket
    loops: list[asyncio.Task[None]] = field(default_factory=list)

    async def close(self) -> None:
        """Stop its loops, leave the socket."""
        for loop in self.loops:
            loop.cancel()
        for loop in self.loops:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await loop
        await self.socket.close()


def raise_open_files(wanted: int) -> int:
    """Raise this process's soft limit on open files towards `wanted`; the limit.

    The server subprocess starts after this and inherits it (its `serve` raises
    its own to the hard limit anyway).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


async def statements(session: Session) -> float | None:
    """The server's `joblib_db_statements_total`, read from `/metrics`."""
    response = await session.call("metrics", "GET", "/metrics")
    if response is None:
        return None
    for line in response.text.splitlines():
        if line.startswith(STATEMENTS + " "):
            return float(line.split()[1])
    session.error(f"/metrics has no {STATEMENTS}")
    return None


async def _hold_claims(
    api: JoblibApi, worker_id: str, wait: float, done: Counter[str]
) -> None:
    first = random.uniform(min(1.0, wait), wait)
    while True:
        task = await api.claim(worker_id, wait=first)
        done["claim"] += 1
        first = wait
        if task is not None:
            api.session.error(f"idle: worker {worker_id} was handed a task")
            return


async def _heartbeat(
    session: Session, worker_id: str, interval: float, done: Counter[str]
) -> None:
    await asyncio.sleep(random.uniform(0, interval))
    while True:
        await session.call(
            "heartbeat", "PATCH", f"{API}/workers/{worker_id}", json={"tasks": []}
        )
        done["heartbeat"] += 1
        await asyncio.sleep(interval)


async def _start_worker(
    server: ServerProcess,
    client: BenchClient,
    config: Config,
    job: str,
    done: Counter[str],
) -> IdleWorker | None:
    session = client.session()
    api = JoblibApi(session)
    worker_id = await api.create_worker()
    if worker_id is None or await api.register(JOB, worker_id) is None:
        return None
    socket = AsyncSocket(server.url, TOKEN)
    try:
        await socket.connect()
        join = {"job_name": job, "worker_id": worker_id}
        ack = await socket.call("join_job_room", join, JOIN_SECONDS)
    except (TimeoutError, ConnectionError, OSError) as exc:
        # A server too busy to answer (the old SDK's 2 s claims, 1,000 workers):
        # an error counted, not a crash that loses the other levels.
        session.error(f"join_job_room: {type(exc).__name__}: {exc}")
        await socket.close()
        return None
    if not isinstance(ack, dict) or ack.get("ok") is not True:
        session.error(f"join_job_room: {ack!r}")
        await socket.close()
        return None
    worker = IdleWorker(session, worker_id, socket)
    worker.loops.append(
        asyncio.create_task(_hold_claims(api, worker_id, config.idle_claim_wait, done))
    )
    if config.idle_rest_heartbeat_seconds:
        interval = config.idle_rest_heartbeat_seconds
        beat = _heartbeat(session, worker_id, interval, done)
        worker.loops.append(asyncio.create_task(beat))
    return worker


async def measure_idle(
    server: ServerProcess, client: BenchClient, count: int, config: Config
) -> dict[str, Any]:
    """Settle `count` idle workers, then measure one window of their cost."""
    job = f"{ROOM}:modifiers:{JOB}"
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)
    # Counted as each call ends: a held claim sent before the window and
    # answered in it counts in it (the stats would file it before).
    done: Counter[str] = Counter()

    async def start() -> IdleWorker | None:
        async with gate:
            return await _start_worker(server, client, config, job, done)

    started = time.perf_counter()
    made = await asyncio.gather(*(start() for _ in range(count)))
    workers = [worker for worker in made if worker is not None]
    setup = time.perf_counter() - started
    try:
        if len(workers) != count:
            client.stats.error(f"idle: {len(workers)} of {count} workers settled")
        await asyncio.sleep(config.idle_settle_seconds)
        admin = client.session()
        client.reset()
        before = await statements(admin)
        meter = CpuMeter(server)
        calls = Counter(done)
        await asyncio.sleep(config.idle_window_seconds)
        cpu = meter.read()
        after = await statements(admin)
        window = client.reset()
        seconds = cpu["seconds"]
        rest = {
            route: round((done[route] - calls[route]) / seconds, 2)
            for route in sorted(done)
        }
        return {
            "workers": len(workers),
            "setup_s": round(setup, 1),
            "window_s": seconds,
            "server_cpu": cpu["server_cpu"],
            "client_cpu": cpu["client_cpu"],
            "statements_per_s": (
                round((after - before) / seconds, 2)
                if before is not None and after is not None
                else None
            ),
            "rest_per_s": rest,
            "claim_ms": summarize_ms(window.latencies.get("claim", [])),
            "rss_mib": round(server.rss_mib(), 1),
            "window_errors": window.errors,
        }
    finally:
        await asyncio.gather(*(worker.close() for worker in workers))


async def run(db: str, config: Config) -> dict[str, Any]:
    """Idle cost at each N of `idle_workers`, each on a fresh server and database."""
    biggest = max(config.idle_workers)
    limit = raise_open_files(4 * biggest + 1024)
    # Every worker holds a socket and a claim (two connections) in one identity.
    sockets = str(biggest + 64)
    settings = {
        "JOBLIB_MAX_SOCKETS": sockets,
        "JOBLIB_MAX_SOCKETS_PER_IDENTITY": sockets,
    }
    results: dict[str, Any] = {
        "open_files_limit": limit,
        "claim_wait_s": config.idle_claim_wait,
        "rest_heartbeat_s": config.idle_rest_heartbeat_seconds,
        "levels": [],
    }
    errors = 0
    samples: list[str] = []
    for count in config.idle_workers:
        async with (
            joblib_on(db, settings) as (server, _url),
            BenchClient(server.url, TOKEN) as client,
        ):
            try:
                level = await measure_idle(server, client, count, config)
            except Exception as exc:  # the next level may still be measured
                level = {"workers": 0, "crashed": f"{type(exc).__name__}: {exc}"}
                errors += 1
            errors += client.stats.errors + level.get("window_errors", 0)
            samples += client.stats.error_samples
        results["levels"].append(level)
    results["errors"] = errors
    results["error_samples"] = samples[:5]
    return results
