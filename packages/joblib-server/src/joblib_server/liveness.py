"""Socket heartbeats: a process keeps its socket-connected workers alive itself.

A worker whose socket is connected needs no REST heartbeat to show it lives: the
socket does (Engine.IO pings it, and its close cleans the worker up at once). So
every `interval` each server process records a heartbeat for every worker that
joined a room through one of its sockets, in one statement for all of them,
instead of one request and statement per worker. A REST-only worker still
heartbeats and still expires; a process that dies stops beating for its workers,
which then expire by `worker_timeout_seconds` unless they reconnect elsewhere.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import anyio

from joblib_server.workers import keep_alive

if TYPE_CHECKING:
    from joblib_server.runtime import JobLib

logger = logging.getLogger("joblib_server.liveness")

BEATS_PER_TIMEOUT = 3
"""Beats within one `worker_timeout_seconds`: two may fail before a worker expires."""

Source = Callable[[], Iterable[uuid.UUID]]
"""Where the connected workers come from (a `Realtime`'s connections)."""


class SocketHeartbeats:
    """Records the heartbeats of the workers connected to this process."""

    def __init__(self, joblib: JobLib) -> None:
        self.joblib = joblib
        self._sources: list[Source] = []

    @property
    def interval(self) -> float:
        """Seconds between two beats: a third of `worker_timeout_seconds`."""
        return self.joblib.settings.worker_timeout_seconds / BEATS_PER_TIMEOUT

    def watch(self, source: Source) -> None:
        """Beat, from now on, for the workers `source` names at each beat."""
        self._sources.append(source)

    def workers(self) -> set[uuid.UUID]:
        """The workers connected to this process now."""
        return {worker for source in self._sources for worker in source()}

    async def beat_once(self) -> int:
        """One beat for every connected worker; how many the database still had."""
        workers = self.workers()
        if not workers or self.joblib.stopping:
            return 0
        return await self.joblib.execute(keep_alive, workers)

    async def run(self) -> None:
        """Beat every `interval` until cancelled; a failed beat is logged, not fatal."""
        while True:
            await anyio.sleep(self.interval)
            try:
                await self.beat_once()
            except Exception:
                logger.exception("recording the socket heartbeats failed")
