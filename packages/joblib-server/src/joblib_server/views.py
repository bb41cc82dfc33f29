"""Rows to protocol models, and the emissions that describe a row's change."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from joblib_protocol import (
    CancelReason,
    DisconnectPolicy,
    Emission,
    ErrorCode,
    JobResponse,
    JobsInvalidate,
    JobSummary,
    TaskAvailable,
    TaskCancelled,
    TaskResponse,
    TaskStatus,
    TaskStatusEvent,
    job_channel,
    room_channel,
    worker_channel,
)
from joblib_server.tables import Job


@dataclass(frozen=True, slots=True)
class TaskRow:
    """A task as its wire shapes show it: its row's fields and its job's full name.

    Hot paths read rows with Core statements and build this directly; building a
    `Task` model for each would cost more than the statement itself.
    """

    id: uuid.UUID
    job_name: str
    room_id: str
    status: str
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    worker_id: uuid.UUID | None
    error: str | None
    payload: dict[str, Any]
    attempt: int
    error_code: str | None
    result: Any = None
    progress: dict[str, Any] | None = None
    timeout_seconds: float | None = None
    deadline_at: datetime | None = None
    expires_at: datetime | None = None

    @classmethod
    def of(cls, task: Any, job_name: str) -> TaskRow:
        """The fields of an ORM `Task`, or of a Core row of the task table."""
        return cls(job_name=job_name, **{name: getattr(task, name) for name in _COPIED})


# The fields a TaskRow takes from its task row, under the same names; the REST
# shape has the same names again.
_COPIED = tuple(name for name in TaskRow.__dataclass_fields__ if name != "job_name")


def task_response(task: TaskRow, queue_position: int | None) -> TaskResponse:
    """The REST shape of a task."""
    return TaskResponse(
        job_name=task.job_name,
        queue_position=queue_position if task.status == TaskStatus.PENDING else None,
        **{name: getattr(task, name) for name in _COPIED},
    )


def task_emission(task: TaskRow, queue_position: int | None = None) -> Emission:
    """The `task_status_event` telling the task's room about its current state."""
    event = TaskStatusEvent(
        id=str(task.id),
        name=task.job_name,
        room_id=task.room_id,
        status=TaskStatus(task.status),
        created_at=task.created_at,
        started_at=task.started_at,
        completed_at=task.completed_at,
        queue_position=queue_position if task.status == TaskStatus.PENDING else None,
        worker_id=str(task.worker_id) if task.worker_id else None,
        error=task.error,
        attempt=task.attempt,
        error_code=ErrorCode(task.error_code) if task.error_code else None,
        deadline_at=task.deadline_at,
        expires_at=task.expires_at,
    )
    return Emission(event, room_channel(task.room_id))


def new_task_views(
    first: TaskRow,
    ids: Sequence[uuid.UUID],
    payloads: Sequence[dict[str, Any]],
    positions: Sequence[int | None],
    *,
    available: bool,
) -> tuple[list[TaskResponse], set[Emission]]:
    """The answers and announcements of tasks a submit just made, in order.

    The tasks differ from `first` only in id, payload and queue position. Only
    `first`'s models are validated; the others are copies with those fields
    replaced: a copy costs a third of a validation, and the values are the
    server's own, of the fields' types already. With `available`, each task is
    also offered to its job's workers (`task_available`).
    """
    answer = task_response(first, positions[0])
    event = task_emission(first, positions[0]).event
    room, workers = room_channel(first.room_id), job_channel(first.job_name)
    items: list[TaskResponse] = []
    emissions: set[Emission] = set()
    for task_id, payload, position in zip(ids, payloads, positions, strict=True):
        text_id = str(task_id)
        items.append(
            answer.model_copy(
                update={"id": task_id, "payload": payload, "queue_position": position}
            )
        )
        emissions.add(
            Emission(
                event.model_copy(update={"id": text_id, "queue_position": position}),
                room,
            )
        )
        if available:
            # Three plain strings: validating them is cheaper than a copy.
            offer = TaskAvailable(
                job_name=first.job_name, room_id=first.room_id, task_id=text_id
            )
            emissions.add(Emission(offer, workers))
    return items, emissions


def task_cancelled(task: TaskRow, reason: CancelReason) -> Emission | None:
    """The `task_cancelled` telling the task's worker to stop it; None if unheld."""
    if task.worker_id is None:
        return None
    event = TaskCancelled(task_id=str(task.id), job_name=task.job_name, reason=reason)
    return Emission(event, worker_channel(task.worker_id))


def task_available(task: TaskRow) -> Emission:
    """The `task_available` telling the workers of the task's job it may be claimed."""
    event = TaskAvailable(
        job_name=task.job_name, room_id=task.room_id, task_id=str(task.id)
    )
    return Emission(event, job_channel(task.job_name))


def jobs_invalidate(room_id: str) -> Emission:
    """The `jobs_invalidate` telling a room to fetch its job list again."""
    return Emission(JobsInvalidate(), room_channel(room_id))


def job_response(
    job: Job,
    workers: list[uuid.UUID],
    policy: DisconnectPolicy,
    worker_id: uuid.UUID | None = None,
) -> JobResponse:
    """The REST shape of a job, with the disconnect policy in force."""
    return JobResponse(
        id=job.id,
        room_id=job.room_id,
        category=job.category,
        name=job.name,
        full_name=job.full_name,
        schema_=job.schema_,
        workers=workers,
        worker_id=worker_id,
        on_disconnect=policy,
        timeout_seconds=job.timeout_seconds,
        pending_timeout_seconds=job.pending_timeout_seconds,
    )


def job_summary(job: Job, workers: list[uuid.UUID]) -> JobSummary:
    """The listed shape of a job."""
    return JobSummary(
        full_name=job.full_name, category=job.category, name=job.name, workers=workers
    )
