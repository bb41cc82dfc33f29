"""Problem documents from the server become the client's exceptions."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from joblib_client import (
    ForbiddenError,
    InvalidCategoryError,
    InvalidTaskTransitionError,
    JobLibError,
    NotFoundError,
    RequestTimeoutError,
    RoomLockedError,
    SchemaConflictError,
    ServerError,
    TaskNotFoundError,
    TransportError,
    UnauthorizedError,
    ValidationFailedError,
    WorkerNotFoundError,
    error_for_problem,
)
from joblib_client._http import Rest, error_from_response
from joblib_client.exceptions import error_class_for
from joblib_protocol import PROBLEM_TYPES, InvalidTaskTransition
from tests.client.conftest import InProcessApi, ManagerFactory, RecordingTsio
from tests.client.extensions import Rotate
from tests.support.tokens import ADMIN, ALICE


@pytest.mark.parametrize("type_uri", sorted(PROBLEM_TYPES))
def test_every_problem_type_has_its_own_exception(type_uri: str) -> None:
    problem_type = PROBLEM_TYPES[type_uri]
    cls = error_class_for(type_uri, problem_type.status)
    assert cls.problem_type is problem_type
    assert issubclass(cls, JobLibError)


def test_an_exception_carries_the_problem() -> None:
    document = InvalidTaskTransition.document("a completed task cannot become running")

    error = error_for_problem(document.model_dump())

    assert isinstance(error, InvalidTaskTransitionError)
    assert error.type == "/v1/problems/invalid-task-transition"
    assert error.status == 409
    assert error.detail == "a completed task cannot become running"
    assert error.problem == document
    assert str(error) == (
        "409 Invalid task transition: a completed task cannot become running"
    )


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (404, NotFoundError),
        (403, ForbiddenError),
        (408, RequestTimeoutError),
        (423, RoomLockedError),
        (502, ServerError),
        (418, JobLibError),
    ],
)
def test_unknown_problem_types_map_by_status(
    status: int, expected: type[JobLibError]
) -> None:
    error = error_for_problem({"type": "about:blank", "title": "x", "status": status})
    assert type(error) is expected
    assert error.status == status


def test_a_malformed_problem_is_still_a_joblib_error() -> None:
    error = error_for_problem({"detail": "no type"})
    assert type(error) is JobLibError
    assert error.problem is None


def test_an_answer_that_is_not_a_problem_keeps_status_and_text() -> None:
    response = httpx.Response(502, text="Bad gateway from the proxy")

    error = error_from_response(response)

    assert isinstance(error, ServerError)
    assert error.status == 502
    assert error.detail == "Bad gateway from the proxy"


CASES: list[tuple[str, str, str, Any, type[JobLibError], int]] = [
    (ALICE, "PATCH", f"/workers/{uuid.uuid4()}", None, WorkerNotFoundError, 404),
    (ALICE, "GET", f"/tasks/{uuid.uuid4()}", None, TaskNotFoundError, 404),
    (ALICE, "GET", "/no/such/route", None, NotFoundError, 404),
    (
        ALICE,
        "PUT",
        "/rooms/@global/jobs",
        {"category": "modifiers", "name": "Rotate"},
        ForbiddenError,
        403,
    ),
    (ALICE, "PUT", "/rooms/r/jobs", {"category": 5}, ValidationFailedError, 422),
    (
        ALICE,
        "PUT",
        "/rooms/r/jobs",
        {"category": "nope", "name": "Rotate"},
        InvalidCategoryError,
        400,
    ),
    ("wrong-token", "GET", "/workers", None, UnauthorizedError, 401),
]


@pytest.mark.parametrize(
    ("token", "method", "path", "body", "expected", "status"),
    CASES,
    ids=[case[4].__name__ for case in CASES],
)
def test_server_problems_raise_the_matching_exception(
    server: TestClient,
    token: str,
    method: str,
    path: str,
    body: Any,
    expected: type[JobLibError],
    status: int,
) -> None:
    rest = Rest(InProcessApi(server, token))

    with pytest.raises(expected) as caught:
        rest.request(method, path, json=body)

    assert type(caught.value) is expected
    assert caught.value.status == status
    assert caught.value.type is not None
    assert caught.value.type.startswith("/v1/problems/")


def test_validation_errors_list_the_fields(server: TestClient) -> None:
    rest = Rest(InProcessApi(server, ALICE))
    with pytest.raises(ValidationFailedError) as caught:
        rest.request("PUT", "/rooms/r/jobs", json={"category": 5})
    assert caught.value.errors
    assert all("loc" in error for error in caught.value.errors)


def test_a_different_schema_is_a_schema_conflict(
    make_manager: ManagerFactory, server: TestClient
) -> None:
    make_manager(ALICE).register(Rotate, room="room1")
    rest = Rest(InProcessApi(server, ALICE))
    body = {"category": "modifiers", "name": "Rotate", "schema": {"type": "object"}}

    with pytest.raises(SchemaConflictError) as caught:
        rest.request("PUT", "/rooms/room1/jobs", json=body)

    assert caught.value.status == 409


def test_a_refused_join_raises_the_problem_it_carries(
    make_manager: ManagerFactory,
) -> None:
    class RefusingTsio(RecordingTsio):
        def emit(self, event: Any) -> dict[str, Any]:
            super().emit(event)
            error = {"type": "/v1/problems/forbidden", "title": "Forbidden"}
            return {"ok": False, "error": {**error, "status": 403}}

    manager = make_manager(ADMIN, RefusingTsio())

    with pytest.raises(ForbiddenError):
        manager.register(Rotate)


def test_an_exception_from_a_request_names_it_first() -> None:
    document = InvalidTaskTransition.document("a completed task cannot become running")
    url = "http://joblib.example/v1/joblib/tasks/1"

    error = error_for_problem(document.model_dump(), method="PATCH", url=url)

    assert isinstance(error, InvalidTaskTransitionError)
    assert (error.method, error.url) == ("PATCH", url)
    assert error.detail == "a completed task cannot become running"
    assert str(error) == (
        f"PATCH {url}: 409 invalid-task-transition: "
        "a completed task cannot become running"
    )


def test_a_transport_error_keeps_its_old_message_and_adds_the_reason() -> None:
    error = TransportError("no acknowledgement of join_room in time")

    assert str(error) == "no acknowledgement of join_room in time"
    assert error.reason is None
    assert (error.method, error.url, error.status) == (None, None, None)


def test_the_summary_names_the_problem_type() -> None:
    error = error_for_problem(
        {"type": "/v1/problems/forbidden", "title": "Forbidden", "status": 403}
    )

    assert error.summary() == "403 forbidden"
    assert str(error) == "403 Forbidden"  # as before, without a request
