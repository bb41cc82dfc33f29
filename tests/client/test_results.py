"""What a job returns is its task's result: sent, read back, waited for; limits."""

from __future__ import annotations

import dataclasses
import enum
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ValidationError
from starlette.testclient import TestClient

from joblib_client import (
    Category,
    ClaimedTask,
    Extension,
    JobManager,
    TaskCancelledError,
    TaskFailedError,
)
from joblib_protocol import ErrorCode, TaskStatus
from joblib_server import Settings
from tests.client.conftest import ManagerFactory, auth
from tests.client.extensions import Explode
from tests.support.servers import make_settings
from tests.support.tokens import ADMIN, ALICE

MAX_RESULT_BYTES = 10_000


@pytest.fixture
def settings() -> Settings:
    return make_settings(max_result_bytes=MAX_RESULT_BYTES)


class Colour(enum.StrEnum):
    RED = "red"


class Point(BaseModel):
    x: float
    y: float


class Shape(BaseModel):
    name: str
    corners: list[Point]
    colour: Colour
    made: datetime


@dataclasses.dataclass
class Summary:
    count: int
    ids: tuple[uuid.UUID, ...]
    point: Point


ANY_ID = uuid.UUID("8a4d0b5e-3f4c-4e7a-9a53-7d1c2f0c9b11")
MADE = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


class Compute(Extension):
    """Returns what `kind` names."""

    category: ClassVar[Category] = Category.ANALYSIS

    kind: str = "dict"
    size: int = 0

    def run(self, **kwargs: Any) -> Any:
        if self.kind == "dict":
            return {"sum": 3, "items": [1, 2], "nested": {"ok": True}}
        if self.kind == "none":
            return None
        if self.kind == "model":
            corners = [Point(x=0, y=0), Point(x=1, y=0.5)]
            return Shape(name="tri", corners=corners, colour=Colour.RED, made=MADE)
        if self.kind == "dataclass":
            return Summary(count=2, ids=(ANY_ID,), point=Point(x=1, y=2))
        if self.kind == "object":
            return {"handle": object()}
        if self.kind == "nan":
            return [float("nan")]
        if self.kind == "big":
            return "x" * self.size
        raise AssertionError(self.kind)


@pytest.fixture
def worker(make_manager: ManagerFactory) -> JobManager:
    manager = make_manager(ADMIN, heartbeat_interval=None)
    manager.register(Compute)
    manager.register(Explode)
    return manager


@pytest.fixture
def submitter(make_manager: ManagerFactory) -> JobManager:
    return make_manager(ALICE, heartbeat_interval=None)


def claim(worker: JobManager) -> ClaimedTask:
    task = worker.claim()
    assert task is not None
    return task


def run_one(worker: JobManager, submitter: JobManager, extension: Extension) -> Any:
    """Submit, claim and run one task; answer its id."""
    task_id = submitter.submit(extension, "room1")
    task = claim(worker)
    assert task.id == task_id
    worker.run(task)
    return task_id


def test_a_result_round_trips_through_run_get_wait_and_result(
    worker: JobManager, submitter: JobManager, server: TestClient
) -> None:
    task_id = submitter.submit(Compute(), "room1")
    task = claim(worker)

    assert worker.run(task) == TaskStatus.COMPLETED

    expected = {"sum": 3, "items": [1, 2], "nested": {"ok": True}}
    shown = server.get(f"/v1/joblib/tasks/{task_id}", headers=auth(ALICE))
    assert shown.json()["result"] == expected
    done = submitter.wait(task_id, timeout=5)
    assert done.status == TaskStatus.COMPLETED
    assert done.result == expected
    assert submitter.result(task_id, timeout=5) == expected


def test_a_job_returning_none_has_a_null_result(
    worker: JobManager, submitter: JobManager
) -> None:
    task_id = run_one(worker, submitter, Compute(kind="none"))

    assert submitter.wait(task_id, timeout=5).status == TaskStatus.COMPLETED
    assert submitter.result(task_id, timeout=5) is None


