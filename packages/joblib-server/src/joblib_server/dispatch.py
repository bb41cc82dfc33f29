"""Waiting for work: held claims and task long-polls, and what wakes them.

A held claim (`POST /tasks/claim` with `Prefer: wait=N`) parks until a task of one
of its worker's jobs is submitted; a long-poll (`GET /tasks/{id}` with `Prefer:
wait=N`) waits until its task is terminal. Both are woken in-process by the
emissions `JobLib.execute` publishes after each commit, and by the wake bus
(`wakebus`) for changes committed in other server processes. Every
`long_poll_recheck_seconds` they re-check anyway, a safety net for a wake-up lost
on the way: one statement per process and interval (`recheck_claims`) for all
held claims, each long-poll on its own. The loops take their database work as
callables, so routes stay parse, call, answer.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import anyio

from joblib_protocol import (
    Emission,
    TaskAvailable,
    TaskResponse,
    TaskStatusEvent,
    is_terminal,
)

logger = logging.getLogger("joblib_server.dispatch")


class TaskWaiters:
    """Long-polls register here; a terminal task event sets their `anyio.Event`."""

    def __init__(self) -> None:
        self._waiting: dict[uuid.UUID, set[anyio.Event]] = {}
        self.closed = False

    def close(self) -> None:
        """Wake every long-poll to answer now, and let no new one wait (shutdown)."""
        self.closed = True
        for events in self._waiting.values():
            for event in events:
                event.set()

    @contextmanager
    def watch(self, task_id: uuid.UUID) -> Iterator[anyio.Event]:
        """Yield an event set when `task_id` turns terminal in this process."""
        event = anyio.Event()
        if self.closed:
            event.set()
        self._waiting.setdefault(task_id, set()).add(event)
        try:
            yield event
        finally:
            waiting = self._waiting.get(task_id)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._waiting[task_id]

    def notify(self, emissions: Iterable[Emission]) -> None:
        """Wake the long-polls of every task that these emissions show finished."""
        for emission in emissions:
            event = emission.event
            if isinstance(event, TaskStatusEvent) and is_terminal(event.status):
                self.wake(uuid.UUID(event.id))

    def wake(self, task_id: uuid.UUID) -> None:
        """Wake the long-polls of `task_id` (they read the task again)."""
        for waiter in self._waiting.get(task_id, ()):
            waiter.set()

    def wake_all(self) -> None:
        """Wake every long-poll once: each reads its task again, then waits on."""
        for events in self._waiting.values():
            for event in events:
                event.set()

    def __len__(self) -> int:
        return sum(len(events) for events in self._waiting.values())


_REMEMBERED_WORKERS = 10_000


class ParkedClaim:
    """One long-polling claim: the jobs it waits for, and the event that wakes it."""

    def __init__(self, worker_id: uuid.UUID, jobs: tuple[str, ...]) -> None:
        self.worker_id = worker_id
        self.jobs = jobs
        self.woken = anyio.Event()
        self.woken_for: str | None = None


class ClaimWaiters:
    """Claims parked with `Prefer: wait`; each submitted task wakes one of them.

    Waking one claim per task, oldest parked first, instead of every idle worker
    of the job, spares the others a claim that would find nothing. A claim woken
    and then abandoned before it could claim (its client left) hands its wake-up
    on to the next one.
    """

    def __init__(self) -> None:
        self.closed = False
        self._by_job: dict[str, list[ParkedClaim]] = {}
        # The jobs each worker's last claim reported, so its next held claim can
        # park on them before its first claim instead of claiming twice.
        self._jobs_of: dict[uuid.UUID, tuple[str, ...]] = {}

    def known_jobs(self, worker_id: uuid.UUID) -> tuple[str, ...]:
        """The jobs a held claim of this worker last waited on (empty: not known)."""
        return self._jobs_of.get(worker_id, ())

    def remember(self, worker_id: uuid.UUID, jobs: tuple[str, ...]) -> None:
        """Keep the worker's jobs for its next held claim."""
        if len(self._jobs_of) >= _REMEMBERED_WORKERS and worker_id not in self._jobs_of:
            # Workers removed by a socket drop or the sweeper are never released
            # here; forgetting everyone now and then bounds what they leave.
            self._jobs_of.clear()
        self._jobs_of[worker_id] = jobs

    def close(self) -> None:
        """Answer every held claim now, and hold no new one (shutdown)."""
        self.closed = True
        for queue in self._by_job.values():
            for parked in queue:
                parked.woken.set()

    @contextmanager
    def park(self, worker_id: uuid.UUID, jobs: Iterable[str]) -> Iterator[ParkedClaim]:
        """Register a claim for `jobs`; the caller claims, then waits on `woken`."""
        parked = ParkedClaim(worker_id, tuple(jobs))
        if self.closed:
            parked.woken.set()
        for job in parked.jobs:
            self._by_job.setdefault(job, []).append(parked)
        try:
            yield parked
        except BaseException:
            self._forget(parked)
            if parked.woken_for is not None:
                self.wake(parked.woken_for)
            raise
        self._forget(parked)

    def _forget(self, parked: ParkedClaim) -> None:
        for job in parked.jobs:
            queue = self._by_job.get(job)
            if queue is None:
                continue
            if parked in queue:
                queue.remove(parked)
            if not queue:
                del self._by_job[job]

    def wake(self, job: str) -> None:
        """Wake the oldest parked claim for `job` that is not awake yet."""
        for parked in self._by_job.get(job, ()):
            if not parked.woken.is_set():
                parked.woken_for = job
                parked.woken.set()
                return

    def notify(self, emissions: Iterable[Emission]) -> None:
        """Wake one parked claim per task these emissions announce."""
        for emission in emissions:
            if isinstance(emission.event, TaskAvailable):
                self.wake(emission.event.job_name)

    def wake_all(self) -> None:
        """Wake every parked claim once: each claims again, then parks again."""
        for queue in self._by_job.values():
            for parked in queue:
                parked.woken.set()

    def parked_jobs(self) -> set[str]:
        """The jobs some held claim waits for."""
        return set(self._by_job)

    def wake_job(self, job: str) -> None:
        """Wake every parked claim for `job` (a re-check found it has tasks)."""
        for parked in self._by_job.get(job, ()):
            if not parked.woken.is_set():
                parked.woken_for = job
                parked.woken.set()

    def release(self, worker_id: uuid.UUID) -> None:
        """Wake every parked claim of a worker (it is gone; they answer at once)."""
        self._jobs_of.pop(worker_id, None)
        for queue in self._by_job.values():
            for parked in queue:
                if parked.worker_id == worker_id:
                    parked.woken.set()

    def __len__(self) -> int:
        return len({id(p) for queue in self._by_job.values() for p in queue})


