"""A load harness: ledger workers, a paced submitter, and what they left behind.

With `processes.ServerProcess` (a `joblib-server serve` stopped and started again
on the same port and database):

- `Workers`: `ledger_worker.py` processes (`JobManager` workers), each writing
  every task its code ran to its own ledger file.
- `Submitter`: a thread submitting tasks at a steady rate for a bounded time,
  keeping the id of every acknowledged (202) submit and what the others got.
- `stored_tasks`, `status_counts`, `executions`: what the database and the
  ledgers hold afterwards, to check row by row.
- `terminate_backends`: cut every PostgreSQL connection to a database.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from joblib_server import Database
from joblib_server.tables import TASK_TABLE
from tests.support.tokens import bearer
from tests.support.waiting import eventually

LEDGER_WORKER = Path(__file__).with_name("ledger_worker.py")


def _tail(log: Path, lines: int = 40) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class Worker:
    """One ledger_worker.py process."""

    process: subprocess.Popen[bytes]
    ledger: Path
    log: Path

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, grace: float = 10) -> int:
        """SIGTERM (it leaves cleanly), then kill after `grace` s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@dataclass
class Workers:
    """`count` JobManager workers of `room:modifiers:name`, one ledger each."""

    url: str
    token: str
    room: str
    name: str
    folder: Path
    workers: list[Worker] = field(default_factory=list)

    @property
    def full_name(self) -> str:
        return f"{self.room}:modifiers:{self.name}"

    def start(self, count: int) -> None:
        """Start `count` workers and wait until the job has them all."""
        first = len(self.workers)
        for index in range(first, first + count):
            ledger = self.folder / f"worker-{index}.ledger"
            log = self.folder / f"worker-{index}.log"
            args = [str(LEDGER_WORKER), self.url, self.token, self.room, self.name]
            with log.open("ab") as sink:
                process = subprocess.Popen(
                    [sys.executable, *args, str(ledger)],
                    stdout=subprocess.DEVNULL,
                    stderr=sink,
                    stdin=subprocess.DEVNULL,
                )
            self.workers.append(Worker(process, ledger, log))

        def all_registered() -> bool:
            for worker in self.workers:
                assert worker.alive, f"a worker exited:\n{_tail(worker.log)}"
            return len(self.serving()) == len(self.workers)

        eventually(all_registered, timeout=30, interval=0.1, what="the workers")

    def job(self) -> dict[str, Any] | None:
        """The job as the server shows it; None while nobody serves it."""
        answer = httpx.get(
            f"{self.url}/v1/joblib/rooms/{self.room}/jobs/{self.full_name}",
            headers=bearer(self.token),
            timeout=5,
        )
        if answer.status_code == 404:
            return None
        answer.raise_for_status()
        job: dict[str, Any] = answer.json()
        return job

    def serving(self) -> list[str]:
        """The ids of the workers the server says serve the job."""
        job = self.job()
        return [] if job is None else [str(worker) for worker in job["workers"]]

    @property
    def ledgers(self) -> list[Path]:
        return [worker.ledger for worker in self.workers]

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()

    def logs(self, lines: int = 15) -> str:
        return "\n".join(
            f"--- {worker.log.name} (exit {worker.process.poll()})\n"
            f"{_tail(worker.log, lines)}"
            for worker in self.workers
        )


