"""Task states, the transition table, and the task REST models."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field


class TaskStatus(StrEnum):
    """Where a task is in its life."""

    PENDING = "pending"
    CLAIMED = "claimed"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATUSES: frozenset[TaskStatus] = frozenset(
    {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED}
)
"""States a task never leaves."""

VALID_TRANSITIONS: Mapping[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.PENDING: frozenset({TaskStatus.CLAIMED, TaskStatus.CANCELLED}),
    TaskStatus.CLAIMED: frozenset(
        {TaskStatus.RUNNING, TaskStatus.FAILED, TaskStatus.CANCELLED}
    ),
    TaskStatus.RUNNING: frozenset(
        {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED}
    ),
    TaskStatus.COMPLETED: frozenset(),
    TaskStatus.FAILED: frozenset(),
    TaskStatus.CANCELLED: frozenset(),
}
"""For each state, the states a task may move to next."""


def is_valid_transition(current: TaskStatus | str, new: TaskStatus | str) -> bool:
    """Tell whether a task in state `current` may move to state `new`."""
    try:
        return TaskStatus(new) in VALID_TRANSITIONS[TaskStatus(current)]
    except ValueError:
        return False


def is_terminal(status: TaskStatus | str) -> bool:
    """Tell whether `status` is one a task never leaves."""
    return status in TERMINAL_STATUSES


class ErrorCode(StrEnum):
    """Ours: why a task failed, for machines; `error` stays the human sentence."""

    WORKER_DISCONNECTED = "worker_disconnected"
    """Its worker's socket dropped and did not come back within the grace time."""
    WORKER_REMOVED = "worker_removed"
    """Its worker was removed with `DELETE /workers/{id}`."""
    WORKER_TIMED_OUT = "worker_timed_out"
    """Its worker stopped heartbeating and the sweeper removed it."""
    JOB_FAILED = "job_failed"
    """The worker reported that the job failed."""
    INTERNAL_TIMED_OUT = "internal_timed_out"
    """An `@internal` task ran longer than `internal_task_timeout_seconds`."""
    NOT_HELD = "not_held"
    """Its worker's heartbeat listed the tasks it holds, and this one was not there."""


class TaskSubmitRequest(BaseModel):
    """Body of `POST /rooms/{room_id}/tasks/{full_name}`."""

    payload: dict[str, Any] = Field(default_factory=dict)


class TaskResponse(BaseModel):
    """A task as the REST API shows it."""

    id: UUID
    job_name: str
    room_id: str
    status: TaskStatus
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    worker_id: UUID | None = None
    error: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    queue_position: int | None = None
    # Ours: additions old clients ignore.
    attempt: int = Field(default=1, ge=1, description="1 for a first run.")
    error_code: ErrorCode | None = None


class TaskClaimRequest(BaseModel):
    """Body of `POST /tasks/claim`."""

    worker_id: UUID
    # Ours: saves the worker a PATCH round trip per task.
    start: bool = Field(
        default=False,
        description="Move the claimed task straight to running in the same request.",
    )
    # Ours: a claim tried again after its answer was lost gets the same task back.
    request_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="The claim attempt's own id, fresh for each claim and the same "
        "when that claim is sent again: a claim already made under this id answers "
        "the task it took, as long as the worker still holds it.",
    )


class TaskClaimResponse(BaseModel):
    """Answer of `POST /tasks/claim`: the claimed task, or null when none waits."""

    task: TaskResponse | None = None


class TaskUpdateRequest(BaseModel):
    """Body of `PATCH /tasks/{task_id}`."""

    status: TaskStatus
    error: str | None = None
    # Ours: the reporting worker. When it is not the task's worker any more (the
    # task was requeued to another, or the worker removed), the answer is 409.
    worker_id: UUID | None = None
