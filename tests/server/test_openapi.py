"""The OpenAPI document: valid, complete, and true to what the server answers."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from joblib_server import Database, JobLib, TokenAuth
from tests.support.rest import ClientFactory, register, submit
from tests.support.tokens import ALICE, TOKENS, bearer

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
    check(await alice.get("/rooms"), "/rooms")
    check(await alice.get("/rooms", params={"offset": 10**6}), "/rooms")

    task = await submit(bob, job_name)
    submit_path = "/rooms/{room_id}/tasks/{full_name}"
    check(await bob.post(f"/rooms/room1/tasks/{job_name}", json={}), submit_path)
    check(
        await bob.post(f"/rooms/room1/tasks/{job_name}", content=b"x" * 2**21),
        submit_path,
    )
    batch_path = "/rooms/{room_id}/tasks/{full_name}/batch"
    batch = f"/rooms/room1/tasks/{job_name}/batch"
    check(await bob.post(batch, json={"payloads": [{}, {"angle": 1}]}), batch_path)
    check(await bob.post(batch, json={"payloads": [{"angle": "x"}]}), batch_path)
    check(await bob.post(batch, json={"payloads": []}), batch_path)
    check(await bob.post(batch, content=b"x" * 2**25), batch_path)
    check(await bob.post("/rooms/room1/tasks/room1:x:y/batch", json={}), batch_path)
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
    progress_path = "/tasks/{task_id}/progress"
    progress = f"/tasks/{task['id']}/progress"
    check(await alice.put(progress, json={"current": 1}), progress_path)  # claimed
    check(
        await alice.patch(f"/tasks/{task['id']}", json={"status": "running"}), task_path
    )
    check(await alice.put(progress, json={"current": 2, "total": 4}), progress_path)
    check(await bob.put(progress, json={"current": 3}), progress_path)
    check(await alice.put(progress, json={"current": -1}), progress_path)
    check(await alice.put(f"/tasks/{uuid.uuid4()}/progress", json={"current": 1}),
          progress_path)  # fmt: skip
    too_large = {"status": "completed", "result": "x" * 2**20}
    check(await alice.patch(f"/tasks/{task['id']}", json=too_large), task_path)
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


_NO_BODY = object()


def _path_values(template: str, path: str) -> dict[str, str]:
    """The path parameters of `path` (not percent-encoded) under `template`."""
    names = re.findall(r"\{(\w+)\}", template)
    pattern = re.escape(template)
    for name in names:
        pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>[^/]+)")
    match = re.fullmatch(pattern, path)
    assert match is not None, (template, path)
    return match.groupdict()


def _accepts(schema: dict[str, Any], document: dict[str, Any], value: Any) -> bool:
    full = {**schema, "components": document["components"]}
    validator = Draft202012Validator(
        full, format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    return validator.is_valid(value)


def document_accepts(
    document: dict[str, Any],
    method: str,
    template: str,
    path: str,
    *,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    body: Any = _NO_BODY,
) -> bool:
    """Whether the document's parameter and body schemas take this request."""
    operation = document["paths"][template][method]
    given = {
        "path": _path_values(template, path),
        "query": params or {},
        "header": {k.lower(): v for k, v in (headers or {}).items()},
    }
    for parameter in operation["parameters"]:
        where = given[parameter["in"]]
        name = parameter["name"]
        raw = where.get(name.lower() if parameter["in"] == "header" else name)
        if raw is None:
            if parameter.get("required"):
                return False
            continue
        schema = parameter["schema"]
        value: Any = raw
        if schema.get("type") == "integer":
            try:
                value = int(raw)
            except ValueError:
                return False
        if not _accepts(schema, document, value):
            return False
    if body is not _NO_BODY:
        [(_, spec)] = operation["requestBody"]["content"].items()
        if not _accepts(spec["schema"], document, body):
            return False
    return True


@dataclass
class Case:
    """A request, and whether its shape is one the server takes."""

    method: str
    template: str
    path: str
    valid: bool
    params: dict[str, str] | None = None
    headers: dict[str, str] | None = None
    body: Any = _NO_BODY


