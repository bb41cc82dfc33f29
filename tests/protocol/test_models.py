import json
import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from joblib_protocol import (
    PROBLEM_TYPES,
    JobNotFound,
    JobRegisterRequest,
    JobResponse,
    PaginatedResponse,
    ProblemDetail,
    TaskClaimRequest,
    TaskResponse,
    TaskUpdateRequest,
    WorkerHeartbeatRequest,
    WorkerSummary,
    problem_type_for,
)


def test_register_request_uses_schema_on_the_wire() -> None:
    body = JobRegisterRequest.model_validate(
        {"category": "modifiers", "name": "Rotate", "schema": {"type": "object"}}
    )
    assert body.schema_ == {"type": "object"}
    wire = json.loads(body.model_dump_json(by_alias=True))
    assert "schema" in wire
    assert "schema_" not in wire
    assert wire["worker_id"] is None


def test_job_response_serialises_schema_not_schema_underscore() -> None:
    job_id = uuid.uuid4()
    response = JobResponse(
        id=job_id,
        room_id="@global",
        category="modifiers",
        name="Rotate",
        full_name="@global:modifiers:Rotate",
        # The wire name; mypy's pydantic plugin only knows `schema_` here.
        schema={"a": 1},  # type: ignore[call-arg]
        workers=[],
    )
    wire = json.loads(response.model_dump_json(by_alias=True))
    assert wire["schema"] == {"a": 1}
    assert "schema_" not in wire


def test_task_response_timestamps_carry_a_timezone() -> None:
    task = TaskResponse(
        id=uuid.uuid4(),
        job_name="@global:modifiers:Rotate",
        room_id="r",
        status="pending",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        queue_position=1,
    )
    wire = json.loads(task.model_dump_json())
    assert wire["created_at"] == "2026-01-01T00:00:00Z"
    assert wire["queue_position"] == 1


def test_unknown_status_is_rejected() -> None:
    with pytest.raises(ValidationError):
        TaskUpdateRequest.model_validate({"status": "exploded"})


def test_paginated_response_is_generic() -> None:
    page = PaginatedResponse[WorkerSummary].model_validate(
        {
            "items": [
                {
                    "id": str(uuid.uuid4()),
                    "last_heartbeat": "2026-01-01T00:00:00Z",
                    "job_count": 2,
                }
            ],
            "total": 1,
            "limit": 50,
            "offset": 0,
        }
    )
    assert isinstance(page.items[0], WorkerSummary)


def test_problem_types_have_kebab_uris_and_round_trip() -> None:
    for uri, problem in PROBLEM_TYPES.items():
        assert uri == f"/v1/problems/{problem.slug}"
        assert problem.slug == problem.slug.lower()
        assert " " not in problem.slug
        assert problem_type_for(uri) is problem
        assert problem.__doc__
    doc = JobNotFound.document("no job @global:modifiers:Nope")
    assert doc.model_dump(exclude_none=True) == {
        "type": "/v1/problems/job-not-found",
        "title": "Job not found",
        "status": 404,
        "detail": "no job @global:modifiers:Nope",
    }


def test_problem_detail_keeps_extension_members() -> None:
    doc = ProblemDetail.model_validate(
        {
            "type": "/v1/problems/validation-error",
            "title": "t",
            "status": 422,
            "errors": [{"loc": ["body"]}],
        }
    )
    assert doc.model_dump()["errors"] == [{"loc": ["body"]}]


def test_protocol_problem_types_are_all_there() -> None:
    slugs = {p.slug: p.status for p in PROBLEM_TYPES.values()}
    assert {
        "job-not-found": 404,
        "schema-conflict": 409,
        "invalid-category": 400,
        "worker-not-found": 404,
        "task-not-found": 404,
        "invalid-task-transition": 409,
        "invalid-room-id": 400,
        "forbidden": 403,
        "internal-job-not-configured": 503,
        "unauthorized": 401,
        "validation-error": 422,
        "payload-too-large": 413,
        "request-timeout": 408,
        "database-unavailable": 503,
    }.items() <= slugs.items()


def test_a_claim_request_id_is_optional_and_at_most_64_characters() -> None:
    worker_id = uuid.uuid4()
    assert TaskClaimRequest(worker_id=worker_id).request_id is None
    assert TaskClaimRequest(worker_id=worker_id, request_id="r" * 64).request_id
    for bad in ("", "r" * 65):
        with pytest.raises(ValidationError):
            TaskClaimRequest(worker_id=worker_id, request_id=bad)


def test_a_heartbeat_body_may_say_nothing_or_list_the_held_tasks() -> None:
    assert WorkerHeartbeatRequest().tasks is None
    held = [uuid.uuid4()]
    assert WorkerHeartbeatRequest.model_validate({"tasks": held}).tasks == held
    assert WorkerHeartbeatRequest.model_validate({"tasks": []}).tasks == []
    with pytest.raises(ValidationError):
        WorkerHeartbeatRequest.model_validate({"tasks": ["not-a-uuid"]})
