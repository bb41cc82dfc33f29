"""RFC 9457 problem documents and the problem types of the API."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "/v1/problems/"


class ProblemDetail(BaseModel):
    """The RFC 9457 body of every error answer; extension members are kept."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None


class ProblemType:
    """Base of the problem types: each subclass names one kind of error."""

    slug: ClassVar[str] = "about:blank"
    title: ClassVar[str] = "Error"
    status: ClassVar[int] = 500

    @classmethod
    def type_uri(cls) -> str:
        """Return the `type` member of this problem's documents."""
        return PROBLEM_TYPE_PREFIX + cls.slug

    @classmethod
    def document(cls, detail: str | None = None, **extensions: Any) -> ProblemDetail:
        """Build the problem document of this type."""
        return ProblemDetail(
            type=cls.type_uri(),
            title=cls.title,
            status=cls.status,
            detail=detail,
            **extensions,
        )


class JobNotFound(ProblemType):
    """No live job of that name is visible from the room."""

    slug = "job-not-found"
    title = "Job not found"
    status = 404


class SchemaConflict(ProblemType):
    """The job is already registered with a different parameter schema."""

    slug = "schema-conflict"
    title = "Schema conflict"
    status = 409


class InvalidCategory(ProblemType):
    """The category is not one of the server's configured categories."""

    slug = "invalid-category"
    title = "Invalid category"
    status = 400


class InvalidJobName(ProblemType):
    """Ours: the job name is empty or holds ':' or control characters."""

    slug = "invalid-job-name"
    title = "Invalid job name"
    status = 400


class InvalidRoomId(ProblemType):
    """The room id is empty or holds '@' or ':' (other than the reserved rooms)."""

    slug = "invalid-room-id"
    title = "Invalid room id"
    status = 400


class WorkerNotFound(ProblemType):
    """No worker has that id (it may have been cleaned up)."""

    slug = "worker-not-found"
    title = "Worker not found"
    status = 404


class TaskNotFound(ProblemType):
    """No task has that id."""

    slug = "task-not-found"
    title = "Task not found"
    status = 404


class InvalidTaskTransition(ProblemType):
    """The task cannot move from its current state to the one asked for."""

    slug = "invalid-task-transition"
    title = "Invalid task transition"
    status = 409


class TaskWorkerMismatch(ProblemType):
    """Ours: the reporting worker is not the task's worker any more.

    The task was requeued and claimed by another worker, or its worker was removed;
    the report changed nothing.
    """

    slug = "task-worker-mismatch"
    title = "Task worker mismatch"
    status = 409


class Forbidden(ProblemType):
    """The caller is authenticated but may not touch this resource."""

    slug = "forbidden"
    title = "Forbidden"
    status = 403


class RoomLocked(ProblemType):
    """Ours: the room refuses writes now (the host's lock); nothing was changed.

    What zndraw-joblib answers from its writable-room check, as a problem type.
    """

    slug = "room-locked"
    title = "Room locked"
    status = 423


class InternalJobNotConfigured(ProblemType):
    """An `@internal` job was asked for, but this server runs no such job."""

    slug = "internal-job-not-configured"
    title = "Internal job not configured"
    status = 503


class Unauthorized(ProblemType):
    """Ours: the request carries no valid identity."""

    slug = "unauthorized"
    title = "Unauthorized"
    status = 401


class ValidationFailed(ProblemType):
    """Ours: the body is not JSON or does not match the model; see `errors`."""

    slug = "validation-error"
    title = "Validation error"
    status = 422


class InvalidPayload(ProblemType):
    """Ours: a task's payload does not match its job's JSON Schema; see `errors`.

    Each error has `loc` (`["body", "payload", ...]`: the path to the value in the
    request body, as a list) and `msg`.
    Nothing was stored.
    """

    slug = "invalid-payload"
    title = "Invalid payload"
    status = 422


class InvalidSchema(ProblemType):
    """Ours: a job's `schema` is not a valid JSON Schema (2020-12); see `errors`."""

    slug = "invalid-schema"
    title = "Invalid schema"
    status = 422


class TaskNotRunning(ProblemType):
    """Ours: progress was reported for a task that is not running (any more).

    A task cancelled, failed by its deadline or finished answers this: its worker
    should stop working on it.
    """

    slug = "task-not-running"
    title = "Task not running"
    status = 409


class PayloadTooLarge(ProblemType):
    """Ours: the request body, or a task's result, is over the server's size limit."""

    slug = "payload-too-large"
    title = "Payload too large"
    status = 413


class NotFound(ProblemType):
    """Ours: no route has that path."""

    slug = "not-found"
    title = "Not found"
    status = 404


class MethodNotAllowed(ProblemType):
    """Ours: the route exists but not for that method."""

    slug = "method-not-allowed"
    title = "Method not allowed"
    status = 405


class RequestTimeout(ProblemType):
    """Ours: the request body did not arrive within the server's time limit."""

    slug = "request-timeout"
    title = "Request timeout"
    status = 408


class DatabaseUnavailable(ProblemType):
    """Ours: the database cannot be reached right now; retry after `Retry-After`.

    A connection lost during a commit leaves it unknown whether the change was
    made: a submit retried with the same `Idempotency-Key` is safe either way.
    """

    slug = "database-unavailable"
    title = "Database unavailable"
    status = 503


class ProviderNotFound(ProblemType):
    """No provider of that name (or id) is visible from the room."""

    slug = "provider-not-found"
    title = "Provider not found"
    status = 404


class ProviderTimeout(ProblemType):
    """The provider did not answer the read in time; retry after `Retry-After`."""

    slug = "provider-timeout"
    title = "Provider timeout"
    status = 504


class ProviderFailed(ProblemType):
    """Ours: the provider's worker reported that it cannot answer this read.

    The detail is the worker's message; nothing was cached, so a new read asks
    the worker again.
    """

    slug = "provider-failed"
    title = "Provider failed"
    status = 502


class InternalError(ProblemType):
    """Ours: the server failed; the detail never carries a stack trace."""

    slug = "internal-error"
    title = "Internal server error"
    status = 500


PROBLEM_TYPES: dict[str, type[ProblemType]] = {
    cls.type_uri(): cls
    for cls in (
        JobNotFound,
        SchemaConflict,
        InvalidCategory,
        InvalidJobName,
        InvalidRoomId,
        WorkerNotFound,
        TaskNotFound,
        InvalidTaskTransition,
        TaskWorkerMismatch,
        Forbidden,
        RoomLocked,
        InternalJobNotConfigured,
        Unauthorized,
        ValidationFailed,
        InvalidPayload,
        InvalidSchema,
        TaskNotRunning,
        PayloadTooLarge,
        NotFound,
        MethodNotAllowed,
        RequestTimeout,
        DatabaseUnavailable,
        InternalError,
        ProviderNotFound,
        ProviderTimeout,
        ProviderFailed,
    )
}
"""Every problem type, by its `type` URI."""


def problem_type_for(type_uri: str) -> type[ProblemType] | None:
    """Return the problem type whose `type` URI is `type_uri`, if it is one of ours."""
    return PROBLEM_TYPES.get(type_uri)