class Submitter(threading.Thread):
    """Submit `rate` tasks a second for `seconds` seconds, one try each.

    `acknowledged` keeps every id a 202 answered, in order; `refused` counts the
    other outcomes by status code or transport error (a submit the server may
    still have stored: its answer was lost).
    """

    def __init__(
        self,
        api: str,
        token: str,
        room: str,
        job: str,
        *,
        rate: float,
        seconds: float,
        payload: dict[str, Any],
    ) -> None:
        super().__init__(name="submitter", daemon=True)
        self.url = f"{api}/rooms/{room}/tasks/{job}"
        self.headers = bearer(token)
        self.rate = rate
        self.seconds = seconds
        self.payload = payload
        self.acknowledged: list[str] = []
        self.refused: Counter[str] = Counter()
        self.failure: BaseException | None = None
        self._halt = threading.Event()

    @property
    def attempts(self) -> int:
        return len(self.acknowledged) + sum(self.refused.values())

    def run(self) -> None:
        try:
            self._submit_all()
        except BaseException as exc:  # reported by `finish()`
            self.failure = exc

    def _submit_all(self) -> None:
        count = int(self.rate * self.seconds)
        started = time.monotonic()
        with httpx.Client(headers=self.headers, timeout=5, trust_env=False) as http:
            for index in range(count):
                # Paced against the start: a slow answer is caught up, not added.
                delay = started + index / self.rate - time.monotonic()
                if self._halt.wait(max(delay, 0)):
                    return
                self._submit(http, self.payload)

    def _submit(self, http: httpx.Client, payload: dict[str, Any]) -> str | None:
        try:
            answer = http.post(self.url, json={"payload": payload})
        except httpx.TransportError as exc:
            self.refused[type(exc).__name__] += 1
            return None
        if answer.status_code != 202:
            self.refused[str(answer.status_code)] += 1
            return None
        task_id = str(answer.json()["id"])
        self.acknowledged.append(task_id)
        return task_id

    def submit_now(self, count: int, payload: dict[str, Any]) -> list[str]:
        """Submit `count` more tasks at once, from the caller's thread; their ids."""
        assert not self.is_alive(), "the paced submits are still going"
        with httpx.Client(headers=self.headers, timeout=5, trust_env=False) as http:
            ids = [self._submit(http, payload) for _ in range(count)]
        return [task_id for task_id in ids if task_id is not None]

    def halt(self) -> None:
        """End the submits early (a test that failed meanwhile)."""
        self._halt.set()
        if self.is_alive():
            self.join(10)

    def finish(self, timeout: float) -> None:
        """Wait for the last submit; raise what the thread raised, if anything."""
        self.join(timeout)
        assert not self.is_alive(), f"the submitter is still going after {timeout} s"
        if self.failure is not None:
            raise self.failure


@dataclass(frozen=True)
class StoredTask:
    """A task row, as the database holds it."""

    id: str
    status: str
    worker_id: str | None
    attempt: int
    error: str | None
    error_code: str | None
    created_at: datetime


def _run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def _tasks(database_url: str, room: str) -> list[StoredTask]:
    database = Database.from_url(database_url)
    task = TASK_TABLE.c
    try:
        async with database.read() as session:
            rows = await session.execute(
                sa.select(
                    task.id,
                    task.status,
                    task.worker_id,
                    task.attempt,
                    task.error,
                    task.error_code,
                    task.created_at,
                ).where(task.room_id == room)
            )
            return [
                StoredTask(
                    id=str(row.id),
                    status=row.status,
                    worker_id=None if row.worker_id is None else str(row.worker_id),
                    attempt=row.attempt,
                    error=row.error,
                    error_code=row.error_code,
                    created_at=row.created_at,
                )
                for row in rows
            ]
    finally:
        await database.dispose()


def stored_tasks(database_url: str, room: str) -> list[StoredTask]:
    """Every task row of `room`, read through a fresh engine."""
    rows: list[StoredTask] = _run(_tasks(database_url, room))
    return rows


def status_counts(database_url: str, room: str) -> Counter[str]:
    """How many of `room`'s tasks are in each status."""
    return Counter(row.status for row in stored_tasks(database_url, room))


@dataclass(frozen=True)
class Execution:
    """One line of a ledger: a worker's code ran the task to its end."""

    task_id: str
    worker_id: str
    at: float
    ledger: str
    """The ledger's file name: which worker process ran it."""


def executions(ledgers: list[Path]) -> dict[str, list[Execution]]:
    """Every execution in the ledgers, by task id, oldest first."""
    found: dict[str, list[Execution]] = {}
    for ledger in ledgers:
        if not ledger.exists():
            continue
        for line in ledger.read_text().splitlines():
            task_id, worker_id, at = line.split()
            task_id = str(uuid.UUID(task_id))
            found.setdefault(task_id, []).append(
                Execution(task_id, worker_id, float(at), ledger.name)
            )
    for runs in found.values():
        runs.sort(key=lambda run: run.at)
    return found


def terminate_backends(admin_url: str, database: str) -> int:
    """Terminate every PostgreSQL backend connected to `database`; how many."""
    import asyncpg

    async def terminate() -> int:
        dsn = admin_url.replace("postgresql+asyncpg://", "postgresql://")
        connection = await asyncpg.connect(dsn, timeout=5)
        try:
            killed = await connection.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
            return int(killed)
        finally:
            await connection.close()

    count: int = _run(terminate())
    return count