JOB = "room1:modifiers:Rotate"
SUBMIT = "/rooms/{room_id}/tasks/{full_name}"
BATCH = "/rooms/{room_id}/tasks/{full_name}/batch"
JOBS = "/rooms/{room_id}/jobs"
TASKS = "/rooms/{room_id}/tasks"
REGISTER = {"category": "modifiers", "name": "Rotate"}
KEY = "Idempotency-Key"
PROGRESS = "/tasks/{task_id}/progress"
CASES = [
    Case("get", TASKS, "/rooms/room1/tasks", True, {"offset": "10000"}),
    Case("get", TASKS, "/rooms/room1/tasks", False, {"offset": "10001"}),
    Case("get", TASKS, "/rooms/room1/tasks", False, {"offset": str(2**31)}),
    Case("get", TASKS, "/rooms/room1/tasks", False, {"offset": "-1"}),
    Case("get", TASKS, "/rooms/room1/tasks", True, {"limit": "500"}),
    Case("get", TASKS, "/rooms/room1/tasks", False, {"limit": "501"}),
    Case("get", TASKS, "/rooms/room1/tasks", False, {"status": "done"}),
    Case("get", JOBS, "/rooms/@global/jobs", True),
    Case("get", JOBS, "/rooms/@elsewhere/jobs", False),
    Case("get", JOBS, "/rooms/a:b/jobs", False),
    Case("get", JOBS, "/rooms/tab\there/jobs", False),
    Case("get", JOBS, f"/rooms/{'x' * 255}/jobs", True),
    Case("get", JOBS, f"/rooms/{'x' * 256}/jobs", False),
    Case("get", JOBS, "/rooms/zimmer-ü/jobs", True),
    Case("put", JOBS, "/rooms/room1/jobs", True, body=REGISTER),
    Case("put", JOBS, "/rooms/room1/jobs", False, body={**REGISTER, "category": "x"}),
    Case("put", JOBS, "/rooms/room1/jobs", False, body={**REGISTER, "name": "a:b"}),
    Case("put", JOBS, "/rooms/room1/jobs", False, body={**REGISTER, "name": ""}),
    Case("put", JOBS, "/rooms/room1/jobs", False, body={**REGISTER, "name": "x" * 256}),
    Case("put", JOBS, "/rooms/room1/jobs", False, body={**REGISTER, "name": "a\x7f"}),
    Case("post", SUBMIT, f"/rooms/room1/tasks/{JOB}", True, body={}),
    Case("post", SUBMIT, "/rooms/room1/tasks/room1:modifiers", False, body={}),
    Case("post", SUBMIT, "/rooms/room1/tasks/a:b:c:d", False, body={}),
    Case("post", SUBMIT, f"/rooms/room1/tasks/{JOB}", False, body={"payload": []}),
    *(
        Case("post", SUBMIT, f"/rooms/room1/tasks/{JOB}", bool(ok), None, {KEY: k}, {})
        for k, ok in [("k", 1), ('"k"', 1), ('""', 0), ("k" * 256, 0)]
    ),
    *(
        Case("post", BATCH, f"/rooms/room1/tasks/{JOB}/batch", valid, body=body)
        for body, valid in [
            ({"payloads": [{}]}, True),
            ({"payloads": [{}] * 1000, "timeout_seconds": 1}, True),
            ({"payloads": []}, False),
            ({"payloads": [{}] * 1001}, False),
            ({"payloads": [[]]}, False),
            ({}, False),
        ]
    ),
    Case("patch", "/tasks/{task_id}", "/tasks/{task}", False,
         body={"status": "cancelled", "error": "a\x00b"}),
    Case("patch", "/tasks/{task_id}", "/tasks/{task}", True,
         body={"status": "cancelled", "error": "ab"}),
    *(
        Case("put", PROGRESS, "/tasks/{task}/progress", valid, body=body)
        for body, valid in [
            ({"current": 1, "total": 2, "message": "m" * 1000}, True),
            ({}, False),
            ({"current": -1}, False),
            ({"current": 1, "total": 0}, False),
            ({"current": 1, "message": "m" * 1001}, False),
            ({"current": 1, "percent": 50}, False),
        ]
    ),
]  # fmt: skip

REFUSALS = {400, 404, 422}
"""How the server refuses a request's shape: a bad name (400), a job name that
cannot be one (404, as for an unknown job), a bad value (422)."""


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.method} {c.path[:40]}")
async def test_the_document_refuses_what_the_server_refuses(
    document: dict[str, Any],
    alice: httpx.AsyncClient,
    case: Case,
) -> None:
    await register(alice)
    task = await submit(alice, JOB)
    path = case.path.replace("{task}", task["id"])
    documented = document_accepts(
        document,
        case.method,
        case.template,
        path,
        params=case.params,
        headers=case.headers,
        body=case.body,
    )
    assert documented == case.valid
    answer = await alice.request(
        case.method.upper(),
        quote(path, safe="/:@"),
        params=case.params,
        headers=case.headers,
        json=None if case.body is _NO_BODY else case.body,
    )
    refused = answer.status_code in REFUSALS
    assert refused == (not case.valid), answer.text


async def test_a_503_for_an_unusable_database_matches_the_document(
    document: dict[str, Any],
) -> None:
    broken = JobLib(
        database=Database.from_url("sqlite:////nonexistent/joblib.db"),
        auth=TokenAuth(TOKENS),
    )
    app = Starlette(routes=[Mount("/v1/joblib", app=broken.asgi_app())])
    conform = Conformance(document)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver/v1/joblib",
        headers=bearer(ALICE),
    ) as client:
        conform.check(await client.get("/workers"), "/workers")
        conform.check(await client.post("/workers"), "/workers")
    assert {status for *_, status in conform.checked} == {503}
    await broken.database.dispose()
