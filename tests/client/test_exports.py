"""The public surface of joblib_client is what we mean it to be."""

import joblib_client

EXPECTED = {
    "__version__", "API_PREFIX",
    # the manager and what it is built from
    "JobManager", "Extension", "Category", "ClaimedTask",
    # the task a job's code runs for
    "current_task", "TaskContext",
    "Api", "ApiClient", "Tsio", "EventSource", "SocketClient",
    # exceptions
    "JobLibError", "TransportError", "TransportFailure", "WaitTimeoutError",
    "error_for_problem",
    "TaskFailedError", "TaskCancelledError",
    "BadRequestError", "InvalidCategoryError", "InvalidJobNameError",
    "InvalidRoomIdError", "UnauthorizedError", "ForbiddenError", "NotFoundError",
    "JobNotFoundError", "WorkerNotFoundError", "TaskNotFoundError",
    "MethodNotAllowedError", "ConflictError", "SchemaConflictError",
    "InvalidTaskTransitionError", "TaskWorkerMismatchError", "PayloadTooLargeError",
    "ValidationFailedError", "RoomLockedError",
    "InvalidPayloadError", "InvalidSchemaError", "TaskNotRunningError",
    "ServerError", "InternalJobNotConfiguredError",
    "RequestTimeoutError", "DatabaseUnavailableError",
    # providers
    "Provider", "ProviderResult", "ProviderError", "ProviderFailedError",
    "ProviderNotFoundError", "ProviderTimeoutError",
}  # fmt: skip


def test_export_list_is_what_we_mean() -> None:
    assert set(joblib_client.__all__) == EXPECTED
    assert len(joblib_client.__all__) == len(EXPECTED), "duplicate in __all__"


def test_export_list_is_sorted_and_complete() -> None:
    assert joblib_client.__all__ == sorted(joblib_client.__all__)
    for name in joblib_client.__all__:
        assert hasattr(joblib_client, name), name


def test_every_exception_derives_from_the_one_base() -> None:
    for name in joblib_client.__all__:
        value = getattr(joblib_client, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, joblib_client.JobLibError), name
