"""The README's "Tasks as calls" job runs as it says: progress, result, a cancel."""

from __future__ import annotations

from typing import Any

from joblib_client import JobManager
from joblib_protocol import TaskStatus
from tests.client.conftest import ManagerFactory
from tests.integration.test_examples import readme_block
from tests.support.tokens import ADMIN, ALICE


def _relax() -> Any:
    namespace: dict[str, Any] = {}
    exec(readme_block("calls-example"), namespace)  # our own README
    return namespace["Relax"]


def test_the_readme_job_reports_progress_and_returns_its_result(
    make_manager: ManagerFactory,
) -> None:
    relax = _relax()
    worker: JobManager = make_manager(ADMIN, heartbeat_interval=None)
    worker.register(relax)
    submitter: JobManager = make_manager(ALICE, heartbeat_interval=None)
    task_id = submitter.submit(relax(steps=4), "room1")
    task = worker.claim()
    assert task is not None
    assert task.id == task_id
    assert worker.run(task) == TaskStatus.COMPLETED
    done = submitter.wait(task_id, timeout=10)
    assert done.result == {"energy": -(1 + 1 / 2 + 1 / 3 + 1 / 4)}
    assert done.progress is not None
    assert (done.progress.current, done.progress.total) == (4, 4)
    assert done.progress.message == "relaxing"
    assert submitter.result(task_id) == done.result


def test_the_readme_job_stops_when_cancelled(make_manager: ManagerFactory) -> None:
    relax = _relax()
    worker: JobManager = make_manager(ADMIN, heartbeat_interval=None)
    worker.register(relax)
    submitter: JobManager = make_manager(ALICE, heartbeat_interval=None)
    task_id = submitter.submit(relax(steps=10**9), "room1")
    task = worker.claim()
    assert task is not None
    # The cancel lands before the job's first step; with no socket and no
    # heartbeat, the refused progress report is what tells the worker.
    submitter.api.http.patch(
        f"/v1/joblib/tasks/{task_id}",
        json={"status": "cancelled"},
        headers=submitter.api.get_headers(),
    )
    assert worker.run(task) == TaskStatus.CANCELLED
    assert submitter.wait(task_id, timeout=10).status == TaskStatus.CANCELLED
