"""Worker SDK of joblib: register extensions as jobs, claim and run their tasks."""

from joblib_client._http import API_PREFIX, Api, ApiClient
from joblib_client._socket import EventSource, SocketClient, Tsio
from joblib_client.exceptions import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    InternalJobNotConfiguredError,
    InvalidCategoryError,
    InvalidJobNameError,
    InvalidRoomIdError,
    InvalidTaskTransitionError,
    JobLibError,
    JobNotFoundError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    RoomLockedError,
    SchemaConflictError,
    ServerError,
    TaskNotFoundError,
    TaskWorkerMismatchError,
    TransportError,
    UnauthorizedError,
    ValidationFailedError,
    WaitTimeoutError,
    WorkerNotFoundError,
    error_for_problem,
)
from joblib_client.extension import Category, Extension
from joblib_client.manager import JobManager
from joblib_client.task import ClaimedTask

__version__ = "0.1.0"

__all__ = [
    "API_PREFIX",
    "Api",
    "ApiClient",
    "BadRequestError",
    "Category",
    "ClaimedTask",
    "ConflictError",
    "EventSource",
    "Extension",
    "ForbiddenError",
    "InternalJobNotConfiguredError",
    "InvalidCategoryError",
    "InvalidJobNameError",
    "InvalidRoomIdError",
    "InvalidTaskTransitionError",
    "JobLibError",
    "JobManager",
    "JobNotFoundError",
    "MethodNotAllowedError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RoomLockedError",
    "SchemaConflictError",
    "ServerError",
    "SocketClient",
    "TaskNotFoundError",
    "TaskWorkerMismatchError",
    "TransportError",
    "Tsio",
    "UnauthorizedError",
    "ValidationFailedError",
    "WaitTimeoutError",
    "WorkerNotFoundError",
    "__version__",
    "error_for_problem",
]
