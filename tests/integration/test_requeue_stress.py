"""Sixteen `JobManager` workers on a requeue job, some killed with -9 as they work.

Tasks are submitted while the workers run; each time another share of them is
done, a worker in the middle of a task is killed and a replacement started.
Afterwards, row by row: every acknowledged submit is a task, every task completed
exactly once, none is left pending, claimed or running, each attempt beyond the
first follows a requeue of a killed worker's task, and the job's code ran to its
end more than once only for a task that lost a worker to a kill.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import (
    ScriptProcess,
    ServerProcess,
    restartable_server,
    server_env,
    start_manager_worker,
)
from tests.support.rest import rest
from tests.support.sockets import Peer, connect_peer
from tests.support.tokens import ADMIN, ALICE, BOB
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

WORKERS = 16
TASKS = 300
KILLS = 8
POLICY = {"action": "requeue", "max_attempts": 10}  # more than KILLS: none runs out
NAME = "Stress"


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    # A kill -9 closes the worker's socket at once; the ping only has to catch
    # frozen processes, so a slow one under this load is not taken for dead.
    env = server_env(
        database_url,
        socketio_ping_interval_seconds=5,
        socketio_ping_timeout_seconds=10,
    )
    with restartable_server(env, tmp_path / "server.log") as s:
        yield s


class Crew:
    """The worker processes, those killed, and what each of them printed."""

    def __init__(self, server: ServerProcess, room: str, folder: Path) -> None:
        self.server = server
        self.room = room
        self.folder = folder
        self.ledger = folder / "ledger"
        self.ledger.mkdir()
        self.all: list[ScriptProcess] = []
        self.killed: set[int] = set()

    def start(self) -> ScriptProcess:
        index = len(self.all)
        worker = start_manager_worker(
            self.server.url, ALICE, self.room, NAME,
            self.folder / f"worker-{index}.log", policy=POLICY, ledger=self.ledger,
        )  # fmt: skip
        self.all.append(worker)
        return worker

    def live(self) -> list[ScriptProcess]:
        return [w for w in self.all if w.pid not in self.killed and w.alive]

    def done(self) -> int:
        return sum(len(w.events("done")) for w in self.all)

    def busy(self) -> list[ScriptProcess]:
        """Live workers in the middle of a task (claimed it, not done yet)."""
        return [
            w for w in self.live() if len(w.events("claimed")) > len(w.events("done"))
        ]

    def stop(self) -> None:
        for worker in self.all:
            worker.stop()

    def kill(self, worker: ScriptProcess) -> None:
        self.killed.add(worker.pid)
        worker.kill()

    def owners(self) -> dict[str, int]:
        """Each worker id any process ever printed, with that process's pid."""
        owners: dict[str, int] = {}
        for worker in self.all:
            with worker.changed:
                for line in worker.lines:
                    if line.get("worker_id"):
                        owners[str(line["worker_id"])] = worker.pid
        return owners


def _at_least(count: Callable[[], int], least: int) -> bool:
    return count() >= least


def _submit_all(server: ServerProcess, room: str, acknowledged: list[str]) -> None:
    pace = random.Random(7)
    with rest(server.api, BOB) as client:
        for index in range(TASKS):
            seconds = round(pace.uniform(0.05, 0.25), 3)
            answer = client.post(
                f"/rooms/{room}/tasks/{room}:modifiers:{NAME}",
                json={"payload": {"seconds": seconds, "n": index}},
            )
            if answer.status_code == 202:
                acknowledged.append(str(answer.json()["id"]))


def _counts(server: ServerProcess, room: str) -> dict[str, int]:
    counts = {}
    with rest(server.api, BOB) as client:
        for status in ("pending", "claimed", "running", "completed", "failed"):
            page = client.get(
                f"/rooms/{room}/tasks", params={"status": status, "limit": 0}
            ).json()
            counts[status] = int(page["total"])
    return counts


