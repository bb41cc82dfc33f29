"""Task states, the transition table, and the task REST models."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field


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
    DEADLINE_EXCEEDED = "deadline_exceeded"
    """It ran longer than its `timeout_seconds`."""
    EXPIRED = "expired"
    """It waited in the queue longer than its `pending_timeout_seconds`."""
    INTERNAL_INTERRUPTED = "internal_interrupted"
    """An `@internal` task run in-process by a server that stopped before it ended."""


class CancelReason(StrEnum):
    """Ours: why a worker is told to stop a task it holds (`task_cancelled`)."""

    CANCELLED = "cancelled"
    """Its submitter or an admin cancelled it."""
    DEADLINE_EXCEEDED = "deadline_exceeded"
    """It ran past its deadline and was failed."""


MAX_TIMEOUT_SECONDS = 366 * 24 * 3600.0
"""The longest `timeout_seconds` or `pending_timeout_seconds` accepted: a year."""

TimeoutSeconds = Annotated[float, Field(gt=0, le=MAX_TIMEOUT_SECONDS)]
"""A positive number of seconds, at most a year."""

MAX_PROGRESS_MESSAGE = 1000
"""The longest progress message, in characters."""


class TaskProgress(BaseModel):
    """Ours: how far a running task has come, as its worker last said."""

    # Frozen: events hold it, and events hash (emissions are deduplicated in sets).
    model_config = ConfigDict(frozen=True)

    current: float = Field(ge=0, allow_inf_nan=False, description="Work done so far.")
    total: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="Work in all, when known: `current / total` is the fraction done.",
    )
    message: str | None = Field(
        default=None, max_length=MAX_PROGRESS_MESSAGE, description="What it is doing."
    )


class TaskProgressRequest(TaskProgress):
    """Ours: body of `PUT /tasks/{task_id}/progress`."""

    model_config = ConfigDict(extra="forbid")

    # The reporting worker, fenced as in `TaskUpdateRequest`.
    worker_id: UUID | None = None
    # Ours: an executor's claim of an `@internal` task, from its dispatch. When it
    # is not the task's claim any more, the answer is 409, as for `worker_id`.
    claim_id: str | None = Field(
        default=None,
        max_length=64,
        description="An executor's claim of an `@internal` task, from its "
        "dispatch; 409 task-worker-mismatch when the task is no longer under it.",
    )


class TaskSubmitRequest(BaseModel):
    """Body of `POST /rooms/{room_id}/tasks/{full_name}`."""

    payload: dict[str, Any] = Field(default_factory=dict)
    # Ours: override the job's own limits for this task.
    timeout_seconds: TimeoutSeconds | None = Field(
        default=None,
        description="Longest the task may run once started; past it, it is failed "
        "with `error_code` `deadline_exceeded` and its worker told to stop. "
        "Default: the job's.",
    )
    pending_timeout_seconds: TimeoutSeconds | None = Field(
        default=None,
        description="Longest the task may wait to be claimed; past it, it is failed "
        "with `error_code` `expired`. Default: the job's.",
    )


MAX_BATCH_SIZE = 1000
"""The default of the server's `max_batch_size`: payloads one batch submit takes."""


class TaskBatchRequest(BaseModel):
    """Body of `POST /rooms/{room_id}/tasks/{full_name}/batch` (ours).

    Each payload becomes one task, in order; every one is checked against the
    job's schema, and one that does not match stores none of them.
    """

    payloads: list[dict[str, Any]] = Field(
        min_length=1,
        description="One payload per task, in queue order: 1 to the server's "
        "`max_batch_size` (1,000 by default).",
    )
    timeout_seconds: TimeoutSeconds | None = Field(
        default=None,
        description="Longest each task may run once started. Default: the job's.",
    )
    pending_timeout_seconds: TimeoutSeconds | None = Field(
        default=None,
        description="Longest each task may wait to be claimed. Default: the job's.",
    )


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
    result: Any = Field(
        default=None, description="What the job returned, once `completed`."
    )
    progress: TaskProgress | None = Field(
        default=None, description="The latest progress its worker reported."
    )
    timeout_seconds: float | None = Field(
        default=None, description="Longest it may run once started (None: no limit)."
    )
    deadline_at: datetime | None = Field(
        default=None, description="When a running task is failed if still running."
    )
    expires_at: datetime | None = Field(
        default=None, description="When a pending task is failed if still pending."
    )


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
    # Ours: an executor's claim of an `@internal` task, from its dispatch. When it
    # is not the task's claim any more, the answer is 409, as for `worker_id`.
    claim_id: str | None = Field(
        default=None,
        max_length=64,
        description="An executor's claim of an `@internal` task, from its "
        "dispatch; 409 task-worker-mismatch when the task is no longer under it.",
    )
    # Ours: what the job returned; only with `completed`.
    result: Any = Field(
        default=None,
        description="Any JSON value, only with `status` `completed`, at most the "
        "server's `max_result_bytes` (413 beyond).",
    )


class TaskBatchResponse(BaseModel):
    """Answer of a batch submit (ours): the tasks made, in the order of `payloads`."""

    items: list[TaskResponse]
