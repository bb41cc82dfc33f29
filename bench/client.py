"""The HTTP client every driver shares, the floor included: timing and error counts.

All requests come from one asyncio loop (uvloop when installed) in the benchmark's
process, through httpx. Every concurrent actor opens its own keep-alive session, and
every request goes through `Session.call`, which records its latency under a route
label and counts any unexpected status or transport failure as an error.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx

SESSION_CONNECTIONS = 2
REQUEST_TIMEOUT = 60.0
# uvicorn closes idle keep-alive connections after 5 s, and httpx's default expiry
# is also 5 s: a request sent on a connection just as the server closes it fails
# with ReadError. Dropping idle connections earlier on our side avoids the race.
KEEPALIVE_SECONDS = 2.0
KEPT_ERRORS = 5


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-quantile (0..1) by linear interpolation; None without values."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = q * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize_ms(seconds: list[float]) -> dict[str, Any]:
    """Count and p50/p95/p99 in milliseconds of durations given in seconds."""
    summary: dict[str, Any] = {"n": len(seconds)}
    for name, q in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99)):
        value = percentile(seconds, q)
        summary[name] = None if value is None else round(value * 1000, 3)
    return summary


@dataclass
class RouteStats:
    """Latencies per route label, plus the errors seen."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def error(self, message: str) -> None:
        """Count an error and keep the first few messages."""
        self.errors += 1
        if len(self.error_samples) < KEPT_ERRORS:
            self.error_samples.append(message)

    def requests(self, *routes: str) -> int:
        """How many requests were made (on the given routes, or on all)."""
        chosen = routes or tuple(self.latencies)
        return sum(len(self.latencies.get(route, ())) for route in chosen)

    def summary(self) -> dict[str, dict[str, Any]]:
        """p50/p95/p99 in ms per route."""
        return {route: summarize_ms(values) for route, values in self.latencies.items()}


class BenchClient:
    """Times every request under a route label and counts the unexpected answers.

    Each concurrent actor (a worker, a submitter loop, a floor loop) opens its own
    `session()`: one small `httpx.AsyncClient` with its own keep-alive connection,
    as a real worker process has. One client pool shared by many concurrent loops
    is slower: httpcore's pool bookkeeping grows with its number of connections.
    """

    def __init__(self, base_url: str, token: str | None = None) -> None:
        self._base_url = base_url
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._sessions: list[httpx.AsyncClient] = []
        self.stats = RouteStats()

    async def __aenter__(self) -> BenchClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for http in self._sessions:
            await http.aclose()

    def session(self) -> Session:
        """A new connection pool of its own, counted in this client's stats."""
        limits = httpx.Limits(
            max_connections=SESSION_CONNECTIONS,
            max_keepalive_connections=SESSION_CONNECTIONS,
            keepalive_expiry=KEEPALIVE_SECONDS,
        )
        http = httpx.AsyncClient(
            base_url=self._base_url,
            headers=self._headers,
            limits=limits,
            timeout=REQUEST_TIMEOUT,
        )
        self._sessions.append(http)
        return Session(http, self)

    def reset(self) -> RouteStats:
        """Start counting afresh; return what was counted so far."""
        stats, self.stats = self.stats, RouteStats()
        return stats


class Session:
    """One actor's connection: `call` sends a request and records it."""

    def __init__(self, http: httpx.AsyncClient, owner: BenchClient) -> None:
        self.http = http
        self._owner = owner

    def error(self, message: str) -> None:
        """Count an error that the caller found in an otherwise fine answer."""
        self._owner.stats.error(message)

    async def call(
        self,
        route: str,
        method: str,
        path: str,
        *,
        expect: tuple[int, ...] = (200,),
        **kwargs: Any,
    ) -> httpx.Response | None:
        """Send one request; None (an error counted) unless the status is expected."""
        stats = self._owner.stats
        started = time.perf_counter()
        try:
            response = await self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            stats.error(f"{route}: {type(exc).__name__}: {exc}")
            return None
        stats.latencies[route].append(time.perf_counter() - started)
        if response.status_code not in expect:
            stats.error(f"{route}: {response.status_code} {response.text[:200]}")
            return None
        return response


async def run_concurrently(
    count: int,
    steps: list[Callable[[int], Awaitable[None]]],
    deadline: float,
) -> int:
    """Run `count` steps, spread over one loop per entry of `steps`, until deadline.

    Loop k calls `steps[k](i)` for the next free index i, so each loop keeps its
    own session. `deadline` is a `time.perf_counter()` value. Returns how many
    steps ran.
    """
    indices = iter(range(count))
    done = 0

    async def loop(step: Callable[[int], Awaitable[None]]) -> None:
        nonlocal done
        for index in indices:
            if time.perf_counter() > deadline:
                return
            await step(index)
            done += 1

    await asyncio.gather(*(loop(step) for step in steps))
    return done