def _all_tasks(server: ServerProcess, room: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with rest(server.api, BOB) as client:
        while True:
            page = client.get(
                f"/rooms/{room}/tasks", params={"limit": 500, "offset": len(rows)}
            ).json()
            rows.extend(page["items"])
            if len(rows) >= page["total"] or not page["items"]:
                return rows


def _history(observer: Peer) -> dict[str, list[dict[str, Any]]]:
    """Each task's `task_status_event`s, in the order the observer got them."""
    history: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with observer.changed:
        for name, payload in observer.events:
            if name == "task_status_event":
                history[payload["id"]].append(payload)
    return history


def test_killed_workers_lose_no_task(server: ServerProcess, tmp_path: Path) -> None:
    room = f"stress-{uuid.uuid4().hex[:8]}"
    crew = Crew(server, room, tmp_path)
    acknowledged: list[str] = []
    started = time.monotonic()
    with (
        ExitStack() as stack,
        connect_peer(server.url, token=ADMIN, rooms=(room,)) as observer,
    ):
        stack.callback(crew.stop)
        for _ in range(WORKERS):
            crew.start()
        for worker in crew.all:
            worker.event("registered", timeout=60)
        print(f"\n{WORKERS} workers up in {time.monotonic() - started:.1f} s")

        submitter = threading.Thread(
            target=_submit_all, args=(server, room, acknowledged)
        )
        submitter.start()
        stack.callback(submitter.join)
        chooser = random.Random(13)
        for kill in range(1, KILLS + 1):
            share = kill * TASKS // (KILLS + 2)
            eventually(
                partial(_at_least, crew.done, share),
                timeout=60,
                what=f"{share} tasks done",
            )
            victim = chooser.choice(
                eventually(crew.busy, timeout=30, what="a busy worker")
            )
            crew.kill(victim)
            crew.start()  # a replacement; it needs not be up before the next kill
        submitter.join()

        def settled() -> dict[str, int] | None:
            counts = _counts(server, room)
            open_tasks = counts["pending"] + counts["claimed"] + counts["running"]
            return None if open_tasks else counts

        counts = eventually(settled, timeout=60, interval=0.2, what="every task done")
        elapsed = time.monotonic() - started
        rows = _all_tasks(server, room)
        eventually(
            lambda: sum(
                1 for events in _history(observer).values()
                if events[-1]["status"] == "completed"
            ) == len(rows),
            what="the observer to see every completion",
        )  # fmt: skip
        history = _history(observer)
    print(f"{TASKS} tasks, {KILLS} kills, {counts} in {elapsed:.1f} s")

    # Every acknowledged submit is a task, and there is no other.
    assert len(acknowledged) == TASKS
    assert sorted(row["id"] for row in rows) == sorted(acknowledged)
    assert counts == {
        "pending": 0,
        "claimed": 0,
        "running": 0,
        "completed": TASKS,
        "failed": 0,
    }
    owners = crew.owners()
    requeued = 0
    for row in rows:
        task_id = row["id"]
        assert (row["status"], row["error"], row["error_code"]) == (
            "completed",
            None,
            None,
        ), row
        events = history[task_id]
        statuses = [event["status"] for event in events]
        assert statuses.count("completed") == 1, events
        assert statuses[-1] == "completed", events
        # Each attempt after the first follows a requeue of a killed worker's task.
        requeues = [e for e in events if e["status"] == "pending" and e["attempt"] > 1]
        assert [e["attempt"] for e in requeues] == list(range(2, row["attempt"] + 1))
        lost_by = [
            owners[e["worker_id"]]
            for e in events
            if e["status"] == "running" and e["attempt"] < row["attempt"]
        ]
        assert len(lost_by) == row["attempt"] - 1, events
        assert set(lost_by) <= crew.killed, events
        requeued += row["attempt"] > 1
        # The job's code ran to its end in the process that completed the task,
        # and otherwise only in killed ones, never more often than it was tried.
        ran = Counter(int(pid) for pid in (crew.ledger / task_id).read_text().split())
        # (The finisher may have been killed since: after its report.)
        finisher = owners[row["worker_id"]]
        assert ran[finisher] == 1, (row, ran)
        assert set(ran) - {finisher} <= crew.killed, (row, ran)
        assert sum(ran.values()) <= row["attempt"], (row, ran)
    assert requeued >= 1, "no kill hit a task in flight"
    print(f"{requeued} tasks requeued after a kill")
