"""The client's exception family: one base, one class per problem type of the API.

The server answers every error with an RFC 9457 problem document; `error_for_problem`
turns one back into the matching exception, so callers catch `JobLibError` once, or
a precise class such as `SchemaConflictError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from uuid import UUID

from pydantic import ValidationError as PydanticValidationError

from joblib_protocol import (
    DatabaseUnavailable,
    Forbidden,
    InternalError,
    InternalJobNotConfigured,
    InvalidCategory,
    InvalidJobName,
    InvalidPayload,
    InvalidRoomId,
    InvalidSchema,
    InvalidTaskTransition,
    JobNotFound,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ProblemDetail,
    ProblemType,
    ProviderFailed,
    ProviderNotFound,
    ProviderTimeout,
    RequestTimeout,
    RoomLocked,
    SchemaConflict,
    TaskNotFound,
    TaskNotRunning,
    TaskWorkerMismatch,
    Unauthorized,
    ValidationFailed,
    WorkerNotFound,
    problem_type_for,
)
from joblib_protocol.problems import PROBLEM_TYPE_PREFIX

if TYPE_CHECKING:
    from joblib_protocol import CancelReason, ErrorCode, TaskResponse


class JobLibError(Exception):
    """Base of every error joblib-client raises.

    `problem` is the server's problem document, when there is one; `type`, `status`
    and `detail` are its members (None for errors that never reached the server).
    `method` and `url` name the request that failed, when the error came from one:
    `str(exc)` then starts with them (`GET http://…/v1/joblib/workers: 404
    not-found: …`). `foreign_answer` is true when the answer was not joblib's
    (a proxy's HTML page, a gateway's 502): `status` is its status and `detail`
    the start of its text.
    """

    problem_type: ClassVar[type[ProblemType] | None] = None

    def __init__(
        self,
        detail: str | None = None,
        *,
        problem: ProblemDetail | None = None,
        method: str | None = None,
        url: str | None = None,
        foreign_answer: bool = False,
    ) -> None:
        self.problem = problem
        self.type: str | None = problem.type if problem else None
        self.status: int | None = problem.status if problem else None
        self.detail: str | None = detail if detail is not None else _detail(problem)
        self.method = method
        self.url = url
        self.foreign_answer = foreign_answer
        super().__init__(self._message())

    @property
    def short_type(self) -> str | None:
        """The problem type without its prefix (`not-found`), or its URI as given."""
        if self.type is None:
            return None
        return self.type.removeprefix(PROBLEM_TYPE_PREFIX)

    def summary(self) -> str:
        """Say what went wrong in one line, without the request.

        `404 task-not-found: no task …` for the server's problems, the status
        and the start of the text for an answer that was not joblib's, the
        detail otherwise.
        """
        if self.problem is None:
            return self.detail or type(self).__name__
        if self.foreign_answer:
            text = f"{self.problem.status} {self.problem.title} (not a joblib answer)"
        else:
            text = f"{self.problem.status} {self.short_type}"
        return f"{text}: {self.detail}" if self.detail else text

    def _message(self) -> str:
        if self.method is not None and self.url is not None:
            return f"{self.method} {self.url}: {self.summary()}"
        if self.problem is not None and not self.foreign_answer:
            # Built from a document alone: the message it always had.
            text = f"{self.problem.status} {self.problem.title}"
            return f"{text}: {self.detail}" if self.detail else text
        return self.summary()


def _detail(problem: ProblemDetail | None) -> str | None:
    return problem.detail if problem is not None else None


TransportFailure = Literal[
    "connection-refused", "name-resolution", "tls", "timeout", "connection", "rejected"
]
"""Why a server could not be reached (`TransportError.reason`).