def test_a_pydantic_model_result_is_sent_as_its_json_dump(
    worker: JobManager, submitter: JobManager
) -> None:
    task_id = run_one(worker, submitter, Compute(kind="model"))

    assert submitter.result(task_id, timeout=5) == {
        "name": "tri",
        "corners": [{"x": 0.0, "y": 0.0}, {"x": 1.0, "y": 0.5}],
        "colour": "red",
        "made": "2026-01-02T03:04:05Z",
    }


def test_a_dataclass_result_is_sent_as_json(
    worker: JobManager, submitter: JobManager
) -> None:
    task_id = run_one(worker, submitter, Compute(kind="dataclass"))

    assert submitter.result(task_id, timeout=5) == {
        "count": 2,
        "ids": [str(ANY_ID)],
        "point": {"x": 1.0, "y": 2.0},
    }


@pytest.mark.parametrize("kind", ["object", "nan"])
def test_a_result_that_cannot_be_json_fails_the_task(
    worker: JobManager, submitter: JobManager, kind: str
) -> None:
    task_id = submitter.submit(Compute(kind=kind), "room1")

    assert worker.run(claim(worker)) == TaskStatus.FAILED

    with pytest.raises(TaskFailedError) as caught:
        submitter.result(task_id, timeout=5)
    assert caught.value.task_id == task_id
    assert "cannot be sent as its JSON result" in (caught.value.error or "")
    assert caught.value.error_code == ErrorCode.JOB_FAILED


def test_a_result_over_the_servers_limit_fails_the_task(
    worker: JobManager, submitter: JobManager
) -> None:
    task_id = submitter.submit(Compute(kind="big", size=MAX_RESULT_BYTES), "room1")

    assert worker.run(claim(worker)) == TaskStatus.FAILED

    with pytest.raises(TaskFailedError) as caught:
        submitter.result(task_id, timeout=5)
    assert "too large" in (caught.value.error or "")


def test_result_raises_task_failed_with_the_error(
    worker: JobManager, submitter: JobManager
) -> None:
    task_id = run_one(worker, submitter, Explode())

    with pytest.raises(TaskFailedError) as caught:
        submitter.result(task_id, timeout=5)

    assert caught.value.error == "ValueError: boom"
    assert caught.value.error_code == ErrorCode.JOB_FAILED
    assert caught.value.task is not None
    assert caught.value.task.status == TaskStatus.FAILED
    assert "ValueError: boom" in str(caught.value)


def test_result_raises_task_cancelled_for_a_cancelled_task(
    submitter: JobManager, worker: JobManager, server: TestClient
) -> None:
    task_id = submitter.submit(Compute(), "room1")
    cancelled = server.patch(
        f"/v1/joblib/tasks/{task_id}", json={"status": "cancelled"}, headers=auth(ALICE)
    )
    assert cancelled.status_code == 200, cancelled.text

    with pytest.raises(TaskCancelledError) as caught:
        submitter.result(task_id, timeout=5)
    assert caught.value.task_id == task_id


def test_submit_and_register_carry_time_limits(
    make_manager: ManagerFactory, submitter: JobManager, server: TestClient
) -> None:
    worker = make_manager(ADMIN, heartbeat_interval=None)
    worker.register(Compute, timeout_seconds=60, pending_timeout_seconds=120)
    job = server.get(
        "/v1/joblib/rooms/room1/jobs/@global:analysis:Compute", headers=auth(ALICE)
    ).json()
    assert (job["timeout_seconds"], job["pending_timeout_seconds"]) == (60, 120)

    default = submitter.submit(Compute(), "room1")
    own = submitter.submit(
        Compute(), "room1", timeout_seconds=5, pending_timeout_seconds=30
    )

    shown = {
        task_id: server.get(f"/v1/joblib/tasks/{task_id}", headers=auth(ALICE)).json()
        for task_id in (default, own)
    }
    assert shown[default]["timeout_seconds"] == 60
    assert shown[default]["expires_at"] is not None
    assert shown[own]["timeout_seconds"] == 5


@pytest.mark.parametrize("seconds", [0, -1, 400 * 24 * 3600.0])
def test_time_limits_out_of_range_are_refused_before_any_request(
    worker: JobManager, seconds: float
) -> None:
    with pytest.raises(ValidationError):
        worker.submit(Compute(), "room1", timeout_seconds=seconds)
    with pytest.raises(ValidationError):
        worker.register(Compute, pending_timeout_seconds=seconds)
