"""The `joblib` command against a live server: both output forms, the exit codes.

Most tests run `main([...])` in-process and read what it printed; two run the
installed `joblib` as a process (its entry point, Ctrl-C ending `watch`).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar, Protocol

import pytest

from joblib_client import Category, Extension, JobManager
from joblib_client.cli import main
from tests.client.conftest import Listener, in_thread
from tests.client.extensions import Explode, Rotate
from tests.support.proxy import tcp_proxy
from tests.support.servers import LiveServer, free_port
from tests.support.tokens import ADMIN, ALICE
from tests.support.waiting import eventually

ROTATE = "@global:modifiers:Rotate"
DOUBLE = "@global:analysis:Double"
EXPLODE = "@global:analysis:Explode"
JOBLIB = Path(sys.executable).parent / "joblib"


class Double(Extension):
    category: ClassVar[Category] = Category.ANALYSIS

    x: float = 0.0

    def run(self, **kwargs: Any) -> dict[str, float]:
        return {"twice": 2 * self.x}


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Joblib(Protocol):
    def __call__(self, *argv: str, token: str | None = ADMIN) -> Ran: ...


@pytest.fixture
def joblib(live_server: LiveServer, capsys: pytest.CaptureFixture[str]) -> Joblib:
    """Run the command in-process against the live server, as the admin."""

    def run(*argv: str, token: str | None = ADMIN) -> Ran:
        capsys.readouterr()
        options = ["--url", live_server.url]
        if token is not None:
            options += ["--token", token]
        code = main([*options, *argv])
        captured = capsys.readouterr()
        return Ran(code, captured.out, captured.err)

    return run


@pytest.fixture
def worker(live_server: LiveServer) -> Iterator[JobManager]:
    """A registered worker serving Rotate, Double and Explode, not yet running."""
    with JobManager.connect(live_server.url, token=ADMIN) as manager:
        for job in (Rotate, Double, Explode):
            manager.register(job)
        yield manager


def submitted(joblib: Joblib, job: str, payload: str = "{}") -> str:
    ran = joblib("--json", "submit", job, "--room", "room1", "--payload", payload)
    assert ran.code == 0, ran.err
    task_id: str = ran.json()["id"]
    return task_id


# looking


def test_workers_as_a_table_and_as_json(joblib: Joblib, worker: JobManager) -> None:
    table = joblib("workers")
    as_json = joblib("workers", "--json")

    assert table.code == as_json.code == 0
    header, row, footer = table.out.splitlines()
    assert header.split() == ["WORKER", "JOBS", "LAST", "HEARTBEAT"]
    assert row.split()[:2] == [str(worker.worker_id), "3"]
    assert row.endswith(("just now", "s ago"))
    assert footer == "1 worker"
    assert [w["id"] for w in as_json.json()["items"]] == [str(worker.worker_id)]


def test_jobs_of_a_room(joblib: Joblib, worker: JobManager) -> None:
    table = joblib("jobs", "--room", "room1")
    as_json = joblib("--json", "jobs", "--room", "room1")

    assert table.code == 0
    lines = table.out.splitlines()
    assert lines[0].split() == ["JOB", "CATEGORY", "WORKERS"]
    assert sorted(line.split() for line in lines[1:4]) == [
        [DOUBLE, "analysis", "1"],
        [EXPLODE, "analysis", "1"],
        [ROTATE, "modifiers", "1"],
    ]
    assert lines[-1] == "3 jobs"
    assert {job["full_name"] for job in as_json.json()["items"]} == {
        ROTATE,
        DOUBLE,
        EXPLODE,
    }


def test_submit_then_list_and_filter_tasks(joblib: Joblib, worker: JobManager) -> None:
    shown = joblib("submit", ROTATE, "--room", "room1", "--payload", '{"angle": 9}')
    second = submitted(joblib, DOUBLE, '{"x": 1}')

    assert shown.code == 0
    fields = dict(line.split(None, 1) for line in shown.out.splitlines())
    assert fields["job"] == ROTATE
    assert fields["status"] == "pending #1"
    assert fields["payload"] == '{"angle": 9}'
    first = fields["task"]

    table = joblib("tasks", "--room", "room1")
    assert table.code == 0
    lines = table.out.splitlines()
    assert lines[0].split()[:3] == ["TASK", "JOB", "STATUS"]
    assert [line.split()[0] for line in lines[1:3]] == [second, first]  # newest first
    assert lines[-1] == "2 tasks"

    only_double = joblib("tasks", "--room", "room1", "--job", DOUBLE, "--json")
    assert [t["id"] for t in only_double.json()["items"]] == [second]
    none_done = joblib("tasks", "--room", "room1", "--status", "completed")
    assert none_done.out == "no tasks\n"
    paged = joblib("tasks", "--room", "room1", "--limit", "1")
    assert paged.out.splitlines()[-1].startswith("tasks 1-1 of 2")


def test_global_options_may_follow_the_command(
    joblib: Joblib, worker: JobManager
) -> None:
    ran = joblib("jobs", "--room", "room1", "--json")

    assert ran.code == 0
    assert ran.json()["total"] == 3


# waiting for a task


def test_submit_wait_shows_the_result(joblib: Joblib, worker: JobManager) -> None:
    with Listener(worker, polling_interval=0.05):
        table = joblib(
            "submit", DOUBLE, "--room", "room1", "--payload", '{"x": 21}', "--wait"
        )
        as_json = joblib(
            "--json", "submit", DOUBLE, "--room", "room1", "--payload", '{"x": 2}',
            "--wait", "10",
        )  # fmt: skip

    assert table.code == 0, table.err
    fields = dict(line.split(None, 1) for line in table.out.splitlines())
    assert fields["status"] == "completed"
    assert fields["result"] == '{"twice": 42.0}'
    assert table.err.startswith("submitted task ")
    assert as_json.code == 0
    assert as_json.json()["status"] == "completed"
    assert as_json.json()["result"] == {"twice": 4.0}


def test_a_failed_task_waited_for_exits_4(joblib: Joblib, worker: JobManager) -> None:
    task_id = submitted(joblib, EXPLODE)

    with Listener(worker, polling_interval=0.05):
        ran = joblib("task", task_id, "--wait", "10")

    assert ran.code == 4
    fields = dict(line.split(None, 1) for line in ran.out.splitlines())
    assert fields["status"] == "failed"
    assert "boom" in fields["error"]
    assert ran.err.startswith(f"error: task {task_id} failed")
    assert "boom" in ran.err


def test_a_cancelled_task_waited_for_exits_4(
    joblib: Joblib, worker: JobManager
) -> None:
    task_id = submitted(joblib, ROTATE)
    assert joblib("cancel", task_id).code == 0

    ran = joblib("--json", "task", task_id, "--wait")

    assert ran.code == 4
    assert ran.json()["status"] == "cancelled"
    assert ran.err == f"error: task {task_id} was cancelled\n"


def test_a_wait_that_times_out_exits_5(joblib: Joblib, worker: JobManager) -> None:
    ran = joblib(
        "--json", "submit", ROTATE, "--room", "room1", "--wait", "0.3"
    )  # no worker runs it

    assert ran.code == 5
    task_id = ran.json()["id"]
    assert ran.json()["status"] == "pending"
    assert ran.err.endswith(f"error: task {task_id} is still pending after 0.3 s\n")


def test_a_task_without_wait_is_shown_as_it_is(
    joblib: Joblib, worker: JobManager
) -> None:
    task_id = submitted(joblib, ROTATE, '{"angle": 1}')

    table = joblib("task", task_id)
    as_json = joblib("--json", "task", task_id)

    assert table.code == as_json.code == 0
    assert f"task       {task_id}" in table.out.splitlines()
    assert as_json.json()["payload"] == {"angle": 1}


# cancelling


def test_cancel_then_cancel_again_is_refused(
    joblib: Joblib, worker: JobManager, live_server: LiveServer
) -> None:
    task_id = submitted(joblib, ROTATE)

    first = joblib("cancel", task_id)
    again = joblib("cancel", task_id)

    assert first.code == 0
    assert "status     cancelled" in first.out.splitlines()
    assert again.code == 1
    assert again.out == ""
    assert again.err.startswith("error: 409 invalid-task-transition: ")
    assert again.err.endswith(f"(PATCH {live_server.api}/tasks/{task_id})\n")


# errors and their exit codes


def test_an_unknown_task_exits_1_with_the_problem(
    joblib: Joblib, live_server: LiveServer
) -> None:
    task_id = uuid.uuid4()

    ran = joblib("task", str(task_id))

    assert ran.code == 1
    assert ran.out == ""
    assert ran.err == (
        f"error: 404 task-not-found: no task {task_id} "
        f"(GET {live_server.api}/tasks/{task_id})\n"
    )


def test_no_token_says_how_to_give_one(joblib: Joblib) -> None:
    ran = joblib("workers", token=None)

    assert ran.code == 1
    assert ran.err.startswith("error: 401 unauthorized: ")
    assert "no token given: pass --token or set JOBLIB_TOKEN" in ran.err


def test_an_unreachable_server_exits_3_with_the_url(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"http://127.0.0.1:{free_port()}"

    code = main(["--url", url, "--token", ADMIN, "workers"])

    err = capsys.readouterr().err
    assert code == 3
    assert err.startswith(
        f"error: cannot reach {url}: connection refused: nothing listens at "
    )
    assert err.endswith(f"(GET {url}/v1/joblib/workers)\n")


def test_an_unresolvable_host_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--url", "http://nonexistent.invalid", "jobs", "--room", "r"])

    assert code == 3
    assert "cannot resolve host 'nonexistent.invalid'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["tasks"],  # --room is required
        ["submit", ROTATE, "--room", "r", "--payload", "{not json"],
        ["submit", ROTATE, "--room", "r", "--payload", "[1, 2]"],
        ["task", "x", "--wait", "-1"],
        ["--url", "127.0.0.1:8000", "workers"],
        ["tasks", "--room", "r", "--status", "done"],
        ["launch"],
        [],
    ],
    ids=lambda argv: " ".join(argv) or "nothing",
)
def test_usage_errors_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(argv)

    assert code == 2
    assert "usage: joblib" in capsys.readouterr().err


def test_help_lists_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--help"])

    out = capsys.readouterr().out
    assert code == 0
    assert "exit codes:" in out
    for line in ("  3    the server cannot be reached", "  5    the wait timed out"):
        assert line in out


# watching a room


def test_watch_prints_the_events_of_a_task_submitted_meanwhile(
    live_server: LiveServer, worker: JobManager, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--url", live_server.url, "--token", ADMIN, "--json"]
    thread, outcome = in_thread(
        lambda: main([*argv, "watch", "--room", "room1", "--count", "4"])
    )
    printed = Printed(capsys)
    eventually(lambda: "watching room room1" in printed.err, what="the join")

    with Listener(worker, polling_interval=0.05):
        task_id = worker.submit(Double(x=1), "room1")
        thread.join(timeout=10)

    assert outcome == [0], printed.err
    events = [json.loads(line) for line in printed.out.splitlines()]
    assert [e["event"] for e in events] == ["task_status_event"] * 4
    assert {e["data"]["id"] for e in events} == {str(task_id)}
    statuses = [e["data"]["status"] for e in events]
    assert statuses == ["pending", "claimed", "running", "completed"]


def test_watch_as_lines_for_people(
    live_server: LiveServer, worker: JobManager, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--url", live_server.url, "--token", ADMIN]
    thread, outcome = in_thread(
        lambda: main([*argv, "watch", "--room", "room1", "--count", "1"])
    )
    printed = Printed(capsys)
    eventually(lambda: "watching room room1" in printed.err, what="the join")

    task_id = worker.submit(Rotate(angle=1), "room1")
    thread.join(timeout=10)

    assert outcome == [0]
    (line,) = printed.out.splitlines()
    assert line.split()[1:] == ["status", str(task_id), ROTATE, "pending", "#1"]


def test_watch_prints_a_change_of_the_rooms_jobs(
    live_server: LiveServer, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--url", live_server.url, "--token", ALICE]
    thread, outcome = in_thread(
        lambda: main([*argv, "watch", "--room", "room1", "--count", "1"])
    )
    printed = Printed(capsys)
    eventually(lambda: "watching room room1" in printed.err, what="the join")

    with JobManager.connect(live_server.url, token=ALICE) as manager:
        manager.register(Rotate, room="room1")
        thread.join(timeout=10)

    assert outcome == [0]
    (line,) = printed.out.splitlines()
    assert line.split(None, 1)[1] == "jobs      the job list changed"


def test_watch_joins_again_after_a_dropped_connection(
    live_server: LiveServer, worker: JobManager, capsys: pytest.CaptureFixture[str]
) -> None:
    port = int(live_server.url.rsplit(":", 1)[1])
    with tcp_proxy(port) as proxy:
        argv = ["--url", proxy.url, "--token", ADMIN]
        thread, outcome = in_thread(
            lambda: main([*argv, "watch", "--room", "room1", "--count", "1"])
        )
        printed = Printed(capsys)
        eventually(lambda: "watching room room1" in printed.err, what="the join")

        proxy.cut()
        eventually(lambda: "room1 again" in printed.err, what="the join again")
        task_id = worker.submit(Rotate(angle=3), "room1")
        thread.join(timeout=10)

    assert outcome == [0]
    assert "lost the connection" in printed.err
    assert "reconnected" in printed.err
    assert str(task_id) in printed.out


def test_watch_with_a_wrong_token_exits_1(
    live_server: LiveServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--url", live_server.url, "--token", "wrong", "watch", "--room", "r"])

    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(f"error: socket connection to {live_server.url} refused: ")
    assert "unauthorized" in err


def test_watch_an_unreachable_server_exits_3(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"http://127.0.0.1:{free_port()}"

    code = main(["--url", url, "--token", ALICE, "watch", "--room", "r"])

    assert code == 3
    assert capsys.readouterr().err.startswith(
        f"error: cannot reach {url}: connection refused"
    )


class Printed:
    """What the command printed so far, read from `capsys` as it comes."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        self._out: list[str] = []
        self._err: list[str] = []

    def _read(self) -> None:
        captured = self.capsys.readouterr()
        self._out.append(captured.out)
        self._err.append(captured.err)

    @property
    def out(self) -> str:
        self._read()
        return "".join(self._out)

    @property
    def err(self) -> str:
        self._read()
        return "".join(self._err)


