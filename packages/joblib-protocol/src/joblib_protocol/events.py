"""Socket.IO events: frozen models whose class name gives the event name."""

from __future__ import annotations

import re
from datetime import datetime
from functools import cache
from typing import ClassVar, NamedTuple

from pydantic import BaseModel, ConfigDict

from joblib_protocol.tasks import TaskStatus

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


@cache  # event names are asked for on every emission; there are a handful
def snake_case(name: str) -> str:
    """Turn `TaskStatusEvent` into `task_status_event`."""
    return _CAMEL_BOUNDARY.sub("_", name).lower()


class Event(BaseModel):
    """Base of every Socket.IO event: frozen, so equal events hash equal."""

    model_config = ConfigDict(frozen=True)

    EVENT_NAME: ClassVar[str | None] = None
    """Set on a subclass to use another event name than its snake_case class name."""

    @classmethod
    def event_name(cls) -> str:
        """Return the Socket.IO event name of this event class."""
        override = cls.__dict__.get("EVENT_NAME")
        return override if override else snake_case(cls.__name__)

    def payload(self) -> dict[str, object]:
        """Return the JSON-ready payload sent on the wire."""
        return self.model_dump(mode="json")


class JobsInvalidate(Event):
    """The room's job list changed; observers should fetch it again."""


class TaskAvailable(Event):
    """A task was submitted; workers serving its job may claim it."""

    job_name: str
    room_id: str
    task_id: str


class TaskStatusEvent(Event):
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


class JoinJobRoom(Event):
    """Worker to server: put this connection in `jobs:{job_name}` for `worker_id`."""

    job_name: str
    worker_id: str


class LeaveJobRoom(Event):
    """Worker to server: take this connection out of `jobs:{job_name}`."""

    job_name: str
    worker_id: str


class JoinRoom(Event):
    """Observer to server (ours): receive the events of `room:{room_id}`."""

    room_id: str


class LeaveRoom(Event):
    """Observer to server (ours): stop receiving the events of `room:{room_id}`."""

    room_id: str


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


SERVER_EVENTS: tuple[type[Event], ...] = (
    JobsInvalidate,
    TaskAvailable,
    TaskStatusEvent,
)
"""Events the server sends."""

CLIENT_EVENTS: tuple[type[Event], ...] = (
    JoinJobRoom,
    LeaveJobRoom,
    JoinRoom,
    LeaveRoom,
)
"""Events clients send to the server."""
