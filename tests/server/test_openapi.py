"""The OpenAPI document: valid, complete, and true to what the server answers."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from starlette.routing import Route

from joblib_server import JobLib
from tests.support.rest import ClientFactory, register, submit

pytestmark = pytest.mark.anyio

BODY_METHODS = {"put", "post", "patch"}


@pytest.fixture
async def document(alice: httpx.AsyncClient) -> dict[str, Any]:
    answer = await alice.get("/openapi.json")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    result: dict[str, Any] = answer.json()
    return result


def _template(path: str) -> str:
    return re.sub(r"\{(\w+)(:\w+)?\}", r"{\1}", path)


async def test_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)
    assert document["openapi"].startswith("3.1")
    assert document["servers"] == [{"url": "/v1/joblib"}]


async def test_document_lists_exactly_the_served_routes(
    document: dict[str, Any], joblib: JobLib
) -> None:
    routes = [route for route in joblib.routes if isinstance(route, Route)]
    served = {
        (method.lower(), _template(route.path))
        for route in routes
        for method in route.methods or ()
        if method != "HEAD" and route.path != "/openapi.json"
    }
    documented = {
        (method, path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    assert documented == served


async def test_every_operation_documents_its_problems(document: dict[str, Any]) -> None:
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            assert {"401", "422"} <= codes, (method, path)
            if "requestBody" in operation:
                assert "413" in codes, (method, path)
            for code, response in operation["responses"].items():
                if code.startswith(("4", "5")):
                    assert set(response["content"]) == {"application/problem+json"}
            assert operation["security"] == [{"bearer": []}]


async def test_only_the_heartbeat_may_leave_its_body_out(
    document: dict[str, Any],
) -> None:
    optional = {
        (method, path)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if "requestBody" in operation and not operation["requestBody"]["required"]
    }
    assert optional == {("patch", "/workers/{worker_id}")}


class Conformance:
    """Checks answers against the document's schema for their route and status."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.checked: set[tuple[str, str, int]] = set()

    def check(self, answer: httpx.Response, template: str) -> None:
        method = answer.request.method.lower()
        operation = self.document["paths"][template][method]
        responses = operation["responses"]
        assert str(answer.status_code) in responses, (method, template, answer.text)
        self.checked.add((method, template, answer.status_code))
        content = responses[str(answer.status_code)].get("content")
        if content is None:
            assert answer.content == b""
            return
        [(media_type, spec)] = content.items()
        assert answer.headers["content-type"] == media_type
        schema = {**spec["schema"], "components": self.document["components"]}
        Draft202012Validator(
            schema, format_checker=Draft202012Validator.FORMAT_CHECKER
        ).validate(answer.json())


async def test_answers_match_the_document(
    document: dict[str, Any],
    alice: httpx.AsyncClient,
    bob: httpx.AsyncClient,
) -> None:
    conform = Conformance(document)
    check = conform.check
    job = await register(alice)
    job_name, worker_id = job["full_name"], job["worker_id"]
    body = {"category": "modifiers", "name": "Rotate", "worker_id": worker_id}
    check(await alice.put("/rooms/room1/jobs", json=body), "/rooms/{room_id}/jobs")
    body["schema"] = {"type": "string"}
    check(await alice.put("/rooms/room1/jobs", json=body), "/rooms/{room_id}/jobs")
    check(await alice.put("/rooms/a:b/jobs", json=body), "/rooms/{room_id}/jobs")
    check(await alice.post("/workers"), "/workers")
    check(await alice.get("/workers"), "/workers")
    worker_path = "/workers/{worker_id}"
    check(await alice.patch(f"/workers/{worker_id}"), worker_path)
    check(await alice.patch(f"/workers/{worker_id}", json={"tasks": []}), worker_path)
    check(await alice.patch(f"/workers/{worker_id}", json={"tasks": 1}), worker_path)
    check(await bob.patch(f"/workers/{worker_id}"), worker_path)
    check(await bob.delete(f"/workers/{uuid.uuid4()}"), worker_path)
    check(await bob.delete("/workers/nope"), worker_path)
    check(await alice.get("/rooms/room1/jobs"), "/rooms/{room_id}/jobs")
    job_path = "/rooms/{room_id}/jobs/{full_name}"
    check(await alice.get(f"/rooms/room1/jobs/{job_name}"), job_path)
    check(await alice.get("/rooms/room2/jobs/room1:x:y"), job_path)
    check(await alice.get("/rooms/room1/workers"), "/rooms/{room_id}/workers")

    task = await submit(bob, job_name)
    submit_path = "/rooms/{room_id}/tasks/{full_name}"
    check(await bob.post(f"/rooms/room1/tasks/{job_name}", json={}), submit_path)
    check(
        await bob.post(f"/rooms/room1/tasks/{job_name}", content=b"x" * 2**21),
        submit_path,
    )
    check(await bob.get("/rooms/room1/tasks"), "/rooms/{room_id}/tasks")
    check(
        await bob.get(f"/rooms/room1/jobs/{job_name}/tasks", params={"limit": -1}),
        "/rooms/{room_id}/jobs/{full_name}/tasks",
    )
    check(
        await bob.get(f"/rooms/room1/jobs/{job_name}/tasks"),
        "/rooms/{room_id}/jobs/{full_name}/tasks",
    )
    claim_body = {"worker_id": worker_id}
    check(await alice.post("/tasks/claim", json=claim_body), "/tasks/claim")
    check(await bob.post("/tasks/claim", json=claim_body), "/tasks/claim")
    task_path = "/tasks/{task_id}"
    check(await bob.get(f"/tasks/{task['id']}"), task_path)
    check(await bob.get(f"/tasks/{uuid.uuid4()}"), task_path)
    check(await bob.patch(f"/tasks/{task['id']}", json={"status": "failed"}), task_path)
    check(
        await alice.patch(f"/tasks/{task['id']}", json={"status": "pending"}), task_path
    )
    check(
        await alice.patch(f"/tasks/{task['id']}", json={"status": "running"}), task_path
    )
    fenced = {"status": "completed", "worker_id": str(uuid.uuid4())}
    check(await alice.patch(f"/tasks/{task['id']}", json=fenced), task_path)
    spare = (await alice.post("/workers")).json()["id"]
    receipt = {"Prefer": "return=representation"}
    check(await alice.delete(f"/workers/{spare}", headers=receipt), worker_path)
    check(await alice.delete(f"/workers/{worker_id}"), worker_path)
    check(await alice.post("/tasks/claim", json=claim_body), "/tasks/claim")
    check(await alice.patch(f"/tasks/{task['id']}", json={}), task_path)
    statuses = {status for _, _, status in conform.checked}
    assert statuses >= {200, 201, 202, 204, 400, 403, 404, 409, 413, 422}


async def test_document_needs_an_identity_like_every_route(
    make_client: ClientFactory,
) -> None:
    answer = await make_client(None).get("/openapi.json")
    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"
