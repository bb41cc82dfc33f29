"""Section 6, calls: cancelling a running task, and the cost of checking payloads.

Cancel: a `JobManager` worker process (`bench.cancel_worker`, the SDK as shipped,
socket on) runs a job whose code waits on `current_task().cancelled`. Each round
submits a task, waits for the job's code to say it started (the task is running
on the server by then), and sends `PATCH /tasks/{id} {"status": "cancelled"}` as
its submitter. Timed from just before the PATCH is sent to the moment the job's
code saw `cancelled` set (the worker prints its wall clock; both are this
machine's clock); also until the PATCH answered, and from the task's
`completed_at` (server clock, set in the cancel) to the moment it was seen.

Payload validation: submits to a job registered with the schema pydantic makes for
a realistic `Extension` (`Relax`: an enum, a bounded int, a float, a list of
floats, an optional nested model, an optional string), with a payload that
matches it, against a job registered with the empty schema `{}` (which the server
does not check at all) and the same payload. The two are interleaved, and which
goes first alternates from pair to pair, so the machine's drift and the
connection's warmth fall on both alike. The overhead is the difference of the
p50s over the empty-schema p50. The server's own check
(`joblib_server.payloads.check_payload`) is also timed in this process, per
payload, once its compiled validator is cached: the one place besides
`bench.seed` where the benchmark calls joblib_server's code directly.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from bench.api import ROOM, JoblibApi, server_time
from bench.client import BenchClient, percentile, summarize_ms
from bench.config import Config
from bench.server import REPO_ROOT, TOKEN, ServerProcess, WorkerProcess, joblib_on
from joblib_client import Category, Extension

SPAWN_TIMEOUT = 60.0
STEP_TIMEOUT = 10.0
# A random pause after the job's code started and before the cancel is sent, so
# the cancel does not always land at the same point of the worker's own activity.
CANCEL_JITTER_SECONDS = 0.02
HEARTBEAT_SECONDS = 10.0
LOCAL_BATCHES = 20


class Element(StrEnum):
    """A chemical element (an enum in the schema, under `$defs`)."""

    H = "H"
    C = "C"
    N = "N"
    O = "O"  # noqa: E741 - the element


class Cell(BaseModel):
    """A periodic cell (a nested model: a `$ref` into `$defs`)."""

    a: float = Field(gt=0)
    b: float = Field(gt=0)
    c: float = Field(gt=0)
    periodic: bool = True


class Relax(Extension):
    """A realistic job's parameters; its schema is what `JobManager` registers."""

    category: ClassVar[Category] = Category.MODIFIER

    element: Element = Element.C
    steps: int = Field(default=100, ge=1, le=10_000)
    fmax: float = Field(default=0.05, gt=0)
    weights: list[float] = Field(default_factory=list, max_length=1000)
    cell: Cell | None = None
    label: str | None = Field(default=None, max_length=64)


SCHEMA: dict[str, Any] = Relax.model_json_schema()
PAYLOAD: dict[str, Any] = {
    "element": "O",
    "steps": 250,
    "fmax": 0.02,
    "weights": [round(0.1 * i, 1) for i in range(16)],
    "cell": {"a": 10.0, "b": 10.0, "c": 12.5, "periodic": True},
    "label": "water-cluster-17",
}
Relax.model_validate(PAYLOAD)  # the payload matches the schema


@dataclass
class CancelWorker(WorkerProcess):
    """A `bench.cancel_worker` process and the job it serves."""

    job: str = ""


async def _spawn(server: ServerProcess) -> CancelWorker:
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bench.cancel_worker", server.url, TOKEN, ROOM),
        cwd=REPO_ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
    )
    worker = CancelWorker(process)
    try:
        worker.job = (await worker.line(SPAWN_TIMEOUT))["job"]
    except BaseException:
        await worker.reap()
        raise
    return worker


async def _cancel_round(
    worker: CancelWorker,
    api: JoblibApi,
    index: int,
    rng: random.Random,
    client: BenchClient,
) -> tuple[float, float, float] | None:
    """One round: (to seen, to PATCH answered, commit to seen) in seconds, or None."""
    task = await api.submit(worker.job, {"round": index})
    if task is None:
        return None
    started = await worker.line(STEP_TIMEOUT)
    if started.get("started") != task["id"]:
        raise RuntimeError(f"cancel worker started {started!r}, not {task['id']}")
    await asyncio.sleep(rng.uniform(0, CANCEL_JITTER_SECONDS))
    sent = time.time()
    cancelled = await api.cancel(task["id"])
    answered = time.time()
    seen = await worker.line(STEP_TIMEOUT)
    if seen.get("cancelled") != task["id"]:
        raise RuntimeError(f"cancel worker said {seen!r} for task {task['id']}")
    if seen.get("reason") != "cancelled":
        client.stats.error(f"cancel: the job's code saw reason {seen.get('reason')!r}")
    if cancelled is None or cancelled.get("status") != "cancelled":
        client.stats.error(f"cancel: answered {cancelled!r}")
        return None
    at = float(seen["seen"])
    return at - sent, answered - sent, at - server_time(cancelled["completed_at"])


