"""The server's exception family: each carries the problem type it answers with."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from joblib_protocol import (
    DatabaseUnavailable,
    Forbidden,
    InvalidTaskTransition,
    JobNotFound,
    ProblemDetail,
    ProblemType,
    TaskNotFound,
    WorkerNotFound,
)

logger = logging.getLogger("joblib_server")


class JobLibError(Exception):
    """Base of every error joblib-server raises on purpose."""


class SchemaError(JobLibError):
    """joblib's tables are in a state this server cannot use or upgrade."""


class SchemaNotCurrent(SchemaError):
    """The database is not at this server's schema revision, and upgrading is off."""


class ProblemError(JobLibError):
    """An error the client caused; it becomes an RFC 9457 answer."""

    def __init__(
        self,
        problem: type[ProblemType],
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.problem = problem
        self.detail = detail
        self.headers = dict(headers or {})
        """HTTP headers of the answer (`Retry-After`, `Connection: close`)."""
        self.extensions = extensions

    def document(self) -> ProblemDetail:
        """The problem document to send."""
        return self.problem.document(self.detail, **self.extensions)


def database_unavailable(cause: BaseException, retry_after: int) -> ProblemError:
    """The database cannot be used right now: 503 with `Retry-After` (and one log line).

    The cause stays in the server's log: a driver's message can name hosts.
    """
    orig = getattr(cause, "orig", None) or cause
    reason = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    logger.warning("database unavailable (%s): %s", type(orig).__name__, reason)
    return ProblemError(
        DatabaseUnavailable,
        f"the database cannot be used right now; try again in {retry_after} s",
        headers={"Retry-After": str(retry_after)},
    )


def job_not_found(full_name: str, room_id: str) -> ProblemError:
    """The job is unknown, soft-deleted, or not visible from the room."""
    return ProblemError(
        JobNotFound, f"no job {full_name!r} visible from room {room_id!r}"
    )


def worker_not_found(worker_id: object) -> ProblemError:
    """No worker has that id."""
    return ProblemError(WorkerNotFound, f"no worker {worker_id}")


def task_not_found(task_id: object) -> ProblemError:
    """No task has that id."""
    return ProblemError(TaskNotFound, f"no task {task_id}")


def forbidden(detail: str) -> ProblemError:
    """The caller may not touch this resource."""
    return ProblemError(Forbidden, detail)


def invalid_transition(current: str, new: str) -> ProblemError:
    """The task cannot move from `current` to `new`."""
    return ProblemError(InvalidTaskTransition, f"a {current} task cannot become {new}")
