"""The sweeper: cleans up workers that stopped heartbeating and stuck internal tasks."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio

from joblib_protocol import Emission
from joblib_server.database import Database
from joblib_server.settings import Settings
from joblib_server.tasks import cleanup_stuck_internal_tasks
from joblib_server.workers import cleanup_stale_workers

logger = logging.getLogger("joblib_server.sweeper")

Publish = Callable[[set[Emission]], Awaitable[None]]


async def sweep_once(database: Database, settings: Settings) -> set[Emission]:
    """Run one sweep in its own transactions and return what to emit."""
    async with database.write() as session:
        emissions = await cleanup_stale_workers(
            session, settings.worker_timeout_seconds
        )
    async with database.write() as session:
        emissions |= await cleanup_stuck_internal_tasks(
            session, settings.internal_task_timeout_seconds
        )
    return emissions


async def run_sweeper(database: Database, settings: Settings, publish: Publish) -> None:
    """Sweep every interval until cancelled; a failed sweep is logged, not fatal."""
    while True:
        try:
            # A sweep cut off mid-transaction by shutdown can leave its pooled
            # connection half-closed and shutdown hanging: finish it first.
            with anyio.CancelScope(shield=True):
                emissions = await sweep_once(database, settings)
            if emissions:
                logger.info("sweeper cleaned up; %d events", len(emissions))
                # Inside the try: a publish that fails must not end the sweeper.
                await publish(emissions)
        except Exception:
            logger.exception("sweep failed; trying again next interval")
        await anyio.sleep(settings.sweeper_interval_seconds)
