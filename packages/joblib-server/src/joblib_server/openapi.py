"""The OpenAPI 3.1 description of the REST routes, built from the protocol models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from joblib_protocol import (
    MAX_PAGE_LIMIT,
    PROBLEM_CONTENT_TYPE,
    REQUEST_HASH_HEADER,
    RESERVED_ROOMS,
    JobRegisterRequest,
    JobResponse,
    JobSummary,
    PaginatedResponse,
    ProblemDetail,
    ProviderErrorRequest,
    ProviderRegisterRequest,
    ProviderResponse,
    RoomSummary,
    TaskBatchRequest,
    TaskBatchResponse,
    TaskClaimRequest,
    TaskClaimResponse,
    TaskProgressRequest,
    TaskResponse,
    TaskStatus,
    TaskSubmitRequest,
    TaskUpdateRequest,
    WorkerCleanupResponse,
    WorkerHeartbeatRequest,
    WorkerResponse,
    WorkerSummary,
    __version__,
)
from joblib_protocol.naming import MAX_PART_LENGTH
from joblib_server.batches import BODY_FACTOR
from joblib_server.settings import Settings

_REF = "#/components/schemas/{model}"

RAW = "raw"
"""In `_OPERATIONS`, a body or answer of raw bytes instead of a model."""

# (method, path, summary, request body, success status(es), success model, error
# statuses); 401 and 422 go with every operation, 413 with every request body.
_OPERATIONS: list[
    tuple[str, str, str, Any, int | tuple[int, ...], Any, tuple[int, ...]]
] = [
    ("post", "/workers", "Create a worker", None, 201, WorkerResponse, ()),
    (
        "get",
        "/workers",
        "List workers",
        None,
        200,
        PaginatedResponse[WorkerSummary],
        (),
    ),
    (
        "patch",
        "/workers/{worker_id}",
        "Heartbeat (a body listing the worker's tasks releases those it lost)",
        WorkerHeartbeatRequest,
        200,
        WorkerResponse,
        (403, 404),
    ),
    (
        "delete",
        "/workers/{worker_id}",
        "Remove a worker (with Prefer: return=representation, say what was done)",
        None,
        204,
        None,
        (403, 404),
    ),
    (
        "get",
        "/rooms",
        "List the rooms with jobs or tasks the caller may read, by room id",
        None,
        200,
        PaginatedResponse[RoomSummary],
        (),
    ),
    (
        "put",
        "/rooms/{room_id}/jobs",
        "Register a job (201 new, 200 already registered)",
        JobRegisterRequest,
        (201, 200),
        JobResponse,
        (400, 403, 404, 409, 423),
    ),
    (
        "get",
        "/rooms/{room_id}/jobs",
        "List the jobs visible from a room",
        None,
        200,
        PaginatedResponse[JobSummary],
        (400, 403),
    ),
    (
        "get",
        "/rooms/{room_id}/jobs/{full_name}",
        "Get a job",
        None,
        200,
        JobResponse,
        (400, 403, 404),
    ),
    (
        "get",
        "/rooms/{room_id}/jobs/{full_name}/tasks",
        "List a job's tasks submitted in a room",
        None,
        200,
        PaginatedResponse[TaskResponse],
        (400, 403, 404),
    ),
    (
        "get",
        "/rooms/{room_id}/workers",
        "List the workers serving a room's jobs",
        None,
        200,
        PaginatedResponse[WorkerSummary],
        (400, 403),
    ),
    (
        "get",
        "/rooms/{room_id}/tasks",
        "List the tasks submitted in a room",
        None,
        200,
        PaginatedResponse[TaskResponse],
        (400, 403),
    ),
    (
        "post",
        "/rooms/{room_id}/tasks/{full_name}",
        "Submit a task (one of an @internal job the server runs answers claimed)",
        TaskSubmitRequest,
        202,
        TaskResponse,
        (400, 403, 404, 423, 503),
    ),
    (
        "post",
        "/rooms/{room_id}/tasks/{full_name}/batch",
        "Submit many tasks of one job, in order: all of them or, when a payload "
        "does not match the job's schema, none (no Idempotency-Key)",
        TaskBatchRequest,
        202,
        TaskBatchResponse,
        (400, 403, 404, 423, 503),
    ),
    (
        "post",
        "/tasks/claim",
        "Claim the oldest pending task of the worker's jobs"
        " (long-poll with Prefer: wait=N)",
        TaskClaimRequest,
        200,
        TaskClaimResponse,
        (403, 404),
    ),
    (
        "get",
        "/tasks/{task_id}",
        "Get a task (long-poll with Prefer: wait=N)",
        None,
        200,
        TaskResponse,
        (403, 404),
    ),
    (
        "patch",
        "/tasks/{task_id}",
        "Update a task's status",
        TaskUpdateRequest,
        200,
        TaskResponse,
        (403, 404, 409),
    ),
    (
        "put",
        "/tasks/{task_id}/progress",
        "Report a running task's progress (409 task-not-running once it is over)",
        TaskProgressRequest,
        204,
        None,
        (403, 404, 409),
    ),
    (
        "put",
        "/rooms/{room_id}/providers",
        "Register a provider (201 new, 200 updated)",
        ProviderRegisterRequest,
        (201, 200),
        ProviderResponse,
        (400, 403, 404, 423),
    ),
    (
        "get",
        "/rooms/{room_id}/providers",
        "List the providers visible from a room (its own and @global)",
        None,
        200,
        PaginatedResponse[ProviderResponse],
        (400, 403),
    ),
    (
        "get",
        "/rooms/{room_id}/providers/{full_name}",
        "Read from a provider: the result's bytes, in the provider's content type "
        "(cached, or asked of its worker and waited for with Prefer: wait=N)",
        None,
        200,
        RAW,
        (400, 403, 404, 502, 504),
    ),
    (
        "get",
        "/rooms/{room_id}/providers/{full_name}/info",
        "Get a provider",
        None,
        200,
        ProviderResponse,
        (400, 403, 404),
    ),
    (
        "delete",
        "/providers/{provider_id}",
        "Remove a provider (its owner or an admin)",
        None,
        204,
        None,
        (403, 404),
    ),
    (
        "post",
        "/providers/{provider_id}/results",
        "Upload the result of one read (raw bytes; X-Request-Hash names the read)",
        RAW,
        204,
        None,
        (403, 404),
    ),
    (
        "post",
        "/providers/{provider_id}/errors",
        "Report that one read failed: its waiting readers get 502 provider-failed",
        ProviderErrorRequest,
        204,
        None,
        (403, 404),
    ),
]

# Answers an operation gives besides its usual success, when a header asks for them.
_ALSO: dict[tuple[str, str], dict[int, type[BaseModel]]] = {
    ("delete", "/workers/{worker_id}"): {200: WorkerCleanupResponse},
}

# Operations whose body may be left out (an empty body means `{}`).
_OPTIONAL_BODIES = {("patch", "/workers/{worker_id}")}

_PREFER_EXAMPLES = {
    ("get", "/tasks/{task_id}"): "wait=30",
    ("post", "/tasks/claim"): "wait=30",
    ("get", "/rooms/{room_id}/providers/{full_name}"): "wait=5",
    ("delete", "/workers/{worker_id}"): "return=representation",
}

_UUID_PARAMS = {"worker_id", "task_id", "provider_id"}

# What the server refuses, the document refuses too (joblib_protocol.naming):
# room ids and names of 1-255 characters, no control characters, no ':' or
# '/', and in a room id no '@' but for the reserved rooms. `(?![\s\S])` ends
# a pattern where `$` would let a trailing newline through in some engines.
_END = r"(?![\s\S])"
_CONTROL = r"\u0000-\u001f\u007f-\u009f"
_ROOM = (
    rf"(?:{'|'.join(sorted(RESERVED_ROOMS))}|[^@:/{_CONTROL}]{{1,{MAX_PART_LENGTH}}})"
)
_NAME = rf"[^:/{_CONTROL}]{{1,{MAX_PART_LENGTH}}}"
ROOM_ID_PATTERN = rf"^{_ROOM}{_END}"
NAME_PATTERN = rf"^{_NAME}{_END}"
FULL_NAME_PATTERN = rf"^{_ROOM}:{_NAME}:{_NAME}{_END}"
_VISIBLE = r"[\u0020-\u007e]"
IDEMPOTENCY_KEY_PATTERN = (
    rf'^(?:"{_VISIBLE}{{1,255}}"|(?!"{_VISIBLE}*"{_END}){_VISIBLE}{{1,255}}){_END}'
)
"""A key of 1-255 visible ASCII characters, bare or as a quoted string."""

_PATH_PATTERNS = {"room_id": ROOM_ID_PATTERN, "full_name": FULL_NAME_PATTERN}
_LIST_PATHS = {
    "/workers",
    "/rooms",
    "/rooms/{room_id}/jobs",
    "/rooms/{room_id}/jobs/{full_name}/tasks",
    "/rooms/{room_id}/workers",
    "/rooms/{room_id}/tasks",
    "/rooms/{room_id}/providers",
}


def _parameters(path: str, method: str, settings: Settings) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    for name in ("room_id", "full_name", "worker_id", "task_id", "provider_id"):
        if "{" + name + "}" in path:
            schema = {"type": "string"}
            if name in _UUID_PARAMS:
                schema["format"] = "uuid"
            if name in _PATH_PATTERNS:
                schema["pattern"] = _PATH_PATTERNS[name]
            params.append(
                {"name": name, "in": "path", "required": True, "schema": schema}
            )
    if method == "get" and path in _LIST_PATHS:
        params += [
            {
                "name": "limit",
                "in": "query",
                "schema": {"type": "integer", "minimum": 0, "maximum": MAX_PAGE_LIMIT},
            },
            {
                "name": "offset",
                "in": "query",
                "schema": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": settings.max_list_offset,
                },
            },
        ]
    if (method, path) == ("post", "/rooms/{room_id}/tasks/{full_name}"):
        params.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "description": "Ours: the same identity's same key within "
                f"{settings.idempotency_key_ttl_seconds:g} s answers the task the "
                "first submit made (with `Idempotent-Replayed: true`).",
                "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
            }
        )
    if (method, path) == ("post", "/providers/{provider_id}/results"):
        params.append(
            {
                "name": REQUEST_HASH_HEADER,
                "in": "header",
                "required": True,
                "description": "The read this answers: its `request_id`, the SHA-256 "
                "of its canonical parameters.",
                "schema": {"type": "string", "minLength": 1, "maxLength": 128},
            }
        )
    if method == "get" and path.endswith("/tasks"):
        params.append(
            {
                "name": "status",
                "in": "query",
                "schema": {"type": "string", "enum": [s.value for s in TaskStatus]},
            }
        )
    example = _PREFER_EXAMPLES.get((method, path))
    if example is not None:
        params.append(
            {
                "name": "Prefer",
                "in": "header",
                "schema": {"type": "string", "example": example},
            }
        )
    return params


def openapi_document(settings: Settings) -> dict[str, Any]:
    """Return the OpenAPI document of the `/v1/joblib` routes."""
    models: set[type[BaseModel]] = {ProblemDetail}
    for _m, _p, _s, body, _st, answer, _e in _OPERATIONS:
        models.update(m for m in (body, answer) if m not in (None, RAW))
    for also in _ALSO.values():
        models.update(also.values())
    ordered = sorted(models, key=lambda m: m.__name__)
    refs, definitions = models_json_schema(
        [(m, "validation" if m in _requests() else "serialization") for m in ordered],
        ref_template=_REF,
    )
    schemas = definitions.get("$defs", {})

    def ref(model: type[BaseModel], mode: str) -> dict[str, Any]:
        return refs[(model, mode)]  # type: ignore[index]

    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary, body, status, answer, errors in _OPERATIONS:
        operation: dict[str, Any] = {
            "summary": summary,
            "security": [{"bearer": []}],
            "parameters": _parameters(path, method, settings),
            "responses": {},
        }
        if body is RAW:
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "application/octet-stream": {
                        "schema": {"type": "string", "format": "binary"}
                    }
                },
            }
        elif body is not None:
            operation["requestBody"] = {
                "required": (method, path) not in _OPTIONAL_BODIES,
                "content": {"application/json": {"schema": ref(body, "validation")}},
            }
        success: dict[str, Any] = {"description": summary}
        if answer is RAW:
            # Whatever the provider registered as its content type.
            success["content"] = {"*/*": {"schema": {}}}
        elif answer is not None:
            success["content"] = {
                "application/json": {"schema": ref(answer, "serialization")}
            }
        for code in status if isinstance(status, tuple) else (status,):
            operation["responses"][str(code)] = success
        for code, model in _ALSO.get((method, path), {}).items():
            operation["responses"][str(code)] = {
                "description": summary,
                "content": {
                    "application/json": {"schema": ref(model, "serialization")}
                },
            }
        problem = {
            PROBLEM_CONTENT_TYPE: {"schema": ref(ProblemDetail, "serialization")}
        }
        # 413 and 408 for a body too large or too slow; 503 when the database
        # cannot be used (with Retry-After).
        with_body = (408, 413) if body is not None else ()
        for code in sorted({401, 422, 503, *with_body, *errors}):
            operation["responses"][str(code)] = {
                "description": "problem document (RFC 9457)",
                "content": problem,
            }
        paths.setdefault(path, {})[method] = operation
    _refuse_what_the_server_refuses(schemas, settings)
    return {
        "openapi": "3.1.0",
        "info": {"title": "joblib", "version": __version__},
        "servers": [{"url": "/v1/joblib"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _refuse_what_the_server_refuses(
    schemas: dict[str, Any], settings: Settings
) -> None:
    """Add to the request schemas the rules the server checks beyond the models."""
    register = schemas["JobRegisterRequest"]["properties"]
    register["category"]["enum"] = list(settings.allowed_categories)
    register["name"]["pattern"] = NAME_PATTERN
    provider = schemas["ProviderRegisterRequest"]["properties"]
    provider["name"]["pattern"] = NAME_PATTERN
    if settings.allowed_provider_categories is None:
        provider["category"]["pattern"] = NAME_PATTERN
    else:
        provider["category"]["enum"] = list(settings.allowed_provider_categories)
    error = schemas["TaskUpdateRequest"]["properties"]["error"]
    for choice in error["anyOf"]:
        if choice.get("type") == "string":
            choice["pattern"] = rf"^[^\u0000]*{_END}"  # PostgreSQL text holds no NUL
    payload = schemas["TaskSubmitRequest"]["properties"]["payload"]
    payload["description"] = (
        "Any JSON object: finite numbers, no lone surrogates in strings, nested "
        "at most 100 levels; the whole body at most "
        f"{settings.max_body_bytes} bytes."
    )
    batch = schemas["TaskBatchRequest"]["properties"]["payloads"]
    batch["maxItems"] = settings.max_batch_size
    batch["description"] = (
        f"One payload per task, in queue order: 1 to {settings.max_batch_size} "
        "JSON objects, each as a submit's `payload`; the whole body at most "
        f"{settings.max_body_bytes * BODY_FACTOR} bytes."
    )


def _requests() -> set[Any]:
    return {body for _m, _p, _s, body, *_ in _OPERATIONS if body not in (None, RAW)}
