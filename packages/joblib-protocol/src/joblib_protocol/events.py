"""Socket.IO events: frozen models, each declaring the name it travels under."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from joblib_protocol.tasks import CancelReason, ErrorCode, TaskProgress, TaskStatus


class EventName(str):
    """An event's wire name: a plain `str`, also callable as `Event.event_name()`."""

    __slots__ = ()

    def __call__(self) -> str:
        """Return the name as an exact `str`."""
        return str(self)


class Event(BaseModel):
    """Base of every Socket.IO event: frozen, so equal events hash equal.

    Each event states its wire name where it is defined,
    `class TaskAvailable(Event, event_name="task_available")`, so renaming the
    Python class never changes the wire. A subclass of a named event keeps its
    parent's name; a direct subclass without one fails when it is defined.
    """

    model_config = ConfigDict(frozen=True)

    # A `str` class attribute, not a method: wrappers that read `Model.event_name`
    # (zndraw-socketio's `get_event_name`) get the name itself.
    event_name: ClassVar[EventName]
    """The Socket.IO event name; `event_name()` gives the same as a plain `str`."""

    def __init_subclass__(cls, *, event_name: str | None = None, **kwargs: Any) -> None:
        """Bind the declared wire name, refusing an event class without one."""
        super().__init_subclass__(**kwargs)
        if event_name is None:
            if not isinstance(getattr(cls, "event_name", None), EventName):
                raise TypeError(
                    f"event {cls.__name__} has no wire name: declare it with "
                    f'`class {cls.__name__}(Event, event_name="...")`'
                )
            return
        if not isinstance(event_name, str) or not event_name:
            raise TypeError(f"event {cls.__name__}: event_name must be a non-empty str")
        cls.event_name = EventName(event_name)

    def payload(self) -> dict[str, object]:
        """Return the JSON-ready payload sent on the wire."""
        return self.model_dump(mode="json")


class JobsInvalidate(Event, event_name="jobs_invalidate"):
    """The room's job list changed; observers should fetch it again."""


class TaskAvailable(Event, event_name="task_available"):
    """A task was submitted; workers serving its job may claim it."""

    job_name: str
    room_id: str
    task_id: str


class TaskStatusEvent(Event, event_name="task_status_event"):
    """A task changed state."""

    id: str
    name: str
    room_id: str
    status: TaskStatus
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    queue_position: int | None = None
    worker_id: str | None = None
    error: str | None = None
    # Ours: additions old clients ignore.
    attempt: int = 1
    error_code: ErrorCode | None = None
    deadline_at: datetime | None = None
    expires_at: datetime | None = None


class TaskProgressEvent(Event, event_name="task_progress_event"):
    """Ours: a running task's progress, to its room; at most ~10 a second per task.

    Updates coming faster are coalesced: the latest always arrives.
    """

    id: str
    room_id: str
    progress: TaskProgress


class TaskCancelled(Event, event_name="task_cancelled"):
    """Ours: to the worker holding a task: stop it, it was cancelled or timed out."""

    task_id: str
    job_name: str
    reason: CancelReason


class JoinJobRoom(Event, event_name="join_job_room"):
    """Worker to server: put this connection in `jobs:{job_name}` for `worker_id`."""

    job_name: str
    worker_id: str


class JoinAck(BaseModel):
    """Ours: the answer to an accepted `join_job_room` or `join_provider_room`.

    A refusal answers `{"ok": false, "error": <problem>}` instead.
    """

    ok: bool = True
    heartbeat_seconds: float | None = Field(
        default=None,
        description="While this socket stays connected, the server records the "
        "worker's heartbeat itself at least this often, so the worker needs no "
        "REST heartbeat to stay alive (ours; absent from servers that do not: "
        "keep heartbeating).",
    )


class LeaveJobRoom(Event, event_name="leave_job_room"):
    """Worker to server: take this connection out of `jobs:{job_name}`."""

    job_name: str
    worker_id: str


class JoinRoom(Event, event_name="join_room"):
    """Observer to server (ours): receive the events of `room:{room_id}`."""

    room_id: str


class LeaveRoom(Event, event_name="leave_room"):
    """Observer to server (ours): stop receiving the events of `room:{room_id}`."""

    room_id: str


class ProvidersInvalidate(Event, event_name="providers_invalidate"):
    """The room's provider list changed; observers should fetch it again."""


class ProviderRequest(Event, event_name="provider_request"):
    """To the workers serving a provider: answer this read.

    `params` is the read's canonical JSON (`canonical_params`); `request_id` is
    its hash (`request_hash`), the `X-Request-Hash` of the answer's upload.
    """

    request_id: str
    provider_name: str
    params: str


class ProviderResultReady(Event, event_name="provider_result_ready"):
    """A provider's result for `request_hash` is cached; readers may fetch it."""

    provider_name: str
    request_hash: str


class JoinProviderRoom(Event, event_name="join_provider_room"):
    """Worker to server: put this connection in `providers:{provider_name}`."""

    provider_name: str
    worker_id: str


class LeaveProviderRoom(Event, event_name="leave_provider_room"):
    """Worker to server: take this connection out of `providers:{provider_name}`."""

    provider_name: str
    worker_id: str


class Emission(NamedTuple):
    """An event bound for one Socket.IO room; hashable, so sets deduplicate."""

    event: Event
    room: str


def room_channel(room_id: str) -> str:
    """Return the Socket.IO room that observers of `room_id` are in."""
    return f"room:{room_id}"


def job_channel(full_name: str) -> str:
    """Return the Socket.IO room that workers serving `full_name` are in."""
    return f"jobs:{full_name}"


def provider_channel(full_name: str) -> str:
    """Return the Socket.IO room that workers serving provider `full_name` are in."""
    return f"providers:{full_name}"


def worker_channel(worker_id: object) -> str:
    """Return the Socket.IO room of the connections a worker joined its jobs from."""
    return f"worker:{worker_id}"


SERVER_EVENTS: tuple[type[Event], ...] = (
    JobsInvalidate,
    TaskAvailable,
    TaskStatusEvent,
    TaskProgressEvent,
    TaskCancelled,
    ProvidersInvalidate,
    ProviderRequest,
    ProviderResultReady,
)
"""Events the server sends."""

CLIENT_EVENTS: tuple[type[Event], ...] = (
    JoinJobRoom,
    LeaveJobRoom,
    JoinRoom,
    LeaveRoom,
    JoinProviderRoom,
    LeaveProviderRoom,
)
"""Events clients send to the server."""
