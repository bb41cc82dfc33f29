"""Section 8, crossprocess: wake-ups between two server processes (the wake bus).

Two `joblib-server serve` processes, A and B, on one database. Dispatch: a
`LongPollWorker` (a claim held with `Prefer: wait`, as `JobManager` does) on B, one
task at a time submitted through A; measured from the task's `created_at` to the
moment the worker holds the claim answer, as in the latency section. Long-poll: a
`GET /tasks/{id}` with `Prefer: wait` on B, the task completed through A; measured
from `completed_at` to the answer.

Per database, once per wake bus: PostgreSQL NOTIFY (on PostgreSQL) and Redis
pub/sub (on either). For comparison, on PostgreSQL, the same dispatch without a
bus (`wake_bus=off`) and the 0.1 release's re-check of 2 s: what a held claim on B
waited before. Redis is reached at `JOBLIB_BENCH_REDIS_URL` (default
`redis://127.0.0.1:6379/0`); without it the Redis cases are skipped, not failed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

from bench.api import JoblibApi
from bench.client import BenchClient
from bench.config import Config
from bench.latency import measure_dispatch, measure_long_poll
from bench.server import TOKEN, ServerProcess, database, joblib_server
from bench.workers import LongPollWorker

REDIS_URL = os.environ.get("JOBLIB_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
OLD_RECHECK_SECONDS = 2.0
"""The re-check before the wake bus (0.1): the baseline's only cross-process path."""
PARK_JITTER = 0.05
"""Seconds between the claim leaving the worker and the submit: enough for it to
be held on B (a submit that arrives first is simply claimed, and measured)."""


async def _redis_answers() -> str | None:
    """None when Redis answers a PING, else why not."""
    try:
        import redis.asyncio as aioredis
    except ImportError:
        return "the redis package is not installed"
    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except Exception as exc:
        return f"Redis at {REDIS_URL} does not answer: {exc}"
    finally:
        await client.aclose()
    return None


@contextlib.asynccontextmanager
async def _two_servers(
    url: str, settings: Mapping[str, str]
) -> AsyncIterator[tuple[ServerProcess, ServerProcess]]:
    async with joblib_server(url, settings) as a, joblib_server(url, settings) as b:
        yield a, b


async def _measure(
    kind: str, settings: Mapping[str, str], config: Config, repeats: int, polls: int
) -> dict[str, Any]:
    """Dispatch (and, with `polls`, long-polls) from A to B on a fresh database."""
    async with (
        database(kind) as url,
        _two_servers(url, settings) as (a, b),
        BenchClient(a.url, TOKEN) as on_a,
        BenchClient(b.url, TOKEN) as on_b,
    ):
        worker = await LongPollWorker.connect(on_b, "cross-held", b.url)
        submitter = JoblibApi(on_a.session())
        dispatch = await measure_dispatch(
            on_b, worker, repeats, config, PARK_JITTER, submitter=submitter
        )
        result: dict[str, Any] = {"dispatch": dispatch}
        if polls:
            result["long_poll"] = await measure_long_poll(
                on_a, polls, config, waiting=on_b, job="cross-long-poll"
            )
        stats = (on_a.stats, on_b.stats)
        result["errors"] = sum(s.errors for s in stats)
        result["error_samples"] = [x for s in stats for x in s.error_samples]
        return result


async def run(kind: str, config: Config) -> dict[str, Any]:
    """Every bus this database has, and the no-bus baseline on PostgreSQL."""
    buses: dict[str, dict[str, str]] = {}
    if kind == "postgresql":
        buses["notify"] = {"JOBLIB_WAKE_BUS": "postgresql"}
    redis_missing = await _redis_answers()
    if redis_missing is None:
        buses["redis"] = {"JOBLIB_WAKE_BUS": "redis", "JOBLIB_REDIS_URL": REDIS_URL}
    results: dict[str, Any] = {"errors": 0, "error_samples": []}
    if redis_missing is not None:
        results["redis"] = {"skipped": redis_missing}
    for name, settings in buses.items():
        measured = await _measure(
            kind,
            settings,
            config,
            config.cross_repeats,
            config.cross_long_poll_repeats,
        )
        results[name] = measured
        results["errors"] += measured.pop("errors")
        results["error_samples"] += measured.pop("error_samples")
    if kind == "postgresql" and config.cross_baseline_repeats:
        old = {
            "JOBLIB_WAKE_BUS": "off",
            "JOBLIB_LONG_POLL_RECHECK_SECONDS": str(OLD_RECHECK_SECONDS),
        }
        baseline = await _measure(
            kind, old, config, config.cross_baseline_repeats, polls=0
        )
        results["off_recheck_2s"] = baseline
        results["errors"] += baseline.pop("errors")
        results["error_samples"] += baseline.pop("error_samples")
    return results
