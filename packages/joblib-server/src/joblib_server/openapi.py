"""The OpenAPI 3.1 description of the REST routes, built from the protocol models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from joblib_protocol import (
    MAX_PAGE_LIMIT,
    PROBLEM_CONTENT_TYPE,
    JobRegisterRequest,
    JobResponse,
    JobSummary,
    PaginatedResponse,
    ProblemDetail,
    TaskClaimRequest,
    TaskClaimResponse,
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
from joblib_server.settings import Settings

_REF = "#/components/schemas/{model}"

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
        "Submit a task",
        TaskSubmitRequest,
        202,
        TaskResponse,
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
    ("delete", "/workers/{worker_id}"): "return=representation",
}

_UUID_PARAMS = {"worker_id", "task_id"}
_LIST_PATHS = {
    "/workers",
    "/rooms/{room_id}/jobs",
    "/rooms/{room_id}/jobs/{full_name}/tasks",
    "/rooms/{room_id}/workers",
    "/rooms/{room_id}/tasks",
}


def _parameters(path: str, method: str) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    for name in ("room_id", "full_name", "worker_id", "task_id"):
        if "{" + name + "}" in path:
            schema = {"type": "string"}
            if name in _UUID_PARAMS:
                schema["format"] = "uuid"
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
                "schema": {"type": "integer", "minimum": 0},
            },
        ]
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
        models.update(m for m in (body, answer) if m is not None)
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
            "parameters": _parameters(path, method),
            "responses": {},
        }
        if body is not None:
            operation["requestBody"] = {
                "required": (method, path) not in _OPTIONAL_BODIES,
                "content": {"application/json": {"schema": ref(body, "validation")}},
            }
        success: dict[str, Any] = {"description": summary}
        if answer is not None:
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
        too_large = (413,) if body is not None else ()
        for code in sorted({401, 422, *too_large, *errors}):
            operation["responses"][str(code)] = {
                "description": "problem document (RFC 9457)",
                "content": problem,
            }
        paths.setdefault(path, {})[method] = operation
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


def _requests() -> set[Any]:
    return {body for _m, _p, _s, body, *_ in _OPERATIONS if body is not None}