`connection-refused`: nothing listens at the host and port; `name-resolution`:
the host name does not resolve; `tls`: the TLS handshake failed (an `https://`
URL for a plain-HTTP server, a certificate not trusted); `timeout`: no answer in
time; `connection`: another failure of the connection; `rejected`: the server
answered and refused the socket connection (unauthorized, too many connections).
"""


class TransportError(JobLibError):
    """The server could not be reached, or the socket gave no answer.

    `reason` says why, when known (see `TransportFailure`); `method` and `url`
    name the request, or `url` the socket's server.
    """

    def __init__(
        self,
        detail: str | None = None,
        *,
        reason: TransportFailure | None = None,
        method: str | None = None,
        url: str | None = None,
    ) -> None:
        self.reason = reason
        super().__init__(detail, method=method, url=url)


class WaitTimeoutError(JobLibError, TimeoutError):
    """A task did not reach a terminal state within the time given to `wait()`."""


class TaskFailedError(JobLibError):
    """The task a caller waited for failed: `error` says why, `error_code` for machines.

    `task` is the task as the server last showed it, when the error came from it.
    """

    def __init__(
        self,
        task_id: UUID,
        error: str | None,
        error_code: ErrorCode | None = None,
        *,
        task: TaskResponse | None = None,
    ) -> None:
        self.task_id = task_id
        self.error = error
        self.error_code = error_code
        self.task = task
        code = f" ({error_code.value})" if error_code is not None else ""
        super().__init__(f"task {task_id} failed{code}: {error or 'no error given'}")


class TaskCancelledError(JobLibError):
    """A task was cancelled (or, inside a job, told to stop: see `reason`).

    `result()` raises it for a task its submitter or an admin cancelled;
    `TaskContext.raise_if_cancelled()` raises it inside the job's code once the
    task is cancelled or past its deadline.
    """

    def __init__(
        self,
        task_id: UUID,
        reason: CancelReason | None = None,
        *,
        task: TaskResponse | None = None,
    ) -> None:
        self.task_id = task_id
        self.reason = reason
        self.task = task
        why = f" ({reason.value})" if reason is not None else ""
        super().__init__(f"task {task_id} was cancelled{why}")


class BadRequestError(JobLibError):
    """The server refused the request as malformed (400)."""


class InvalidCategoryError(BadRequestError):
    """The category is not one of the server's configured categories."""

    problem_type = InvalidCategory


class InvalidJobNameError(BadRequestError):
    """The job name is empty or holds ':' or control characters."""

    problem_type = InvalidJobName


class InvalidRoomIdError(BadRequestError):
    """The room id is empty or holds '@' or ':'."""

    problem_type = InvalidRoomId


class UnauthorizedError(JobLibError):
    """The request carries no valid token (401)."""

    problem_type = Unauthorized


class ForbiddenError(JobLibError):
    """The token is valid but may not touch this resource (403)."""

    problem_type = Forbidden


class RoomLockedError(JobLibError):
    """The room refuses writes now (423): the host locked it; nothing was changed."""

    problem_type = RoomLocked


class NotFoundError(JobLibError):
    """The resource does not exist (404)."""

    problem_type: ClassVar[type[ProblemType] | None] = NotFound


class JobNotFoundError(NotFoundError):
    """No live job of that name is visible from the room."""

    problem_type = JobNotFound


class WorkerNotFoundError(NotFoundError):
    """The server knows no worker of that id (it may have been cleaned up)."""

    problem_type = WorkerNotFound


class TaskNotFoundError(NotFoundError):
    """No task has that id."""

    problem_type = TaskNotFound


class ProviderNotFoundError(NotFoundError):
    """No provider of that name (or id) is visible from the room."""

    problem_type = ProviderNotFound


class MethodNotAllowedError(JobLibError):
    """The route exists but not for that method (405)."""

    problem_type = MethodNotAllowed


class ConflictError(JobLibError):
    """The request conflicts with the current state on the server (409)."""


class SchemaConflictError(ConflictError):
    """The job is already registered with a different parameter schema."""

    problem_type = SchemaConflict


class InvalidTaskTransitionError(ConflictError):
    """The task cannot move from its current state to the one asked for."""

    problem_type = InvalidTaskTransition


class TaskWorkerMismatchError(ConflictError):
    """The reporting worker is no longer the task's worker; the report changed nothing.

    The task was requeued and claimed by another worker, or its worker was removed.
    """

    problem_type = TaskWorkerMismatch


class TaskNotRunningError(ConflictError):
    """Progress was reported for a task that is not running any more.

    It was cancelled, failed by its deadline, or finished: its worker should stop.
    """

    problem_type = TaskNotRunning


