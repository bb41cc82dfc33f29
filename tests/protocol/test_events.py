from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from joblib_protocol import (
    Emission,
    Event,
    JobsInvalidate,
    JoinJobRoom,
    JoinRoom,
    LeaveJobRoom,
    TaskAvailable,
    TaskStatus,
    TaskStatusEvent,
    job_channel,
    room_channel,
)


@pytest.mark.parametrize("model", [JoinJobRoom, LeaveJobRoom])
def test_join_and_leave_require_worker_id(model: type[Event]) -> None:
    with pytest.raises(ValidationError, match="worker_id"):
        model(job_name="@global:modifiers:Rotate")  # type: ignore[call-arg]


@pytest.mark.parametrize("model", [JoinJobRoom, LeaveJobRoom])
def test_join_and_leave_are_frozen(model: type[JoinJobRoom]) -> None:
    event = model(job_name="@global:modifiers:Rotate", worker_id="w1")
    with pytest.raises(ValidationError):
        event.worker_id = "w2"  # type: ignore[misc]
    assert event.worker_id == "w1"


def test_equal_events_hash_equal_and_emissions_deduplicate() -> None:
    a = JoinJobRoom(job_name="@global:modifiers:Rotate", worker_id="w1")
    b = JoinJobRoom(job_name="@global:modifiers:Rotate", worker_id="w1")
    other = JoinJobRoom(job_name="@global:modifiers:Rotate", worker_id="w2")
    assert a == b
    assert hash(a) == hash(b)
    assert a != other
    emissions = {
        Emission(a, "room:r"),
        Emission(b, "room:r"),
        Emission(other, "room:r"),
        Emission(JobsInvalidate(), "room:r"),
        Emission(JobsInvalidate(), "room:r"),
        Emission(JobsInvalidate(), "room:s"),
    }
    assert len(emissions) == 4


@pytest.mark.parametrize(
    ("model", "name"),
    [
        (JobsInvalidate, "jobs_invalidate"),
        (TaskAvailable, "task_available"),
        (TaskStatusEvent, "task_status_event"),
        (JoinJobRoom, "join_job_room"),
        (LeaveJobRoom, "leave_job_room"),
        (JoinRoom, "join_room"),
    ],
)
def test_event_names_are_snake_case_class_names(model: type[Event], name: str) -> None:
    assert model.event_name() == name


def test_event_name_can_be_overridden_without_leaking_to_subclasses() -> None:
    class HTTPThingHappened(Event):
        EVENT_NAME = "thing"

    class MoreThingHappened(HTTPThingHappened):
        pass

    assert HTTPThingHappened.event_name() == "thing"
    assert MoreThingHappened.event_name() == "more_thing_happened"


def test_task_status_event_payload_is_json_ready() -> None:
    created = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    event = TaskStatusEvent(
        id="t1",
        name="@global:modifiers:Rotate",
        room_id="r",
        status=TaskStatus.FAILED,
        created_at=created,
        error="Worker disconnected",
    )
    payload = event.payload()
    assert payload["status"] == "failed"
    assert payload["created_at"] == "2026-01-02T03:04:05Z"
    assert set(payload) == {
        "id",
        "name",
        "room_id",
        "status",
        "created_at",
        "started_at",
        "completed_at",
        "queue_position",
        "worker_id",
        "error",
    }


def test_room_helpers() -> None:
    assert room_channel("room_1") == "room:room_1"
    assert job_channel("@global:modifiers:Rotate") == "jobs:@global:modifiers:Rotate"
