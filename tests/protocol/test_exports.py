import joblib_protocol

EXPECTED = {
    # constants
    "API_PREFIX", "CLIENT_EVENTS", "DEFAULT_CATEGORIES", "DEFAULT_PAGE_LIMIT",
    "GLOBAL_ROOM", "INTERNAL_ROOM", "MAX_PAGE_LIMIT", "PROBLEM_CONTENT_TYPE",
    "PROBLEM_TYPES", "RESERVED_ROOMS", "SERVER_EVENTS", "TERMINAL_STATUSES",
    "VALID_TRANSITIONS", "__version__",
    # events
    "Emission", "Event", "JobsInvalidate", "JoinJobRoom", "JoinRoom", "LeaveJobRoom",
    "LeaveRoom", "TaskAvailable", "TaskStatusEvent", "job_channel", "room_channel",
    # REST models
    "JobRegisterRequest", "JobResponse", "JobSummary", "PaginatedResponse",
    "TaskClaimRequest", "TaskClaimResponse", "TaskResponse", "TaskStatus",
    "TaskSubmitRequest", "TaskUpdateRequest", "WorkerResponse", "WorkerSummary",
    # disconnects (ours)
    "DisconnectAction", "DisconnectPolicy", "DisconnectPolicyRequest", "ErrorCode",
    "WorkerCleanupResponse",
    # tasks that come back (ours)
    "WorkerHeartbeatRequest",
    # tasks as calls (ours): results, progress, deadlines, cancellation
    "CancelReason", "MAX_PROGRESS_MESSAGE", "MAX_TIMEOUT_SECONDS", "TaskCancelled",
    "TaskProgress", "TaskProgressEvent", "TaskProgressRequest", "TimeoutSeconds",
    "worker_channel", "InvalidPayload", "InvalidSchema", "TaskNotRunning",
    # idle workers (ours, issue 18 part 2): the join's answer
    "JoinAck",
    # batch submit (ours, issue 18 part 4)
    "MAX_BATCH_SIZE", "TaskBatchRequest", "TaskBatchResponse",
    # the dashboard (ours): the rooms an identity may read
    "RoomSummary",
    # providers: server-dispatched reads, cached and coalesced
    "DEFAULT_PROVIDER_CONTENT_TYPE", "JoinProviderRoom", "LeaveProviderRoom",
    "MAX_PROVIDER_ERROR", "ProviderErrorRequest", "ProviderFailed",
    "ProviderNotFound", "ProviderRegisterRequest", "ProviderRequest",
    "ProviderResponse", "ProviderResultReady", "ProviderTimeout",
    "ProvidersInvalidate", "REQUEST_HASH_HEADER", "canonical_params",
    "provider_channel", "request_hash", "typed_params",
    # naming and states
    "JobFullName", "format_job_name", "is_terminal", "is_valid_room_id",
    "is_valid_transition", "join_job_name", "json_schemas", "parse_job_name",
    "validate_job_name", "validate_room_id",
    # problems
    "Forbidden", "InternalError", "InternalJobNotConfigured", "InvalidCategory",
    "InvalidJobName", "InvalidRoomId", "InvalidTaskTransition", "JobNotFound",
    "MethodNotAllowed", "NotFound", "PayloadTooLarge", "ProblemDetail", "ProblemType",
    "SchemaConflict", "TaskNotFound", "TaskWorkerMismatch", "Unauthorized",
    "ValidationFailed", "RoomLocked", "RequestTimeout", "DatabaseUnavailable",
    "WorkerNotFound", "problem_type_for",
}  # fmt: skip


def test_export_list_is_what_we_mean() -> None:
    assert set(joblib_protocol.__all__) == EXPECTED
    assert len(joblib_protocol.__all__) == len(EXPECTED), "duplicate in __all__"


def test_every_export_exists() -> None:
    for name in joblib_protocol.__all__:
        assert hasattr(joblib_protocol, name), name


def test_the_protocol_imports_nothing_but_pydantic() -> None:
    import subprocess
    import sys

    code = (
        "import sys, joblib_protocol; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'httpx','starlette','sqlalchemy','sqlmodel','socketio','anyio'}); "
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""
