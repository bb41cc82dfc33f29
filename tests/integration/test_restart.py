"""The server restarts under a working `JobManager` worker, and nothing is lost.

`joblib-server serve` gets SIGTERM mid-task and starts again on the same database
and port: its own shutdown cleans nobody up, so the worker's row and task survive,
and the worker carries on under the same worker_id. A report the worker could not
deliver while the server was down lands once it is back.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import (
    ScriptProcess,
    ServerProcess,
    manager_worker,
)
from tests.support.rest import rest
from tests.support.tokens import ALICE, BOB
from tests.support.waiting import eventually

# A server process that stops and starts again under a worker process.
pytestmark = pytest.mark.slow

OUTAGE_SECONDS = 5.0


@pytest.fixture
def worker(server: ServerProcess, room: str, tmp_path: Path) -> Iterator[ScriptProcess]:
    with manager_worker(
        server.url, ALICE, room, "Survivor", tmp_path / "worker.log"
    ) as process:
        yield process


def submit(server: ServerProcess, room: str, **payload: Any) -> str:
    with rest(server.api, BOB) as client:
        answer = client.post(
            f"/rooms/{room}/tasks/{room}:modifiers:Survivor", json={"payload": payload}
        )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def task(server: ServerProcess, task_id: str) -> dict[str, Any]:
    with rest(server.api, BOB) as client:
        answer = client.get(f"/tasks/{task_id}")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def stop(server: ServerProcess) -> float:
    """SIGTERM, as systemd or Ctrl-C would; returns how long the shutdown took."""
    started = time.monotonic()
    # uvicorn raises the signal again once it has shut down cleanly.
    assert server.stop() in (0, -signal.SIGTERM), server.log_tail()
    took = time.monotonic() - started
    print(f"\nthe server shut down in {took * 1000:.0f} ms")
    return took


def stays_alive(worker: ScriptProcess, seconds: float) -> None:
    """Fail as soon as the worker process exits within the next `seconds`."""
    deadline = time.monotonic() + seconds

    def outlived() -> bool:
        assert worker.alive, f"the worker exited:\n{worker.log_tail()}"
        return time.monotonic() >= deadline

    eventually(outlived, timeout=seconds + 5, interval=0.05, what="the outage")


def same_worker_throughout(worker: ScriptProcess, worker_id: str) -> None:
    with worker.changed:
        seen = {line.get("worker_id") for line in worker.lines if "worker_id" in line}
    assert seen == {worker_id}, worker.lines


def test_a_restart_mid_task_loses_nothing(
    server: ServerProcess, room: str, worker: ScriptProcess
) -> None:
    worker_id = str(worker.event("registered")["worker_id"])
    task_id = submit(server, room, seconds=3)
    worker.event("claimed", task_id=task_id)

    assert stop(server) < 5  # held claims and long-polls are answered at once
    server.start()

    # The shutdown left the task to its worker.
    assert task(server, task_id)["status"] in ("running", "completed")
    done = worker.event("done", task_id=task_id)
    assert (done["status"], done["worker_id"]) == ("completed", worker_id)
    row = task(server, task_id)
    assert (row["status"], row["worker_id"]) == ("completed", worker_id)
    assert (row["attempt"], row["error_code"]) == (1, None)

    # Back in its job's room under the same id: it takes the next task.
    following = submit(server, room)
    assert worker.event("done", task_id=following)["status"] == "completed"
    assert task(server, following)["worker_id"] == worker_id
    with rest(server.api, ALICE) as client:
        workers = client.get(f"/rooms/{room}/workers").json()["items"]
    assert [w["id"] for w in workers] == [worker_id]
    assert worker.alive
    same_worker_throughout(worker, worker_id)


def test_a_report_made_during_an_outage_lands_after_the_restart(
    server: ServerProcess, room: str, worker: ScriptProcess, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    worker_id = str(worker.event("registered")["worker_id"])
    task_id = submit(server, room, gate=str(gate))
    worker.event("claimed", task_id=task_id)

    stopped = time.monotonic()
    stop(server)
    (gate / str(worker.pid)).touch()
    worker.event("ran", task_id=task_id)  # the job finished while the server was down
    stays_alive(worker, OUTAGE_SECONDS - (time.monotonic() - stopped))
    restarted = datetime.now(UTC)
    server.start()

    done = worker.event("done", task_id=task_id, timeout=30)
    assert (done["status"], done["worker_id"]) == ("completed", worker_id)
    row = task(server, task_id)
    assert (row["status"], row["worker_id"]) == ("completed", worker_id)
    assert datetime.fromisoformat(row["completed_at"]) >= restarted
    following = submit(server, room)
    assert worker.event("done", task_id=following)["status"] == "completed"
    assert worker.alive
    same_worker_throughout(worker, worker_id)
