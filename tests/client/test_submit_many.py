"""`JobManager.submit_many`: one batch submit, against a live server."""

from __future__ import annotations

import httpx
import pytest

from joblib_client import InvalidPayloadError, JobManager
from tests.client.conftest import ManagerFactory
from tests.client.extensions import Rotate, Select
from tests.support.servers import LiveServer
from tests.support.tokens import ADMIN, ALICE, bearer


@pytest.fixture
def worker(make_live_manager: ManagerFactory) -> JobManager:
    manager = make_live_manager(ADMIN, socket=False, heartbeat_interval=None)
    manager.register(Rotate)
    return manager


@pytest.fixture
def submitter(make_live_manager: ManagerFactory) -> JobManager:
    return make_live_manager(ALICE, socket=False, heartbeat_interval=None)


def test_the_tasks_are_made_and_claimed_in_order(
    worker: JobManager, submitter: JobManager
) -> None:
    ids = submitter.submit_many(
        Rotate, [Rotate(angle=1), {"angle": 2}, Rotate(angle=3)], room="room1"
    )
    assert len(set(ids)) == 3
    claimed = [worker.claim() for _ in ids]
    assert [task.id for task in claimed if task] == ids
    angles = [task.extension.angle for task in claimed if task]
    assert angles == [1, 2, 3]
    assert {task.room_id for task in claimed if task} == {"room1"}


def test_a_bad_payload_makes_none(worker: JobManager, submitter: JobManager) -> None:
    with pytest.raises(InvalidPayloadError) as caught:
        submitter.submit_many(Rotate, [{"angle": 1}, {"angle": "left"}], room="room1")
    assert caught.value.errors[0]["loc"] == ["body", "payloads", 1, "angle"]
    assert worker.claim() is None


def test_time_limits_reach_every_task(
    worker: JobManager, submitter: JobManager, live_server: LiveServer
) -> None:
    ids = submitter.submit_many(
        Rotate, [{}, {}], room="room1", timeout_seconds=30, pending_timeout_seconds=60
    )
    with httpx.Client(base_url=live_server.api, headers=bearer(ALICE)) as http:
        tasks = [http.get(f"/tasks/{task_id}").json() for task_id in ids]
    assert [task["timeout_seconds"] for task in tasks] == [30, 30]
    assert all(task["expires_at"] for task in tasks)


def test_a_payload_of_another_job_is_refused_before_sending(
    submitter: JobManager,
) -> None:
    with pytest.raises(TypeError, match="Rotate"):
        submitter.submit_many(Rotate, [Select()], room="room1")