async def measure_cancel(
    server: ServerProcess, client: BenchClient, repeats: int
) -> dict[str, Any]:
    """Cancel `repeats` running tasks of a JobManager worker, one at a time."""
    rng = random.Random(0)
    api = JoblibApi(client.session())
    worker = await _spawn(server)
    to_seen: list[float] = []
    to_answer: list[float] = []
    commit_to_seen: list[float] = []
    try:
        for index in range(repeats):
            timings = await _cancel_round(worker, api, index, rng, client)
            if timings is not None:
                to_seen.append(timings[0])
                to_answer.append(timings[1])
                commit_to_seen.append(timings[2])
    except (TimeoutError, RuntimeError) as exc:
        # The worker's lines are out of step now: the remaining rounds are lost.
        client.stats.error(f"cancel: {type(exc).__name__}: {exc}")
    finally:
        await worker.reap()
    return {
        "to_seen_ms": summarize_ms(to_seen),
        "to_patch_answered_ms": summarize_ms(to_answer),
        "commit_to_seen_ms": summarize_ms(commit_to_seen),
    }


async def _timed_submit(api: JoblibApi, job: str, route: str) -> float | None:
    """Seconds one submit of `PAYLOAD` to `job` took; None if it failed."""
    started = time.perf_counter()
    task = await api.submit(job, PAYLOAD, route)
    return None if task is None else time.perf_counter() - started


async def measure_validation(
    client: BenchClient, repeats: int, warmup: int
) -> dict[str, Any]:
    """Submit p50 to a job with `SCHEMA` vs. one with `{}`, pairs interleaved."""
    api = JoblibApi(client.session())
    worker_id = await api.create_worker()
    if worker_id is None:
        raise RuntimeError("could not create the validation worker")
    checked = await api.register("relax", worker_id, schema=SCHEMA)
    unchecked = await api.register("relax-unchecked", worker_id, schema={})
    if checked is None or unchecked is None:
        raise RuntimeError("could not register the validation jobs")
    jobs = {"schema": checked, "empty": unchecked}
    samples: dict[str, list[float]] = {"schema": [], "empty": []}
    for _ in range(warmup):  # connections open, the validator compiled and cached
        for job in jobs.values():
            await _timed_submit(api, job, "submit_warmup")
    beat = time.perf_counter()
    for index in range(repeats):
        order = ("schema", "empty") if index % 2 == 0 else ("empty", "schema")
        pair = {
            kind: await _timed_submit(api, jobs[kind], f"submit_{kind}")
            for kind in order
        }
        if pair["schema"] is not None and pair["empty"] is not None:
            samples["schema"].append(pair["schema"])
            samples["empty"].append(pair["empty"])
        if time.perf_counter() - beat > HEARTBEAT_SECONDS:
            # Nothing claims here: keep the worker (and so its jobs) alive.
            await api.worker_exists(worker_id)
            beat = time.perf_counter()
    schema_ms = summarize_ms(samples["schema"])
    empty_ms = summarize_ms(samples["empty"])
    overhead = None
    if schema_ms["p50"] is not None and empty_ms["p50"]:
        overhead = round(
            100 * (schema_ms["p50"] - empty_ms["p50"]) / empty_ms["p50"], 2
        )
    paired = percentile(
        (a - b for a, b in zip(samples["schema"], samples["empty"], strict=True)), 0.5
    )
    return {
        "pairs": len(samples["schema"]),
        "schema_submit_ms": schema_ms,
        "empty_submit_ms": empty_ms,
        "overhead_pct": overhead,
        "paired_difference_p50_ms": None if paired is None else round(paired * 1000, 3),
        "schema_bytes": len(json.dumps(SCHEMA)),
        "payload_bytes": len(json.dumps(PAYLOAD)),
    }


def measure_check_payload(calls: int) -> dict[str, Any]:
    """The server's payload check, per call in µs, in this process (cache warm)."""
    from joblib_server.payloads import check_payload

    per_batch = max(1, calls // LOCAL_BATCHES)
    results: dict[str, Any] = {"calls": per_batch * LOCAL_BATCHES}
    for name, schema in (("schema", SCHEMA), ("empty", {})):
        check_payload(schema, PAYLOAD)  # compiles and caches the validator
        batches: list[float] = []
        for _ in range(LOCAL_BATCHES):
            started = time.perf_counter()
            for _ in range(per_batch):
                check_payload(schema, PAYLOAD)
            batches.append((time.perf_counter() - started) / per_batch * 1e6)
        results[f"{name}_us"] = {
            "p50": round(statistics.median(batches), 2),
            "min": round(min(batches), 2),
        }
    return results


async def run(database: str, config: Config) -> dict[str, Any]:
    """Cancel latency and payload-validation cost on a fresh server."""
    local = measure_check_payload(config.validation_local_calls)
    async with (
        joblib_on(database) as (server, _url),
        BenchClient(server.url, TOKEN) as client,
    ):
        cancel = await measure_cancel(server, client, config.cancel_repeats)
        validation = await measure_validation(
            client, config.validation_repeats, config.validation_warmup
        )
        validation["check_payload"] = local
        return {
            "cancel": cancel,
            "validation": validation,
            "routes": client.stats.summary(),
            "errors": client.stats.errors,
            "error_samples": client.stats.error_samples,
        }
