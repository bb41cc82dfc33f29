"""Section 10, connections: many sockets on one server process (issue 18, part 5).

For each total in `connection_counts` (500, 1,000 and 2,000), on a fresh server:
half the sockets are workers, half observers. The workers are registered over
REST (16 at a time) to one job, then each connects a socket and joins its job's
room (`join_job_room`); the observers connect with a token that may read only
the benchmark's room and `join_room` it. All of them live in this one asyncio
loop (`bench.sio.AsyncSocket`), 64 connecting at a time.

Measured at each count:

- memory: the server's RSS after the REST registrations (and a few sockets
  opened and closed, so the first socket's one-off costs are not counted), and
  once every socket has joined; per connection = the difference / the count;
- connect: from the first socket opened to the last one joined;
- fan-out, `fanout_repeats` times: one task submitted, timed from just before
  the request until every observer has its `task_status_event` (pending) and
  every worker its `task_available` (the last and the median arrival); then the
  task cancelled, until every observer has the `cancelled` event. Also the
  server's CPU per event delivered;
- disconnect storm: every worker socket closed at once (64 at a time) while the
  observers watch: until the client has closed them, and until the server has
  cleaned up every worker (`GET /workers` says 0); how many `jobs_invalidate`
  each observer received meanwhile; then the observers closed.

Per-connection costs that stay flat as the count grows mean nothing is
quadratic in the number of connections.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bench.api import API, ROOM, JoblibApi
from bench.client import BenchClient, Session, run_concurrently
from bench.config import Config
from bench.server import TOKEN, ServerProcess, joblib_on
from bench.sio import AsyncSocket

OBSERVER_TOKEN = "bench-observer-token"
TOKENS = json.dumps(
    {
        TOKEN: {"id": "bench", "admin": True},
        OBSERVER_TOKEN: {"id": "observer", "rooms": [ROOM]},
    }
)
JOB = "many"
REGISTER_LOOPS = 16
CONNECT_AT_ONCE = 64
WARMUP_SOCKETS = 8
EVENT_SECONDS = 60.0
CLEANUP_SECONDS = 120.0
SETTLE_SECONDS = 0.5
"""After connecting, before reading the RSS: the last joins' work finishes."""


def raise_file_limit() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard one (the server subprocess inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


@dataclass
class Arrivals:
    """Who has received one event, and when (perf_counter)."""

    expected: int | None = None
    times: list[float] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, arrival: float) -> None:
        """One more recipient has it."""
        self.times.append(arrival)
        self._check()

    def expect(self, count: int) -> None:
        """Done once `count` recipients have it."""
        self.expected = count
        self._check()

    def _check(self) -> None:
        if self.expected is not None and len(self.times) >= self.expected:
            self.done.set()

    async def wait(self, count: int) -> None:
        """Until `count` recipients have it (at most `EVENT_SECONDS`)."""
        self.expect(count)
        await asyncio.wait_for(self.done.wait(), EVENT_SECONDS)


@dataclass
class Watch:
    """Every task event the sockets received, by (kind, task id, status)."""

    arrivals: dict[tuple[str, str, str], Arrivals] = field(default_factory=dict)
    invalidations: int = 0

    def of(self, kind: str, task_id: str, status: str = "") -> Arrivals:
        """The arrivals of one event (created empty when none has come yet)."""
        return self.arrivals.setdefault((kind, task_id, status), Arrivals())

    def on_status(self, payload: Any, arrival: float) -> None:
        """An observer's `task_status_event`."""
        if isinstance(payload, dict):
            self.of("status", str(payload.get("id")), str(payload.get("status"))).add(
                arrival
            )

    def on_available(self, payload: Any, arrival: float) -> None:
        """A worker's `task_available`."""
        if isinstance(payload, dict):
            self.of("available", str(payload.get("task_id"))).add(arrival)

    def on_invalidate(self, _payload: Any, _arrival: float) -> None:
        """An observer's `jobs_invalidate`."""
        self.invalidations += 1


async def _bounded(count: int, step: Callable[[int], Awaitable[None]]) -> None:
    """`step(i)` for i in range(count), at most `CONNECT_AT_ONCE` at a time."""
    gate = asyncio.Semaphore(CONNECT_AT_ONCE)

    async def one(index: int) -> None:
        async with gate:
            await step(index)

    await asyncio.gather(*(one(index) for index in range(count)))


