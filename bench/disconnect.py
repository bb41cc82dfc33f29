"""Section 4, disconnect: how fast the server notices a worker is gone.

kill -9: a worker process (`bench.killable_worker`, stock python-socketio client)
holds a running task; it is killed with SIGKILL, and an observer socket in the room
(`join_room`) times the `task_status_event` that reports the task failed (the
default policy: fail, no grace). Requeue: the same, on a job registered with
`on_disconnect: {action: requeue}`, while a second worker holds a claim
(`Prefer: wait`, as JobManager does); timed until the observer sees the task
pending again (attempt 2) and until the held claim answers with it.
Graceful: a socket-connected worker with a running task sends `leave_job_room`,
then `DELETE /workers/{id}`; timed until the DELETE answers 204 (the worker is gone;
a heartbeat then answers 404), and until the observer sees its task failed. For
kill -9 the task's `completed_at` also tells when the server began the cleanup.
Restart (`bench.restart`): JobManager workers through a server restart.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from typing import Any

from bench.api import ROOM, JoblibApi, server_time
from bench.client import BenchClient, summarize_ms
from bench.config import Config
from bench.restart import measure_restart
from bench.server import REPO_ROOT, TOKEN, ServerProcess, WorkerProcess, joblib_on
from bench.sio import AsyncSocket
from bench.workers import Handoffs, SocketWorker

SPAWN_TIMEOUT = 60.0
EVENT_TIMEOUT = 10.0
PARALLEL_SPAWNS = 4
WORKER_DISCONNECTED = "Worker disconnected"
REQUEUE = {"action": "requeue", "max_attempts": 2}
HELD_CLAIM_SECONDS = 30.0


class Observer:
    """A socket in `room:{ROOM}` that hands over each task's failure and requeue."""

    def __init__(self, server: ServerProcess) -> None:
        self.socket = AsyncSocket(server.url, TOKEN)
        self.failures = Handoffs()
        self.requeues = Handoffs()
        self.socket.on("task_status_event", self._on_status)

    def _on_status(self, event: dict[str, Any], arrival: float) -> None:
        if event.get("status") == "failed":
            self.failures.resolve(event["id"], (event, arrival))
        elif event.get("status") == "pending" and event.get("attempt", 1) > 1:
            self.requeues.resolve(event["id"], (event, arrival))

    async def open(self) -> None:
        """Connect and join the room."""
        await self.socket.connect()
        answer = await self.socket.call("join_room", {"room_id": ROOM})
        if answer != {"ok": True}:
            raise RuntimeError(f"join_room refused: {answer!r}")

    async def failed(
        self, task_id: str, client: BenchClient
    ) -> tuple[dict[str, Any], float] | None:
        """The task's failure event and its arrival (perf_counter), or None."""
        try:
            event, arrival = await asyncio.wait_for(
                self.failures.future(task_id), EVENT_TIMEOUT
            )
        except TimeoutError:
            client.stats.error(f"no failure event for task {task_id}")
            return None
        if event.get("error") != WORKER_DISCONNECTED:
            client.stats.error(f"task {task_id} failed with {event.get('error')!r}")
        return event, arrival


@dataclass
class KillableWorker(WorkerProcess):
    """A `bench.killable_worker` process holding one running task."""

    name: str = ""
    task_id: str = ""


async def _spawn(
    server: ServerProcess,
    api: JoblibApi,
    name: str,
    gate: asyncio.Semaphore,
    policy: dict[str, Any] | None = None,
) -> KillableWorker:
    async with gate:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.killable_worker",
            server.url,
            TOKEN,
            ROOM,
            name,
            cwd=REPO_ROOT,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
        )
        worker = KillableWorker(process, name)
        try:
            registered = await worker.line(SPAWN_TIMEOUT)
            job = registered["job"]
            if policy is not None:
                # The same registration again, now with the job's policy.
                await api.register(name, registered["worker_id"], policy)
            await api.submit(job, {"kill": name})
            worker.task_id = (await worker.line(SPAWN_TIMEOUT))["task_id"]
        except BaseException:
            await worker.reap()
            raise
        return worker


async def _spawn_all(
    server: ServerProcess,
    client: BenchClient,
    names: list[str],
    policy: dict[str, Any] | None = None,
) -> list[KillableWorker]:
    """Killable workers, each holding a running task of its own job `names[i]`."""
    api = JoblibApi(client.session())
    gate = asyncio.Semaphore(PARALLEL_SPAWNS)
    spawned = await asyncio.gather(
        *(_spawn(server, api, name, gate, policy) for name in names),
        return_exceptions=True,
    )
    for outcome in spawned:
        if not isinstance(outcome, KillableWorker):
            client.stats.error(f"killable worker: {outcome!r}")
    return [w for w in spawned if isinstance(w, KillableWorker)]


async def measure_kill(
    server: ServerProcess, client: BenchClient, observer: Observer, repeats: int
) -> tuple[list[float], list[float]]:
    """Start `repeats` killable workers with a running task; kill -9 them one by one.

    Returns the seconds from each kill to the failure event, and from each kill to
    the task's `completed_at` (server clock: when the cleanup began).
    """
    names = [f"kill-{index}" for index in range(repeats)]
    workers = await _spawn_all(server, client, names)
    to_event: list[float] = []
    to_cleanup: list[float] = []
    try:
        for worker in workers:
            killed, killed_wall = time.perf_counter(), time.time()
            worker.process.kill()
            seen = await observer.failed(worker.task_id, client)
            if seen is not None:
                event, arrival = seen
                to_event.append(arrival - killed)
                to_cleanup.append(server_time(event["completed_at"]) - killed_wall)
            await worker.process.wait()
    finally:
        for worker in workers:
            await worker.reap()
    return to_event, to_cleanup


