"""Progress of running tasks: the report operation, and the throttle of its events.

A worker reports with `PUT /tasks/{id}/progress`; the row keeps the latest report
and the task's room hears `task_progress_event`s, at most one per task every
`PROGRESS_INTERVAL` (10 a second): reports coming faster are coalesced, the
latest always goes out, and before the task's terminal `task_status_event`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from joblib_protocol import (
    Emission,
    TaskNotRunning,
    TaskProgress,
    TaskProgressEvent,
    TaskProgressRequest,
    TaskStatus,
    TaskStatusEvent,
    is_terminal,
    room_channel,
)
from joblib_server.auth import Identity
from joblib_server.errors import ProblemError, forbidden
from joblib_server.outcome import Outcome
from joblib_server.tables import TASK_TABLE, WORKER_TABLE
from joblib_server.tasks import locked_report

logger = logging.getLogger("joblib_server")

PROGRESS_INTERVAL = 0.1
"""Seconds between two `task_progress_event`s of one task, at the least."""

_REMEMBERED_FINISHED = 10_000
"""Finished tasks remembered, so that a late progress event is not sent after."""

_task, _worker = TASK_TABLE, WORKER_TABLE

_TASK_TO_REPORT = (
    sa.select(
        _task.c.status,
        _task.c.room_id,
        _task.c.worker_id,
        _task.c.claim_request_id,
        _worker.c.owner_id.label("worker_owner"),
    )
    .outerjoin(_worker, _worker.c.id == _task.c.worker_id)
    .where(_task.c.id == sa.bindparam("b_task"))
)

_SET_PROGRESS = (
    sa.update(_task)
    .where(_task.c.id == sa.bindparam("b_task"))
    .values(progress=sa.bindparam("b_progress"))
)


async def report_progress(
    session: AsyncSession,
    identity: Identity,
    task_id: uuid.UUID,
    request: TaskProgressRequest,
) -> Outcome[None]:
    """Keep a running task's latest progress, as its worker's owner or an admin.

    409 `task-not-running` tells the worker its task is over (cancelled, failed
    past its deadline, finished): it should stop working on it. An executor
    reports an `@internal` task's progress with the `claim_id` of its dispatch.
    """
    # Locked like an update: a report must not land on a task being finished.
    row = await locked_report(
        session, _TASK_TO_REPORT, task_id, request.worker_id, request.claim_id
    )
    owner = row.worker_owner
    if not identity.is_admin and (owner is None or owner != identity.id):
        raise forbidden(f"task {task_id} is not yours to report progress on")
    if row.status != TaskStatus.RUNNING:
        raise ProblemError(
            TaskNotRunning,
            f"task {task_id} is {row.status}, not running: stop working on it",
        )
    progress = TaskProgress(**request.model_dump(exclude={"worker_id"}))
    params = {"b_task": task_id, "b_progress": progress.model_dump()}
    await (await session.connection()).execute(_SET_PROGRESS, params)
    event = TaskProgressEvent(id=str(task_id), room_id=row.room_id, progress=progress)
    return Outcome(None, {Emission(event, room_channel(row.room_id))})


def is_progress(emission: Emission) -> bool:
    """Whether an emission is a `task_progress_event` (to go through the throttle)."""
    return isinstance(emission.event, TaskProgressEvent)


def finished_tasks(emissions: Iterable[Emission]) -> set[str]:
    """The ids of the tasks these emissions announce finished."""
    return {
        e.event.id
        for e in emissions
        if isinstance(e.event, TaskStatusEvent) and is_terminal(e.event.status)
    }


Send = Callable[[list[Emission]], Awaitable[None]]


class ProgressThrottle:
    """Lets one progress event per task through each `interval`; coalesces the rest.

    The first event of a quiet task goes out at once; those that follow within
    the interval replace each other, and the latest goes out when the interval
    ends (a timer on the running event loop). `finish` hands over a finishing
    task's pending event, to be sent before its terminal status, and drops any
    that comes later. Once `running()` turns false (the server is shutting
    down) no timer is set and none that fires sends anything.
    """

    def __init__(
        self,
        send: Send,
        *,
        interval: float = PROGRESS_INTERVAL,
        running: Callable[[], bool] = lambda: True,
    ) -> None:
        self._send = send
        self._interval = interval
        self._running = running
        self._sent_at: dict[str, float] = {}
        self._pending: dict[str, Emission] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._flushing: set[asyncio.Task[None]] = set()
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._pruned_at = 0.0

    def __len__(self) -> int:
        """How many tasks have an event waiting for their interval to end."""
        return len(self._pending)

    async def offer(self, emission: Emission) -> None:
        """Send a progress event now, or keep it as its task's latest for later."""
        task_id = _task_id(emission)
        if task_id in self._finished:
            return  # committed before the task finished, but too late to matter
        loop = asyncio.get_running_loop()
        now = loop.time()
        last = self._sent_at.get(task_id)
        if last is None or now - last >= self._interval or not self._running():
            self._forget(task_id)
            self._prune(now)
            self._sent_at[task_id] = now
            await self._deliver([emission])
            return
        self._pending[task_id] = emission
        if task_id not in self._timers:
            delay = last + self._interval - now
            self._timers[task_id] = loop.call_later(delay, self._due, task_id)

    def finish(self, task_ids: Iterable[str]) -> list[Emission]:
        """Take the pending events of tasks that finish; later ones are dropped."""
        taken: list[Emission] = []
        for task_id in task_ids:
            pending = self._forget(task_id)
            if pending is not None:
                taken.append(pending)
            self._sent_at.pop(task_id, None)
            self._finished[task_id] = None
            self._finished.move_to_end(task_id)
        while len(self._finished) > _REMEMBERED_FINISHED:
            self._finished.popitem(last=False)
        return taken

    def close(self) -> None:
        """Cancel every timer and drop what is pending."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._pending.clear()
        for flushing in self._flushing:
            flushing.cancel()

    def _forget(self, task_id: str) -> Emission | None:
        timer = self._timers.pop(task_id, None)
        if timer is not None:
            timer.cancel()
        return self._pending.pop(task_id, None)

    def _prune(self, now: float) -> None:
        # A task last sent an interval ago or more is as good as never sent:
        # forgetting it keeps the table at the tasks reporting right now.
        if len(self._sent_at) < 1000 or now - self._pruned_at < self._interval:
            return
        self._pruned_at = now
        for task_id, at in list(self._sent_at.items()):
            if now - at >= self._interval and task_id not in self._pending:
                del self._sent_at[task_id]

    def _due(self, task_id: str) -> None:
        self._timers.pop(task_id, None)
        if not self._running():
            self.close()
            return
        flushing = asyncio.get_running_loop().create_task(self._flush(task_id))
        self._flushing.add(flushing)
        flushing.add_done_callback(self._flushing.discard)

    async def _flush(self, task_id: str) -> None:
        # Taken only now: `finish` may have sent it already, before its task's
        # terminal status. Nothing awaits between taking it and the emitter's
        # queueing it, so the two cannot cross.
        emission = self._pending.pop(task_id, None)
        if emission is None:
            return
        self._sent_at[task_id] = asyncio.get_running_loop().time()
        await self._deliver([emission])

    async def _deliver(self, batch: list[Emission]) -> None:
        try:
            await self._send(batch)
        except Exception:
            # Committed already: a failed notification must not fail the report.
            logger.exception("emitting %d progress events failed", len(batch))


def _task_id(emission: Emission) -> str:
    event: Any = emission.event
    return str(event.id)