async def _register(client: BenchClient, count: int) -> tuple[str, list[str]]:
    """`count` workers linked to one job over REST: (job full name, worker ids)."""
    apis = [JoblibApi(client.session()) for _ in range(REGISTER_LOOPS)]
    ids: list[str | None] = [None] * count
    names: set[str] = set()

    def step(api: JoblibApi) -> Callable[[int], Awaitable[None]]:
        async def register(index: int) -> None:
            worker_id = await api.create_worker()
            if worker_id is None:
                return
            full_name = await api.register(JOB, worker_id)
            if full_name is not None:
                ids[index] = worker_id
                names.add(full_name)

        return register

    deadline = time.perf_counter() + CLEANUP_SECONDS
    await run_concurrently(count, [step(api) for api in apis], deadline)
    workers = [worker_id for worker_id in ids if worker_id is not None]
    if len(workers) != count or len(names) != 1:
        raise RuntimeError(f"registered {len(workers)} of {count} workers")
    return names.pop(), workers


async def _open(url: str, token: str, watch: Watch, worker: bool) -> AsyncSocket:
    socket = AsyncSocket(url, token)
    if worker:
        socket.on("task_available", watch.on_available)
    else:
        socket.on("task_status_event", watch.on_status)
        socket.on("jobs_invalidate", watch.on_invalidate)
    await socket.connect()
    return socket


async def _connect_all(
    url: str, job: str, workers: list[str], observers: int, watch: Watch
) -> tuple[list[AsyncSocket], list[AsyncSocket]]:
    """Every worker's socket in its job's room, every observer's in the room."""
    worker_sockets: list[AsyncSocket] = []
    observer_sockets: list[AsyncSocket] = []
    refusals: list[Any] = []

    async def worker(index: int) -> None:
        socket = await _open(url, TOKEN, watch, worker=True)
        worker_sockets.append(socket)
        answer = await socket.call(
            "join_job_room", {"job_name": job, "worker_id": workers[index]}
        )
        if not (isinstance(answer, dict) and answer.get("ok")):
            refusals.append(answer)

    async def observer(_index: int) -> None:
        socket = await _open(url, OBSERVER_TOKEN, watch, worker=False)
        observer_sockets.append(socket)
        answer = await socket.call("join_room", {"room_id": ROOM})
        if not (isinstance(answer, dict) and answer.get("ok")):
            refusals.append(answer)

    await _bounded(len(workers), worker)
    await _bounded(observers, observer)
    if refusals:
        raise RuntimeError(f"{len(refusals)} joins refused, e.g. {refusals[0]!r}")
    return worker_sockets, observer_sockets


async def _close_all(sockets: list[AsyncSocket]) -> None:
    await _bounded(len(sockets), lambda index: sockets[index].close())


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def _spread(started: float, arrivals: Arrivals) -> dict[str, float]:
    """The last and the median arrival, in ms after `started`."""
    delays = [arrival - started for arrival in arrivals.times]
    return {"last": _ms(max(delays)), "p50": _ms(statistics.median(delays))}


def _summary(rounds: list[dict[str, float]]) -> dict[str, float]:
    """The median over the rounds of each number, and the worst `last`."""
    if not rounds:
        return {}
    summary = {
        key: round(statistics.median(r[key] for r in rounds), 2) for key in rounds[0]
    }
    summary["worst_last"] = max(r["last"] for r in rounds)
    return summary


async def _fanout(
    server: ServerProcess,
    api: JoblibApi,
    job: str,
    watch: Watch,
    sockets: tuple[int, int],
    repeats: int,
) -> dict[str, Any]:
    """Submit, then cancel, one task `repeats` times; when did every socket hear?"""
    workers, observers = sockets
    pending: list[dict[str, float]] = []
    available: list[dict[str, float]] = []
    cancelled: list[dict[str, float]] = []
    cpu = 0.0
    for _ in range(repeats):
        cpu_before = server.cpu_seconds()
        started = time.perf_counter()
        # The events may arrive before the answer (they leave from the emitter's
        # queue), so the handlers keep them by task id until we know which it is.
        task = await api.submit(job, {"n": 1})
        if task is None:
            continue
        seen = watch.of("status", task["id"], "pending")
        heard = watch.of("available", task["id"])
        await asyncio.gather(seen.wait(observers), heard.wait(workers))
        pending.append(_spread(started, seen))
        available.append(_spread(started, heard))
        started = time.perf_counter()
        if await api.cancel(task["id"]) is None:
            continue
        seen = watch.of("status", task["id"], "cancelled")
        await seen.wait(observers)
        cancelled.append(_spread(started, seen))
        cpu += server.cpu_seconds() - cpu_before
    events = len(pending) * (observers + workers) + len(cancelled) * observers
    return {
        "rounds": len(cancelled),
        "pending_to_observers_ms": _summary(pending),
        "available_to_workers_ms": _summary(available),
        "cancelled_to_observers_ms": _summary(cancelled),
        "server_cpu_us_per_event": round(cpu / events * 1e6, 2) if events else None,
    }


