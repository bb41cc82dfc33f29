"""Reliability: the server killed, stopped and cut off from its database under load.

Each scenario runs a real `joblib-server serve` on a fixed loopback port, three
`JobManager` worker processes (tests/support/ledger_worker.py) and a submitter at
a steady rate. While the tasks flow, the server is disrupted: killed (SIGKILL) and
started again on the same port and database, stopped cleanly (SIGTERM) and started
again, or its PostgreSQL connections terminated. Tasks whose worker is lost go
back to the queue (the server's policy here: requeue, 5 attempts). Once the
submitter is done and the queue has drained, every row is checked:

- every acknowledged (202) submit is stored; a stored task nobody acknowledged
  is a submit whose answer was lost, at most one per refused submit;
- every task is terminal: none pending, claimed or running (none stuck);
- no task was claimed twice: it ran at most as many times as its attempts, so a
  second run needs a requeue in between;
- a completed task ran at least once, and last on the worker the row names;
- a failed task failed for a documented reason: its worker was lost with its
  attempts spent (our job's code never fails);
- completed = acknowledged - failed;
- every worker process is still there, and each runs some of the last rounds
  of tasks, submitted once the queue has drained: all of them carry on.

The load is bounded (a fixed number of submits at a fixed rate) and each phase
waits on a condition; a scenario takes about 20-40 s.
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from joblib_protocol import ErrorCode, TaskStatus
from tests.support.load import (
    Execution,
    StoredTask,
    Submitter,
    Workers,
    executions,
    stored_tasks,
    terminate_backends,
)
from tests.support.processes import ServerProcess, server_env
from tests.support.servers import free_port
from tests.support.services import PG_ADMIN_URL, empty_postgres
from tests.support.tokens import ALICE
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

ROOM = "reliability"
NAME = "Sleep"
WORKERS = 3
RATE = 20  # submits a second
LOAD_SECONDS = 12
TASK_SECONDS = 0.05
MAX_ATTEMPTS = 5
DRAIN_SECONDS = 60
# The last rounds: one task per worker each, until every worker ran one.
LAST_ROUND_SECONDS = 0.3
# A task fails this way only once its worker was lost with its attempts spent.
LOST_WITH_WORKER = {
    ErrorCode.WORKER_DISCONNECTED,
    ErrorCode.WORKER_REMOVED,
    ErrorCode.WORKER_TIMED_OUT,
    ErrorCode.NOT_HELD,
}
UNFINISHED = {TaskStatus.PENDING, TaskStatus.CLAIMED, TaskStatus.RUNNING}


@dataclass
class Run:
    """One scenario's server, workers and submitter."""

    server: ServerProcess
    workers: Workers
    submitter: Submitter
    database_url: str

    def after_submits(self, share: float) -> None:
        """Wait until `share` of the planned submits were sent, and one since the
        last call was acknowledged: the server is under load again."""
        wanted = int(RATE * LOAD_SECONDS * share)
        before = len(self.submitter.acknowledged)

        def loaded_again() -> bool:
            if len(self.submitter.acknowledged) > before:
                return self.submitter.attempts >= wanted
            assert self.submitter.is_alive(), "the submits ended before the server"
            return False

        eventually(
            loaded_again,
            timeout=LOAD_SECONDS * 2,
            interval=0.05,
            what=f"{wanted} submits, one acknowledged ({self.submitter.refused})",
        )


@contextmanager
def loaded(tmp_path: Path, database_url: str) -> Iterator[Run]:
    """A server with workers and a running submitter; afterwards, the checks."""
    # Every job without a policy of its own (ours) requeues a lost task.
    env = server_env(
        database_url, disconnect_action="requeue", disconnect_max_attempts=MAX_ATTEMPTS
    )
    server = ServerProcess(free_port(), env, tmp_path / "server.log")
    server.start()
    workers = Workers(server.url, ALICE, ROOM, NAME, tmp_path)
    submitter = Submitter(
        server.api,
        ALICE,
        ROOM,
        workers.full_name,
        rate=RATE,
        seconds=LOAD_SECONDS,
        payload={"seconds": TASK_SECONDS},
    )
    try:
        workers.start(WORKERS)
        job = workers.job()
        assert job is not None
        policy = job["on_disconnect"]
        assert (policy["action"], policy["max_attempts"]) == ("requeue", MAX_ATTEMPTS)
        submitter.start()
        yield Run(server, workers, submitter, database_url)
        submitter.finish(timeout=LOAD_SECONDS * 3)
        _drain(server, workers, database_url)
        _last_rounds(server, workers, submitter, database_url)
        dead = [w.log.name for w in workers.workers if not w.alive]
        assert not dead, f"workers exited: {dead}\n{workers.logs()}"
        workers.stop()
        _check(
            stored_tasks(database_url, ROOM),
            executions(workers.ledgers),
            submitter,
        )
    finally:
        try:
            workers.stop()
            if server.running:
                server.stop()
        finally:
            submitter.halt()


def _drain(server: ServerProcess, workers: Workers, database_url: str) -> None:
    """Wait until no task of the room is pending, claimed or running."""

    def unfinished() -> list[StoredTask]:
        rows = stored_tasks(database_url, ROOM)
        return [row for row in rows if row.status in UNFINISHED]

    try:
        eventually(
            lambda: not unfinished(),
            timeout=DRAIN_SECONDS,
            interval=0.5,
            what="the queue to drain",
        )
    except AssertionError:
        stuck = "\n".join(map(str, unfinished()[:20]))
        raise AssertionError(
            f"tasks stuck after {DRAIN_SECONDS} s:\n{stuck}\n"
            f"--- server\n{server.log_tail()}\n{workers.logs()}"
        ) from None


