"""In-process wake-ups for long-polls waiting on a task to finish."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import anyio

from joblib_protocol import Emission, TaskStatusEvent, is_terminal


class TaskWaiters:
    """Long-polls register here; a terminal task event sets their `anyio.Event`."""

    def __init__(self) -> None:
        self._waiting: dict[uuid.UUID, set[anyio.Event]] = {}

    @contextmanager
    def watch(self, task_id: uuid.UUID) -> Iterator[anyio.Event]:
        """Yield an event set when `task_id` turns terminal in this process."""
        event = anyio.Event()
        self._waiting.setdefault(task_id, set()).add(event)
        try:
            yield event
        finally:
            waiting = self._waiting.get(task_id)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._waiting[task_id]

    def notify(self, emissions: Iterable[Emission]) -> None:
        """Wake the long-polls of every task that these emissions show finished."""
        for emission in emissions:
            event = emission.event
            if isinstance(event, TaskStatusEvent) and is_terminal(event.status):
                for waiter in self._waiting.get(uuid.UUID(event.id), ()):
                    waiter.set()

    def __len__(self) -> int:
        return sum(len(events) for events in self._waiting.values())
