"""The in-process worker actors: socket-woken and REST-polling, and their claim loop.

A `SocketWorker` is what a third-party worker looks like on the wire: a worker id
(`POST /workers`), a registered job, a Socket.IO connection in the job's room, and
a loop that claims (claim-and-start, one request) until nothing is left, completes
each task (one request), and sleeps until `task_available` wakes it. A
`PollingWorker` has no socket and claims again every `poll_interval` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any, Self

from bench.api import JoblibApi, Task
from bench.client import BenchClient
from bench.server import TOKEN
from bench.sio import AsyncSocket

IDLE_RECHECK_SECONDS = 1.0

OnClaimed = Callable[[Task, float], None]


def _ignore(task: Task, wall: float) -> None:
    return None


class Worker:
    """A worker id and its REST session; subclasses say how an idle worker waits."""

    def __init__(self, api: JoblibApi, worker_id: str, full_name: str) -> None:
        self.api = api
        self.id = worker_id
        self.full_name = full_name
        self.claimed = 0
        # Set while the worker waits between an empty claim and the next one.
        self.idling = asyncio.Event()

    @classmethod
    async def register(cls, client: BenchClient, job: str, **kwargs: Any) -> Self:
        """A new worker serving job `job` (in the bench room)."""
        api = JoblibApi(client.session())
        worker_id = await api.create_worker()
        full_name = None if worker_id is None else await api.register(job, worker_id)
        if worker_id is None or full_name is None:
            raise RuntimeError(f"could not register a worker for {job!r}")
        return cls(api, worker_id, full_name, **kwargs)

    def arm(self) -> None:
        """Called before each claim: forget wake-ups that the claim will cover."""

    async def claim(self) -> Task | None:
        """One claim (claim-and-start): the running task, or None."""
        return await self.api.claim(self.id)

    def wake(self) -> None:
        """End an idle wait early (to stop the worker)."""

    async def idle(self, longest: float) -> None:
        """Wait for a reason to claim again, at most `longest` seconds."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release what the worker holds."""

    async def run(
        self,
        stop: asyncio.Event,
        deadline: float,
        on_claimed: OnClaimed = _ignore,
        on_done: Callable[[Task], None] | None = None,
    ) -> None:
        """Claim, complete, repeat; idle when nothing is pending; stop on `stop`."""
        while not stop.is_set() and time.perf_counter() < deadline:
            self.arm()
            task = await self.claim()
            if task is None:
                remaining = deadline - time.perf_counter()
                self.idling.set()
                await self.idle(max(0.0, min(IDLE_RECHECK_SECONDS, remaining)))
                self.idling.clear()
                continue
            self.claimed += 1
            on_claimed(task, time.time())
            done = await self.api.complete(task["id"])
            if done is not None and on_done is not None:
                on_done(done)


class PollingWorker(Worker):
    """A REST-only worker: claims again every `poll_interval` seconds when idle."""

    def __init__(
        self, api: JoblibApi, worker_id: str, full_name: str, poll_interval: float
    ) -> None:
        super().__init__(api, worker_id, full_name)
        self.poll_interval = poll_interval

    async def idle(self, longest: float) -> None:
        """Sleep one poll interval."""
        await asyncio.sleep(min(self.poll_interval, longest))


class SocketWorker(Worker):
    """A worker in its job's Socket.IO room, woken by `task_available`."""

    def __init__(
        self, api: JoblibApi, worker_id: str, full_name: str, url: str
    ) -> None:
        super().__init__(api, worker_id, full_name)
        self.socket = AsyncSocket(url, TOKEN)
        self.woken = asyncio.Event()
        self.socket.on("task_available", lambda data, arrival: self.woken.set())

    @classmethod
    async def connect(cls, client: BenchClient, job: str, url: str) -> Self:
        """Register, connect, and join the job's room (`join_job_room`)."""
        worker = await cls.register(client, job, url=url)
        await worker.socket.connect()
        answer = await worker.socket.call(
            "join_job_room", {"job_name": worker.full_name, "worker_id": worker.id}
        )
        if not isinstance(answer, dict) or answer.get("ok") is not True:
            await worker.close()
            raise RuntimeError(f"join_job_room refused: {answer!r}")
        return worker

    def arm(self) -> None:
        """Clear the wake-up flag: the coming claim sees every task announced so far."""
        self.woken.clear()

    def wake(self) -> None:
        """Set the wake-up flag."""
        self.woken.set()

    async def idle(self, longest: float) -> None:
        """Wait for `task_available` (or a recheck after `longest` seconds)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.woken.wait(), longest)

    async def close(self) -> None:
        """Close the socket; the server then removes the worker."""
        await self.socket.close()


class LongPollWorker(SocketWorker):
    """Our client's way: in the job's room, and claims parked with `Prefer: wait`.

    A parked claim is answered as soon as a task is submitted, and the server
    wakes one parked claim per task rather than every idle worker, so an idle
    worker makes no requests that find nothing.
    """

    claim_wait = 30.0

    def __init__(
        self, api: JoblibApi, worker_id: str, full_name: str, url: str
    ) -> None:
        super().__init__(api, worker_id, full_name, url)
        self.stopping = asyncio.Event()

    async def claim(self) -> Task | None:
        """A parked claim; None when it expires or the worker is stopped."""
        # Idle from the moment it parks, as far as a latency driver can tell.
        self.idling.set()
        request = asyncio.ensure_future(self.api.claim(self.id, self.claim_wait))
        stopping = asyncio.ensure_future(self.stopping.wait())
        try:
            done, _ = await asyncio.wait(
                {request, stopping}, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            self.idling.clear()
            stopping.cancel()
        if request in done:
            return request.result()
        # Stopped while parked: the unanswered request is abandoned, not counted.
        request.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await request
        return None

    def wake(self) -> None:
        """Stop: also abandon a parked claim."""
        super().wake()
        self.stopping.set()

    async def idle(self, longest: float) -> None:
        """The claim itself waited; nothing more to wait for."""


class Handoffs:
    """Futures keyed by task id, resolved by whichever side sees the task first."""

    def __init__(self) -> None:
        self._futures: dict[str, asyncio.Future[Any]] = {}

    def future(self, task_id: str) -> asyncio.Future[Any]:
        """The future of `task_id`, created on first use."""
        if task_id not in self._futures:
            self._futures[task_id] = asyncio.get_running_loop().create_future()
        return self._futures[task_id]

    def resolve(self, task_id: str, value: Any) -> None:
        """Hand `value` to whoever waits for `task_id`."""
        future = self.future(task_id)
        if not future.done():
            future.set_result(value)
