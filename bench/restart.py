"""Section 4, disconnect (continued): a server restart under `JobManager` workers.

`restart_workers` worker processes (`bench.rejoin_worker`, the SDK as shipped)
serve a job each; the server gets SIGTERM and is started again on the same port
and database, `restart_repeats` times. Timed from the signal: until the new
process answers (the server's part), and until every worker is back in its job's
room under its old worker id (what a user waits for). Afterwards every worker must
still be listed in the room: the server's own shutdown removes nobody.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from typing import Any

from bench.api import API, ROOM
from bench.client import BenchClient, summarize_ms
from bench.config import Config
from bench.server import REPO_ROOT, TOKEN, ServerProcess, WorkerProcess, joblib_on

SPAWN_TIMEOUT = 60.0
REJOIN_TIMEOUT = 30.0


@dataclass
class RejoinWorker(WorkerProcess):
    """A `bench.rejoin_worker` process and the worker id it registered."""

    worker_id: str = ""


async def _spawn(server: ServerProcess, name: str) -> RejoinWorker:
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bench.rejoin_worker"),
        *(server.url, TOKEN, ROOM, name),
        cwd=REPO_ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
    )
    worker = RejoinWorker(process)
    try:
        worker.worker_id = (await worker.line(SPAWN_TIMEOUT))["worker_id"]
    except BaseException:
        await worker.reap()
        raise
    return worker


async def _restart_once(
    server: ServerProcess, workers: list[RejoinWorker], client: BenchClient
) -> tuple[float, float] | None:
    """One restart: (seconds until it answers, seconds until all are back)."""
    started = time.time()
    down = await server.restart()
    try:
        lines = await asyncio.gather(*(w.line(REJOIN_TIMEOUT) for w in workers))
    except (TimeoutError, RuntimeError) as exc:
        client.stats.error(f"restart: not every worker came back: {exc!r}")
        return None
    for worker, line in zip(workers, lines, strict=True):
        if line.get("worker_id") != worker.worker_id:
            client.stats.error(f"restart: {worker.worker_id} came back as {line}")
    return down, max(float(line["rejoined"]) for line in lines) - started


async def measure_restart(database: str, config: Config) -> dict[str, Any]:
    """Restart a fresh server under rejoin workers; the timings and any errors."""
    async with (
        joblib_on(database) as (server, _url),
        BenchClient(server.url, TOKEN) as client,
    ):
        names = [f"rejoin-{index}" for index in range(config.restart_workers)]
        spawned = await asyncio.gather(
            *(_spawn(server, name) for name in names), return_exceptions=True
        )
        workers = [w for w in spawned if isinstance(w, RejoinWorker)]
        for outcome in spawned:
            if not isinstance(outcome, RejoinWorker):
                client.stats.error(f"rejoin worker: {outcome!r}")
        ready: list[float] = []
        rejoined: list[float] = []
        try:
            for _ in range(config.restart_repeats if workers else 0):
                timings = await _restart_once(server, workers, client)
                if timings is not None:
                    ready.append(timings[0])
                    rejoined.append(timings[1])
            listed = await client.session().call(
                "room_workers", "GET", f"{API}/rooms/{ROOM}/workers"
            )
            if listed is not None:
                ids = {item["id"] for item in listed.json()["items"]}
                missing = {w.worker_id for w in workers} - ids
                if missing:
                    client.stats.error(f"restart: workers removed: {sorted(missing)}")
        finally:
            for worker in workers:
                await worker.reap()
        return {
            "results": {
                "restart_to_ready_ms": summarize_ms(ready),
                "restart_to_rejoined_ms": summarize_ms(rejoined),
                "restart_workers": len(workers),
            },
            "errors": client.stats.errors,
            "error_samples": client.stats.error_samples,
        }