def _last_rounds(
    server: ServerProcess, workers: Workers, submitter: Submitter, database_url: str
) -> None:
    """Submit a task per worker and let the queue drain, until each worker ran one.

    A worker still pausing after the outage (its claims failed) misses a round;
    it must take part in a later one.
    """
    last: list[str] = []

    def every_worker_ran_one() -> bool:
        submitted = submitter.submit_now(WORKERS, {"seconds": LAST_ROUND_SECONDS})
        assert len(submitted) == WORKERS, submitter.refused
        last.extend(submitted)
        _drain(server, workers, database_url)
        runs = executions(workers.ledgers)
        ran = {run.ledger for task_id in last for run in runs.get(task_id, [])}
        return len(ran) == len(workers.workers)

    try:
        eventually(every_worker_ran_one, timeout=30, interval=0, what="the rounds")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: a worker ran none\n{workers.logs()}") from None


def _check(
    rows: list[StoredTask],
    runs: dict[str, list[Execution]],
    submitter: Submitter,
) -> None:
    """The invariants, row by row; every violation is listed, not just the first."""
    acknowledged = set(submitter.acknowledged)
    stored = {row.id: row for row in rows}
    refused = sum(submitter.refused.values())
    problems: list[str] = []

    def problem(row: StoredTask, what: str) -> None:
        problems.append(f"{what}: {row} ran {runs.get(row.id, [])}")

    # The submitter counted every refusal; none may be the client's fault.
    client_errors = {k: n for k, n in submitter.refused.items() if k[0] == "4"}
    if client_errors:
        problems.append(f"submits refused as the client's fault: {client_errors}")
    for task_id in sorted(acknowledged - stored.keys()):
        problems.append(f"acknowledged submit missing: {task_id}")
    unacknowledged = stored.keys() - acknowledged
    if len(unacknowledged) > refused:
        problems.append(
            f"{len(unacknowledged)} stored tasks nobody acknowledged, "
            f"but only {refused} submits were refused"
        )
    for task_id in sorted(runs.keys() - stored.keys()):
        problems.append(f"ran a task that is not stored: {task_id}")

    for row in rows:
        ran = runs.get(row.id, [])
        if row.status in UNFINISHED:
            problem(row, "stuck")
        elif row.status == TaskStatus.COMPLETED:
            if not ran:
                problem(row, "completed but never ran")
            elif ran[-1].worker_id != row.worker_id:
                problem(row, "completed by a worker other than the last that ran it")
        elif row.status == TaskStatus.FAILED:
            if row.error_code not in LOST_WITH_WORKER or row.attempt < MAX_ATTEMPTS:
                problem(row, "failed for no documented reason")
        else:
            problem(row, f"ended {row.status}, which nobody asked for")
        if len(ran) > row.attempt:
            problem(
                row, f"claimed twice: ran {len(ran)} times in {row.attempt} attempts"
            )

    statuses = Counter(row.status for row in rows)
    failed_acknowledged = sum(
        1 for row in rows if row.id in acknowledged and row.status == TaskStatus.FAILED
    )
    completed_acknowledged = sum(
        1
        for row in rows
        if row.id in acknowledged and row.status == TaskStatus.COMPLETED
    )
    if completed_acknowledged != len(acknowledged) - failed_acknowledged:
        problems.append(
            f"completed {completed_acknowledged} != acknowledged "
            f"{len(acknowledged)} - failed {failed_acknowledged}"
        )
    summary = (
        f"{len(acknowledged)} acknowledged, refused {dict(submitter.refused)}, "
        f"stored {dict(statuses)}, requeued "
        f"{sum(1 for row in rows if row.attempt > 1)}, ran "
        f"{sum(len(ran) for ran in runs.values())} times"
    )
    print(summary)
    assert not problems, "\n".join([summary, *problems[:50]])


def _disrupt_twice(run: Run, disrupt: Callable[[], None]) -> None:
    for share in (0.25, 0.5):
        run.after_submits(share)
        disrupt()


def test_server_killed_under_load(tmp_path: Path, database_url: str) -> None:
    with loaded(tmp_path, database_url) as run:

        def kill() -> None:
            assert run.server.stop(signal.SIGKILL) == -signal.SIGKILL
            run.server.start()

        _disrupt_twice(run, kill)


def test_server_stopped_under_load(tmp_path: Path, database_url: str) -> None:
    with loaded(tmp_path, database_url) as run:

        def stop() -> None:
            code = run.server.stop(signal.SIGTERM)
            run.server.start()
            # uvicorn shuts down cleanly, then raises the signal again: -SIGTERM.
            # A server still there after the grace is killed: -SIGKILL.
            assert code in (0, -signal.SIGTERM), run.server.log_tail()

        _disrupt_twice(run, stop)


def test_database_connections_terminated_under_load(
    tmp_path: Path, postgres_url: str
) -> None:
    empty_postgres(postgres_url)
    database = postgres_url.rsplit("/", 1)[1]
    terminated = 0
    with loaded(tmp_path, postgres_url) as run:
        for share in (0.2, 0.4, 0.6, 0.8):
            run.after_submits(share)
            terminated += terminate_backends(PG_ADMIN_URL, database)
    assert terminated > 0
