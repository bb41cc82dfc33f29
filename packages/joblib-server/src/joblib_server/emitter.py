"""Where emissions go after commit: the emitter interface and two simple emitters."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from joblib_protocol import TERMINAL_STATUSES, Emission, TaskStatus, TaskStatusEvent

_STATUS_RANK = {
    TaskStatus.PENDING: 0,
    TaskStatus.CLAIMED: 1,
    TaskStatus.RUNNING: 2,
    **dict.fromkeys(TERMINAL_STATUSES, 3),
}


def ordered(emissions: Iterable[Emission]) -> list[Emission]:
    """Deduplicate and order emissions so a task's events follow its lifecycle."""

    def key(emission: Emission) -> tuple[int, str, str]:
        event = emission.event
        rank = _STATUS_RANK[event.status] if isinstance(event, TaskStatusEvent) else 4
        return (rank, emission.room, event.event_name())

    return sorted(set(emissions), key=key)


@runtime_checkable
class Emitter(Protocol):
    """Sends emissions to their Socket.IO rooms; called only after commit.

    `emit` may return before the emissions are sent (`SocketIOEmitter` queues
    them), but batches must go out in the order `emit` was called: a task's
    `claimed` must never overtake its `pending` sent by an earlier change.
    """

    async def emit(self, emissions: Iterable[Emission]) -> None:
        """Send each distinct emission once."""
        ...


class NullEmitter:
    """Sends nothing: for hosts without Socket.IO."""

    async def emit(self, emissions: Iterable[Emission]) -> None:
        """Drop the emissions."""


class RecordingEmitter:
    """Keeps what would have been sent, in order; for tests and debugging."""

    def __init__(self) -> None:
        self.sent: list[Emission] = []

    async def emit(self, emissions: Iterable[Emission]) -> None:
        """Record the emissions."""
        self.sent.extend(ordered(emissions))

    def clear(self) -> None:
        """Forget what was recorded."""
        self.sent.clear()