async def measure_requeue(
    server: ServerProcess,
    client: BenchClient,
    observer: Observer,
    repeats: int,
    park_seconds: float,
) -> tuple[list[float], list[float]]:
    """kill -9 of a worker holding a task of a requeue job, another worker waiting.

    The waiting worker holds a claim (`Prefer: wait`) on the same job. Returns the
    seconds from each kill to the observer's `pending` event of attempt 2, and
    from each kill to the held claim's answer with the task.
    """
    names = [f"requeue-{index}" for index in range(repeats)]
    workers = await _spawn_all(server, client, names, REQUEUE)
    to_requeued: list[float] = []
    to_claimed: list[float] = []
    try:
        for worker in workers:
            successor = await SocketWorker.connect(client, worker.name, server.url)
            try:
                claim = asyncio.ensure_future(
                    successor.api.claim(successor.id, HELD_CLAIM_SECONDS)
                )
                await asyncio.sleep(park_seconds)  # let the claim park first
                killed = time.perf_counter()
                worker.process.kill()
                task = await claim
                claimed = time.perf_counter()
                if task is None or task["id"] != worker.task_id:
                    client.stats.error(f"requeue: the held claim got {task!r}")
                    continue
                if task.get("attempt") != 2:
                    client.stats.error(f"requeue: attempt {task.get('attempt')}")
                to_claimed.append(claimed - killed)
                seen = await _requeued(observer, worker.task_id, client)
                if seen is not None:
                    to_requeued.append(seen - killed)
                await successor.api.complete(task["id"])
            finally:
                await successor.close()
                await worker.process.wait()
    finally:
        for worker in workers:
            await worker.reap()
    return to_requeued, to_claimed


async def _requeued(
    observer: Observer, task_id: str, client: BenchClient
) -> float | None:
    """When the observer saw the task pending again (perf_counter), or None."""
    try:
        _event, arrival = await asyncio.wait_for(
            observer.requeues.future(task_id), EVENT_TIMEOUT
        )
    except TimeoutError:
        client.stats.error(f"no requeue event for task {task_id}")
        return None
    return float(arrival)


async def measure_leave(
    server: ServerProcess, client: BenchClient, observer: Observer, repeats: int
) -> tuple[list[float], list[float]]:
    """Graceful leave: `leave_job_room` + `DELETE /workers/{id}` with a running task."""
    submitter = JoblibApi(client.session())
    gone: list[float] = []
    failed: list[float] = []
    for index in range(repeats):
        worker = await SocketWorker.connect(client, f"leave-{index}", server.url)
        try:
            task = await submitter.submit(worker.full_name, {"leave": index})
            running = await worker.api.claim(worker.id)
            if task is None or running is None:
                continue
            started = time.perf_counter()
            answer = await worker.socket.call(
                "leave_job_room",
                {"job_name": worker.full_name, "worker_id": worker.id},
            )
            deleted = await worker.api.delete_worker(worker.id)
            gone.append(time.perf_counter() - started)
            seen = await observer.failed(running["id"], client)
            if seen is not None:
                failed.append(seen[1] - started)
            if answer != {"ok": True} or not deleted:
                client.stats.error(f"leave: {answer!r}, deleted={deleted}")
            if await worker.api.worker_exists(worker.id):
                client.stats.error(f"worker {worker.id} still there after DELETE")
        finally:
            await worker.close()
    return gone, failed


async def run(database: str, config: Config) -> dict[str, Any]:
    """kill -9 (fail, requeue) and graceful leave on a fresh server; then restarts."""
    async with (
        joblib_on(database) as (server, _url),
        BenchClient(server.url, TOKEN) as client,
    ):
        observer = Observer(server)
        await observer.open()
        try:
            killed, cleanup = await measure_kill(
                server, client, observer, config.kill_repeats
            )
            requeued, reclaimed = await measure_requeue(
                server,
                client,
                observer,
                config.requeue_repeats,
                config.long_poll_park_seconds,
            )
            gone, failed = await measure_leave(
                server, client, observer, config.leave_repeats
            )
        finally:
            await observer.socket.close()
        results: dict[str, Any] = {
            "kill_to_failed_ms": summarize_ms(killed),
            "kill_to_cleanup_start_ms": summarize_ms(cleanup),
            "kill_to_requeued_ms": summarize_ms(requeued),
            "kill_to_reclaimed_ms": summarize_ms(reclaimed),
            "leave_to_gone_ms": summarize_ms(gone),
            "leave_to_failed_event_ms": summarize_ms(failed),
        }
        stats = client.stats
    # A server of its own: it is stopped and started again under the workers.
    restart = await measure_restart(database, config)
    results.update(restart.pop("results"))
    return {
        **results,
        "routes": stats.summary(),
        "errors": stats.errors + restart["errors"],
        "error_samples": stats.error_samples + restart["error_samples"],
    }