@dataclass(frozen=True, slots=True)
class Claim:
    """What one claim found: a task, or none and the jobs the worker serves."""

    task: TaskResponse | None
    jobs: tuple[str, ...] = ()
    """After an empty claim: the full names of the worker's jobs, to park on."""


async def hold_claim(
    claim: Callable[[], Awaitable[Claim]],
    claims: ClaimWaiters,
    worker_id: uuid.UUID,
    *,
    wait: float,
    client_gone: Callable[[], Awaitable[bool]],
) -> Claim | None:
    """Claim, parking between tries until a task comes or `wait` seconds pass.

    Returns the last claim (its task is None when the wait ran out), or None when
    the client left while parked: nobody would receive a task claimed then.
    A parked claim keeps no timer of its own but its deadline: `recheck_claims`
    wakes it when its jobs have tasks a lost wake-up did not announce.
    """
    deadline = anyio.current_time() + wait
    jobs = claims.known_jobs(worker_id)
    woken_for: str | None = None  # the job whose new task woke this claim
    while True:
        # Parked before claiming, so a task submitted in between still wakes us.
        with claims.park(worker_id, jobs) as parked:
            found = await claim()
            if found.task is not None and woken_for not in (None, found.task.job_name):
                # We took an older task of another job: the one that woke us
                # still waits for a claim.
                claims.wake(woken_for)
            remaining = deadline - anyio.current_time()
            if found.task is not None or remaining <= 0 or claims.closed:
                return found
            if set(found.jobs) != set(jobs):
                # Parked on the wrong jobs (or none yet): park on the right ones
                # and claim again, so nothing submitted meanwhile is missed.
                jobs = found.jobs
                claims.remember(worker_id, jobs)
                continue
            # The wake bus brings tasks submitted in other processes;
            # `recheck_claims` is the safety net for a wake-up lost on the way.
            with anyio.move_on_after(remaining):
                await parked.woken.wait()
            if not parked.woken.is_set():
                # The wait ran out unwoken: a claim now would find what the
                # client's next claim, sent at once, finds anyway (a lost wake-up
                # is `recheck_claims`' to catch). No await since the check, so
                # no wake-up can slip in before the claim unparks.
                return found
            woken_for = parked.woken_for
        if claims.closed:
            # The server is stopping: answer now, so the client comes back soon.
            return found
        if await client_gone():
            # Let another claim take the task that woke this one.
            if woken_for is not None:
                claims.wake(woken_for)
            return None


async def recheck_claims(
    claims: ClaimWaiters,
    jobs_with_pending: Callable[[], Awaitable[set[str]]],
    interval: float,
) -> None:
    """Every `interval`, wake the held claims whose jobs have pending tasks.

    The safety net for a wake-up lost between processes, in one statement per
    interval for all held claims: a timer and a claim per held claim cost 1,000
    idle workers a claim statement every 30 ms. Runs until cancelled.
    """
    while True:
        await anyio.sleep(interval)
        if not claims.parked_jobs():
            continue
        try:
            found = await jobs_with_pending()
        except Exception:
            logger.exception("re-checking the held claims failed")
            continue
        # Jobs whose claims left meanwhile are skipped by `wake_job`.
        for job in found & claims.parked_jobs():
            claims.wake_job(job)


async def wait_until_terminal(
    read: Callable[[], Awaitable[TaskResponse]],
    waiters: TaskWaiters,
    task_id: uuid.UUID,
    *,
    wait: float,
    recheck: float,
) -> TaskResponse:
    """Read the task until it is terminal or `wait` seconds pass; return the last."""
    deadline = anyio.current_time() + wait
    while True:
        # Watch before reading, so a change committed in between still wakes us.
        with waiters.watch(task_id) as finished:
            task = await read()
            remaining = deadline - anyio.current_time()
            if is_terminal(task.status) or remaining <= 0 or waiters.closed:
                return task
            # No connection is held while waiting; the wake bus brings changes
            # made by other server processes, the re-check any it lost.
            with anyio.move_on_after(min(remaining, recheck)):
                await finished.wait()
