"""Section 9, batch: submitting many tasks at once (issue 18, part 4).

`batch_tasks` tasks (10,000) go to one job as `batch_tasks / batch_size` batch
submits of `batch_size` (1,000) each, one after another over one connection,
`POST /rooms/{room}/tasks/{job}/batch`. The job has the realistic schema of the
`calls` section (`Relax`), so every payload is checked. Measured: the wall time
from the first request sent to the last answer read (so the client's own JSON
work is in it too), the server's CPU time over the same stretch plus the moment
after it in which the server finishes sending the batch's events, and the
latency of one batch. For scale, the same number of tasks' worth of single
submits is timed as well, for `single_tasks` tasks.

Checked: every batch answers 202 with `batch_size` tasks, and the job then has
exactly the tasks submitted, pending, their queue positions 1 to N in order.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.api import ROOM, JoblibApi
from bench.calls import PAYLOAD, SCHEMA
from bench.client import BenchClient, Session, summarize_ms
from bench.config import Config
from bench.server import API, TOKEN, ServerProcess, joblib_on

SETTLE_SECONDS = 0.3
"""After the last answer, how long the server's CPU is still counted: the events
of the last batch are sent after its answer."""


def _payloads(start: int, count: int) -> list[dict[str, Any]]:
    return [{**PAYLOAD, "label": f"batch-{n}"} for n in range(start, start + count)]


async def _batch(
    session: Session, job: str, payloads: list[dict[str, Any]], route: str
) -> list[dict[str, Any]] | None:
    response = await session.call(
        route,
        "POST",
        f"{API}/rooms/{ROOM}/tasks/{job}/batch",
        json={"payloads": payloads},
        expect=(202,),
    )
    if response is None:
        return None
    items: list[dict[str, Any]] = response.json()["items"]
    if len(items) != len(payloads):
        session.error(f"batch: {len(items)} tasks for {len(payloads)} payloads")
    return items


async def _pending_positions(session: Session, job: str) -> list[int] | None:
    """The queue positions of the job's pending tasks, oldest first (500 a page)."""
    positions: list[int] = []
    offset = 0
    while True:
        response = await session.call(
            "list",
            "GET",
            f"{API}/rooms/{ROOM}/jobs/{job}/tasks",
            params={"status": "pending", "limit": 500, "offset": offset},
        )
        if response is None:
            return None
        page = response.json()
        positions += [task["queue_position"] for task in page["items"]]
        offset += len(page["items"])
        if not page["items"] or offset >= page["total"]:
            return positions[::-1]  # newest first on the wire


async def measure_batches(
    server: ServerProcess, client: BenchClient, config: Config
) -> dict[str, Any]:
    """Submit `batch_tasks` tasks in batches of `batch_size`; time them."""
    session = client.session()
    api = JoblibApi(session)
    worker_id = await api.create_worker()
    if worker_id is None:
        raise RuntimeError("could not create the batch worker")
    job = await api.register("relax-batch", worker_id, schema=SCHEMA)
    warm = await api.register("relax-warm", worker_id, schema=SCHEMA)
    if job is None or warm is None:
        raise RuntimeError("could not register the batch jobs")
    # Connections open, the validator compiled: on another job, so the measured
    # one starts empty.
    await _batch(session, warm, _payloads(0, config.batch_size), "batch_warmup")
    batches = config.batch_tasks // config.batch_size
    size = config.batch_size
    bodies = [_payloads(index * size, size) for index in range(batches)]
    cpu_before = server.cpu_seconds()
    started = time.perf_counter()
    made = 0
    for payloads in bodies:
        items = await _batch(session, job, payloads, "batch")
        made += 0 if items is None else len(items)
    wall = time.perf_counter() - started
    await asyncio.sleep(SETTLE_SECONDS)
    cpu = server.cpu_seconds() - cpu_before
    positions = await _pending_positions(session, job)
    if positions is not None and positions != list(range(1, made + 1)):
        session.error(
            f"batch: {len(positions)} pending tasks, positions not 1..{made} in order"
        )
    single = await _singles(api, worker_id, config.single_tasks)
    return {
        "tasks": made,
        "batches": batches,
        "batch_size": config.batch_size,
        "wall_s": round(wall, 3),
        "tasks_per_s": round(made / wall, 1) if wall else None,
        "server_cpu_s": round(cpu, 3),
        "batch_ms": summarize_ms(client.stats.latencies["batch"]),
        "single": single,
    }


async def _singles(api: JoblibApi, worker_id: str, count: int) -> dict[str, Any]:
    """Single submits of the same payloads, one after another, for comparison."""
    job = await api.register("relax-single", worker_id, schema=SCHEMA)
    if job is None:
        raise RuntimeError("could not register the single-submit job")
    started = time.perf_counter()
    made = 0
    for payload in _payloads(0, count):
        made += await api.submit(job, payload, "submit") is not None
    wall = time.perf_counter() - started
    return {"tasks": made, "tasks_per_s": round(made / wall, 1) if wall else None}


async def run(database: str, config: Config) -> dict[str, Any]:
    """Batch-submit throughput on a fresh server."""
    async with (
        joblib_on(database) as (server, _url),
        BenchClient(server.url, TOKEN) as client,
    ):
        result = await measure_batches(server, client, config)
        result.update(
            routes=client.stats.summary(),
            errors=client.stats.errors,
            error_samples=client.stats.error_samples,
        )
        return result