# the installed command


def test_the_installed_command_reads_its_environment(
    live_server: LiveServer, worker: JobManager
) -> None:
    env = {**os.environ, "JOBLIB_URL": live_server.url, "JOBLIB_TOKEN": ADMIN}

    done = subprocess.run(
        [str(JOBLIB), "--json", "jobs", "--room", "room1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["total"] == 3


class Lines:
    """The lines a process writes to `stream`, as they come, read by a thread."""

    def __init__(self, stream: IO[str]) -> None:
        self.queue: queue.Queue[str] = queue.Queue()
        self.thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self.thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.queue.put(line)

    def next(self, timeout: float) -> str:
        return self.queue.get(timeout=timeout)


def test_watch_runs_until_ctrl_c_and_exits_0(
    live_server: LiveServer, worker: JobManager
) -> None:
    command = [str(JOBLIB), "--url", live_server.url, "--token", ADMIN]
    with subprocess.Popen(
        [*command, "watch", "--room", "room1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        out, err = Lines(process.stdout), Lines(process.stderr)
        try:
            assert "watching room room1" in err.next(timeout=30)

            task_id = worker.submit(Rotate(angle=2), "room1")
            line = out.next(timeout=10)
            assert str(task_id) in line
            assert "pending" in line

            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
            out.thread.join(timeout=10)  # both pipes end with the process
            err.thread.join(timeout=10)
