"""A job's return value as a task result, and a finished task as a return value."""

from __future__ import annotations

import json
import time
from typing import Any
from uuid import UUID

from pydantic import BaseModel
from pydantic_core import PydanticSerializationError, to_jsonable_python

from joblib_client._http import Rest
from joblib_client.exceptions import (
    TaskCancelledError,
    TaskFailedError,
    WaitTimeoutError,
)
from joblib_protocol import TaskResponse, TaskStatus, is_terminal

LONG_POLL_SECONDS = 30.0
"""How long one `wait()` request asks the server to hold its answer."""


class UnserializableResultError(ValueError):
    """A job returned a value that cannot travel as JSON."""


def to_result(value: Any) -> Any:
    """Turn what `Extension.run()` returned into a JSON-ready value.

    Pydantic models go by `model_dump(mode="json")`; dataclasses, and whatever
    else pydantic can make JSON-able (datetimes, UUIDs, enums, sets, ...), by
    `pydantic_core.to_jsonable_python`. Raises `UnserializableResultError` for
    anything else, and for NaN or infinite numbers, which JSON cannot hold.
    """
    try:
        if isinstance(value, BaseModel):
            jsonable = value.model_dump(mode="json")
        else:
            jsonable = to_jsonable_python(value)
        json.dumps(jsonable, allow_nan=False)
    except (PydanticSerializationError, TypeError, ValueError) as exc:
        raise UnserializableResultError(
            f"the job returned a {type(value).__name__} that cannot be sent as "
            f"its JSON result: {exc}"
        ) from exc
    return jsonable


def task_outcome(task: TaskResponse) -> Any:
    """The result of a finished task; raise for one that failed or was cancelled."""
    if task.status == TaskStatus.COMPLETED:
        return task.result
    if task.status == TaskStatus.CANCELLED:
        raise TaskCancelledError(task.id, task=task)
    if task.status == TaskStatus.FAILED:
        raise TaskFailedError(task.id, task.error, task.error_code, task=task)
    raise ValueError(f"task {task.id} is still {task.status.value}")


def wait_for_task(rest: Rest, task_id: UUID, timeout: float | None) -> TaskResponse:
    """Long-poll `GET /tasks/{id}` until the task ended (see `JobManager.wait`)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        wait = LONG_POLL_SECONDS
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
        task, applied = rest.get_task(task_id, wait=wait)
        if is_terminal(task.status):
            return task
        if deadline is not None and time.monotonic() >= deadline:
            raise WaitTimeoutError(
                f"task {task_id} is still {task.status.value} after {timeout} s"
            )
        if not applied:
            # The server ignores `Prefer: wait`; do not poll it in a tight loop.
            time.sleep(min(1.0, max(wait, 0.0)))
