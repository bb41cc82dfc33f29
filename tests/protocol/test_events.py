import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from joblib_protocol import (
    CLIENT_EVENTS,
    SERVER_EVENTS,
    Emission,
    Event,
    JobsInvalidate,
    JoinJobRoom,
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
        model(job_name="@global:modifiers:Rotate")


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


EVENT_NAMES = {
    "JobsInvalidate": "jobs_invalidate",
    "TaskAvailable": "task_available",
    "TaskStatusEvent": "task_status_event",
    "TaskProgressEvent": "task_progress_event",
    "TaskCancelled": "task_cancelled",
    "JoinJobRoom": "join_job_room",
    "LeaveJobRoom": "leave_job_room",
    "JoinRoom": "join_room",
    "LeaveRoom": "leave_room",
    "ProvidersInvalidate": "providers_invalidate",
    "ProviderRequest": "provider_request",
    "ProviderResultReady": "provider_result_ready",
    "JoinProviderRoom": "join_provider_room",
    "LeaveProviderRoom": "leave_provider_room",
}
"""Every event class and the name it travels under: a change here is a wire change."""


def test_every_event_declares_the_name_we_expect() -> None:
    events = (*SERVER_EVENTS, *CLIENT_EVENTS)
    assert {model.__name__: model.event_name for model in events} == EVENT_NAMES
    assert all("event_name" in vars(model) for model in events), "inherited name"


@pytest.mark.parametrize("model", [*SERVER_EVENTS, *CLIENT_EVENTS])
def test_event_name_is_a_plain_string_and_an_accessor(model: type[Event]) -> None:
    # A socket wrapper that reads `Model.event_name` gets the name, not a method.
    assert isinstance(model.event_name, str)
    assert json.dumps(model.event_name) == f'"{model.event_name}"'
    assert model.event_name() == model.event_name
    assert type(model.event_name()) is str


def test_renaming_an_event_class_keeps_its_wire_name() -> None:
    class SomethingElseEntirely(TaskAvailable):
        """The same event under another Python name."""

    assert SomethingElseEntirely.event_name == "task_available"
    assert SomethingElseEntirely.event_name() == "task_available"


def test_an_event_without_a_name_fails_when_defined() -> None:
    with pytest.raises(TypeError, match="NamelessEvent has no wire name"):

        class NamelessEvent(Event):
            pass


def test_an_empty_event_name_is_refused() -> None:
    with pytest.raises(TypeError, match="non-empty str"):

        class BlankEvent(Event, event_name=""):
            pass


def test_a_subclass_may_declare_its_own_name() -> None:
    class Thing(Event, event_name="thing"):
        pass

    class OtherThing(Thing, event_name="other_thing"):
        pass

    assert (Thing.event_name, OtherThing.event_name) == ("thing", "other_thing")


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
        "attempt",
        "error_code",
        "deadline_at",
        "expires_at",
    }


def test_room_helpers() -> None:
    assert room_channel("room_1") == "room:room_1"
    assert job_channel("@global:modifiers:Rotate") == "jobs:@global:modifiers:Rotate"


def test_a_progress_event_hashes_so_emissions_deduplicate() -> None:
    from joblib_protocol import TaskProgress, TaskProgressEvent

    progress = TaskProgress(current=1, total=2, message="half")
    event = TaskProgressEvent(id="t", room_id="r", progress=progress)
    same = TaskProgressEvent(id="t", room_id="r", progress=progress.model_copy())
    assert len({Emission(event, "room:r"), Emission(same, "room:r")}) == 1