class PayloadTooLargeError(JobLibError):
    """The request body, or a task's result, is over the server's size limit (413)."""

    problem_type = PayloadTooLarge


class ValidationFailedError(JobLibError):
    """The server rejected the body as invalid (422); `errors` lists the fields."""

    problem_type: ClassVar[type[ProblemType] | None] = ValidationFailed

    @property
    def errors(self) -> list[Any]:
        """Return the field errors of the problem document."""
        extra = self.problem.model_extra if self.problem is not None else None
        errors = (extra or {}).get("errors")
        return list(errors) if isinstance(errors, list) else []


class InvalidPayloadError(ValidationFailedError):
    """A task's payload does not match its job's JSON Schema (422); see `errors`.

    Each error has `loc` (the path inside the payload) and `msg`; nothing was stored.
    """

    problem_type = InvalidPayload


class InvalidSchemaError(ValidationFailedError):
    """A job's schema is not a valid JSON Schema (2020-12) (422); see `errors`."""

    problem_type = InvalidSchema


class RequestTimeoutError(JobLibError):
    """The request body did not reach the server within its time limit (408)."""

    problem_type = RequestTimeout


class ServerError(JobLibError):
    """The server failed (5xx)."""

    problem_type: ClassVar[type[ProblemType] | None] = InternalError


class DatabaseUnavailableError(ServerError):
    """The server cannot reach its database right now (503); retrying may work.

    The server's `Retry-After` says when to try again. A submit retried with
    the same idempotency key cannot make a second task.
    """

    problem_type = DatabaseUnavailable


class InternalJobNotConfiguredError(ServerError):
    """An `@internal` job was asked for, but the server runs no such job (503)."""

    problem_type = InternalJobNotConfigured


class ProviderError(ServerError):
    """A read of a provider got no data (5xx); `provider` and `params` say which.

    `JobManager.read()` fills `provider` (the full name) and `params` (the
    query parameters as sent); they are None when the error came from elsewhere.
    """

    problem_type: ClassVar[type[ProblemType] | None] = None
    provider: str | None = None
    params: dict[str, str] | None = None


class ProviderTimeoutError(ProviderError):
    """The provider did not answer the read in time (504); reading again may work.

    The read stays asked for: a worker that answers later fills the cache, so a
    read sent again soon may get it at once.
    """

    problem_type = ProviderTimeout


class ProviderFailedError(ProviderError):
    """The provider's worker could not answer the read (502); `detail` says why.

    Nothing was cached: reading again asks the worker again.
    """

    problem_type = ProviderFailed


def _subclasses(cls: type[JobLibError]) -> list[type[JobLibError]]:
    found: list[type[JobLibError]] = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_subclasses(sub))
    return found


_BY_PROBLEM: dict[type[ProblemType], type[JobLibError]] = {
    cls.problem_type: cls for cls in _subclasses(JobLibError) if cls.problem_type
}

_BY_STATUS: dict[int, type[JobLibError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    405: MethodNotAllowedError,
    408: RequestTimeoutError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: ValidationFailedError,
    423: RoomLockedError,
}


def error_class_for(type_uri: str, status: int) -> type[JobLibError]:
    """Return the exception class for a problem `type` URI, else for its status."""
    problem_type = problem_type_for(type_uri)
    if problem_type is not None and problem_type in _BY_PROBLEM:
        return _BY_PROBLEM[problem_type]
    if status >= 500:
        return ServerError
    return _BY_STATUS.get(status, JobLibError)


def error_for_problem(
    problem: ProblemDetail | Mapping[str, Any],
    *,
    method: str | None = None,
    url: str | None = None,
    foreign_answer: bool = False,
) -> JobLibError:
    """Build the exception matching a problem document (a model or its JSON).

    `method` and `url`, when given, name the request it answered (see
    `JobLibError`).
    """
    if not isinstance(problem, ProblemDetail):
        try:
            problem = ProblemDetail.model_validate(problem)
        except PydanticValidationError:
            return JobLibError(
                f"the server answered with a malformed error: {problem}",
                method=method,
                url=url,
            )
    cls = error_class_for(problem.type, problem.status)
    return cls(problem=problem, method=method, url=url, foreign_answer=foreign_answer)