async def _workers_left(session: Session) -> int | None:
    response = await session.call(
        "list_workers", "GET", f"{API}/workers", params={"limit": 1}
    )
    return None if response is None else int(response.json()["total"])


async def measure_count(
    server: ServerProcess, client: BenchClient, total: int, config: Config
) -> dict[str, Any]:
    """Connect `total` sockets (half workers, half observers); measure; close."""
    observers = total // 2
    job, workers = await _register(client, total - observers)
    watch = Watch()
    warm = [await _open(server.url, OBSERVER_TOKEN, watch, worker=False)]
    warm += [await _open(server.url, TOKEN, watch, worker=True) for _ in range(3)]
    for socket in warm[:WARMUP_SOCKETS]:
        await socket.call("join_room", {"room_id": ROOM})
    await _close_all(warm)
    await asyncio.sleep(SETTLE_SECONDS)
    rss_before = server.rss_mib()
    cpu_before = server.cpu_seconds()
    started = time.perf_counter()
    worker_sockets, observer_sockets = await _connect_all(
        server.url, job, workers, observers, watch
    )
    connect_s = time.perf_counter() - started
    connect_cpu = server.cpu_seconds() - cpu_before
    try:
        await asyncio.sleep(SETTLE_SECONDS)
        rss_after = server.rss_mib()
        session = client.session()
        fanout = await _fanout(
            server,
            JoblibApi(session),
            job,
            watch,
            (len(worker_sockets), len(observer_sockets)),
            config.fanout_repeats,
        )
        # The storm: every worker leaves at once while the observers watch.
        watch.invalidations = 0
        started = time.perf_counter()
        await _close_all(worker_sockets)
        closed_s = time.perf_counter() - started
        while (left := await _workers_left(session)) != 0:
            if left is None or time.perf_counter() - started > CLEANUP_SECONDS:
                raise RuntimeError(
                    f"{left} workers still there {CLEANUP_SECONDS:g} s after the storm"
                )
            await asyncio.sleep(0.02)
        cleaned_s = time.perf_counter() - started
        started = time.perf_counter()
        await _close_all(observer_sockets)
        observers_closed_s = time.perf_counter() - started
    finally:
        # Closing twice is harmless; after a failure, no socket outlives its server.
        await _close_all(worker_sockets + observer_sockets)
    return {
        "connections": total,
        "workers": len(worker_sockets),
        "observers": len(observer_sockets),
        "rss_before_mib": round(rss_before, 1),
        "rss_after_mib": round(rss_after, 1),
        "kib_per_connection": round((rss_after - rss_before) * 1024 / total, 1),
        "connect_s": round(connect_s, 3),
        "connect_ms_per_connection": _ms(connect_s / total),
        "connect_server_cpu_ms_per_connection": _ms(connect_cpu / total),
        "fanout": fanout,
        "workers_closed_s": round(closed_s, 3),
        "workers_cleaned_up_s": round(cleaned_s, 3),
        "cleanup_ms_per_worker": _ms(cleaned_s / max(len(worker_sockets), 1)),
        "jobs_invalidate_per_observer": round(
            watch.invalidations / max(len(observer_sockets), 1), 1
        ),
        "observers_closed_s": round(observers_closed_s, 3),
        "load_average": [round(load, 2) for load in os.getloadavg()],
    }


async def run(database: str, config: Config) -> dict[str, Any]:
    """Each connection count on a fresh server and database."""
    soft, _hard = raise_file_limit()
    needed = 2 * max(config.connection_counts) + 200
    if soft < needed:
        raise RuntimeError(f"RLIMIT_NOFILE is {soft}; this section needs {needed}")
    counts: list[dict[str, Any]] = []
    errors = 0
    samples: list[str] = []
    for total in config.connection_counts:
        settings = {
            "JOBLIB_TOKENS": TOKENS,
            "JOBLIB_MAX_SOCKETS": str(total + 100),
            "JOBLIB_MAX_SOCKETS_PER_IDENTITY": str(total + 100),
        }
        async with (
            joblib_on(database, settings) as (server, _url),
            BenchClient(server.url, TOKEN) as client,
        ):
            try:
                counts.append(await measure_count(server, client, total, config))
            except Exception as exc:
                # One count failing (a storm not cleaned up in time) still leaves
                # the others' numbers to compare.
                counts.append({"connections": total, "error": f"{exc!r}"})
                errors += 1
                samples.append(f"{total} sockets: {exc!r}")
            errors += client.stats.errors
            samples += client.stats.error_samples
    return {
        "file_limit": soft,
        "counts": counts,
        "errors": errors,
        "error_samples": samples[:5],
    }
