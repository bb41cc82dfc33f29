"""The worker scenario: give a worker tasks on the fake server, stop it, judge it.

1. wait for the worker to register a job (and, up to `join_within`, to join its
   room);
2. submit the scenario's tasks to that job and wait until they are finished;
3. wait for a heartbeat (at most `heartbeat_within` seconds after registering);
4. stop the worker (the caller's way) and wait until it deleted itself or its
   sockets closed;
5. run the worker checks over what the fake server recorded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from joblib_conformance.fake.checks import WORKER_CHECKS, WorkerSession
from joblib_conformance.fake.server import FakeServer
from joblib_conformance.runner import Report, Result, run_checks
from joblib_protocol import RESERVED_ROOMS, JoinJobRoom, is_terminal

SCRATCH_ROOM = "conformance"
"""Where tasks of `@global` and `@internal` jobs are submitted."""


@dataclass(frozen=True)
class WorkerScenario:
    """How the worker is exercised.

    `tasks` tasks with `payload` go to the first job it registers; it must
    heartbeat within `heartbeat_within` seconds of registering; `startup` bounds
    the wait for its first registration, `join_within` the wait for its
    `join_job_room` before the tasks are submitted anyway, `timeout` every
    other wait.
    """

    tasks: int = 1
    payload: dict[str, Any] = field(default_factory=dict)
    heartbeat_within: float = 30.0
    startup: float = 30.0
    join_within: float = 5.0
    timeout: float = 10.0


def _until(condition: Callable[[], object], timeout: float) -> bool:
    """Poll `condition` until it holds (True) or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def drive_worker(
    fake: FakeServer, scenario: WorkerScenario, stop: Callable[[], None]
) -> WorkerSession:
    """Run the scenario against a worker already started on `fake`; see above.

    Nothing here fails: what did not happen is for the checks to find.
    """
    session = WorkerSession(fake.recording, scenario.heartbeat_within)
    registered = fake.recording.wait_for(
        lambda _: session.registrations(), scenario.startup
    )
    if registered:
        job = registered[0]
        fake.recording.wait_for(
            lambda _: session.events(JoinJobRoom.event_name), scenario.join_within
        )
        room_id = job.full_name.split(":", 1)[0]
        room_id = SCRATCH_ROOM if room_id in RESERVED_ROOMS else room_id
        session.tasks = [
            fake.submit(room_id, job.full_name, scenario.payload)
            for _ in range(scenario.tasks)
        ]
        _until(
            lambda: all(is_terminal(fake.task(t)["status"]) for t in session.tasks),
            scenario.timeout * max(1, scenario.tasks),
        )
        beat_by = job.at + scenario.heartbeat_within
        fake.recording.wait_for(
            lambda _: [
                c
                for c in session.rest()
                if c.method == "PATCH"
                and c.path.startswith("/workers/")
                and c.at > job.at
            ],
            max(0.0, beat_by - time.monotonic()),
        )
    session.stopped_at = time.monotonic()
    stop()

    def gone(_: object) -> bool:
        deleted = {c.path for c in session.rest() if c.method == "DELETE"}
        ids = session.worker_ids()
        sockets = session.sockets()
        opened = {c.sid for c in sockets if c.event == "connect" and c.ack}
        closed = {c.sid for c in sockets if c.event == "disconnect"}
        all_deleted = bool(ids) and all(f"/workers/{w}" in deleted for w in ids)
        return all_deleted or (bool(opened) and opened <= closed)

    fake.recording.wait_for(gone, scenario.timeout)
    return session


def _stderr() -> Any:
    """Where the worker's output goes: our stderr, if it is a real file."""
    try:
        sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return None  # inherited
    return sys.stderr


def check_worker(
    session: WorkerSession,
    *,
    groups: Iterable[str] | None = None,
    only: Iterable[str] | None = None,
    on_result: Callable[[Result], None] | None = None,
) -> Report:
    """Run the worker checks (default: every group) over a session."""
    checks = WORKER_CHECKS.select(groups, only)
    return run_checks(
        checks,
        lambda _check: nullcontext(session),
        target="the worker",
        on_result=on_result,
    )


def check_worker_command(
    command: Sequence[str],
    scenario: WorkerScenario,
    *,
    groups: Iterable[str] | None = None,
    only: Iterable[str] | None = None,
    on_result: Callable[[Result], None] | None = None,
) -> Report:
    """Run `command` as the worker (env JOBLIB_URL, JOBLIB_TOKEN) and judge it.

    The worker is stopped with SIGINT, then SIGTERM, then SIGKILL, each after
    `scenario.timeout` seconds; its output goes to stderr.
    """
    checks = WORKER_CHECKS.select(groups, only)  # a typo fails before the run
    with FakeServer() as fake:
        env = {**os.environ, "JOBLIB_URL": fake.url, "JOBLIB_TOKEN": fake.worker_token}
        process = subprocess.Popen(list(command), env=env, stdout=_stderr())

        def stop() -> None:
            for how in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
                if process.poll() is not None:
                    return
                process.send_signal(how)
                try:
                    process.wait(scenario.timeout)
                except subprocess.TimeoutExpired:
                    continue

        try:
            session = drive_worker(fake, scenario, stop)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
        report = run_checks(
            checks,
            lambda _check: nullcontext(session),
            target=" ".join(command),
            on_result=on_result,
        )
    return report
