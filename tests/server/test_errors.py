"""Bad input: the documented 4xx problem, never a 500, and nothing changes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from joblib_server import JobLib
from tests.support.rest import assert_problem, claimed_task, full_name, get_task, submit
from tests.support.rows import snapshot

pytestmark = pytest.mark.anyio

JOB = full_name()
DEEP = b"[" * 101 + b"]" * 101
VERY_DEEP = b"[" * 100_000 + b"]" * 100_000


@dataclass
class World:
    """A job served by alice's worker, with one task bob submitted and alice claimed."""

    worker_id: str
    task_id: str

    def path(self, template: str) -> str:
        return template.format(worker=self.worker_id, task=self.task_id, job=JOB)


@pytest.fixture
async def world(alice: httpx.AsyncClient, bob: httpx.AsyncClient) -> World:
    task_id, worker_id = await claimed_task(alice, bob)
    return World(worker_id, task_id)


@pytest.fixture
async def unchanged(joblib: JobLib, world: World) -> AsyncIterator[None]:
    """Fail the test if the database differs after it from before it."""
    before = await snapshot(joblib)
    yield
    assert await snapshot(joblib) == before


def _body(raw: bytes) -> dict[str, Any]:
    return {"content": raw, "headers": {"content-type": "application/json"}}


SUBMIT = "/rooms/room1/tasks/{job}"
REGISTER = "/rooms/room1/jobs"
TASK = "/tasks/{task}"

BAD_BODIES = [
    pytest.param("PUT", REGISTER, _body(b'{"category": '), id="truncated-json"),
    pytest.param("PUT", REGISTER, _body(b"[]"), id="array"),
    pytest.param("PUT", REGISTER, _body(b'"modifiers"'), id="string"),
    pytest.param("PUT", REGISTER, _body(b""), id="empty"),
    pytest.param("PUT", REGISTER, _body(b"\xff\xfe{}"), id="not-utf8"),
    pytest.param("PUT", REGISTER, {"json": {"name": "X"}}, id="no-category"),
    pytest.param("PUT", REGISTER, {"json": {"category": 5, "name": "X"}}, id="int"),
    pytest.param(
        "PUT",
        REGISTER,
        {"json": {"category": "modifiers", "name": "X", "schema": []}},
        id="schema-list",
    ),
    pytest.param(
        "PUT",
        REGISTER,
        {"json": {"category": "modifiers", "name": "X", "worker_id": "w1"}},
        id="worker-not-uuid",
    ),
    pytest.param(
        "PUT",
        REGISTER,
        _body(b'{"category": "modifiers", "name": "\\ud800"}'),
        id="lone-surrogate-name",
    ),
    pytest.param("POST", SUBMIT, {"json": {"payload": "x"}}, id="payload-string"),
    pytest.param("POST", SUBMIT, {"json": {"payload": [1]}}, id="payload-list"),
    pytest.param("POST", SUBMIT, _body(b'{"payload": {"x": NaN}}'), id="nan"),
    pytest.param("POST", SUBMIT, _body(b'{"payload": {"x": -Infinity}}'), id="inf"),
    pytest.param("POST", SUBMIT, _body(b'{"payload": {"x": 1e999}}'), id="overflow"),
    pytest.param(
        "POST", SUBMIT, _body(b'{"payload": {"\\udfff": 1}}'), id="surrogate-key"
    ),
    pytest.param(
        "POST", SUBMIT, _body(b'{"payload": {"x": ' + DEEP + b"}}"), id="deep"
    ),
    pytest.param(
        "POST", SUBMIT, _body(b'{"payload": {"x": ' + VERY_DEEP + b"}}"), id="deeper"
    ),
    pytest.param(
        "POST",
        SUBMIT,
        _body(b'{"payload": {"x": 1' + b"0" * 5000 + b"}}"),
        id="huge-int",
    ),
    pytest.param("POST", "/tasks/claim", {"json": {}}, id="claim-no-worker"),
    pytest.param(
        "POST", "/tasks/claim", {"json": {"worker_id": "w1"}}, id="claim-bad-uuid"
    ),
    pytest.param(
        "POST",
        "/tasks/claim",
        {"json": {"worker_id": "{worker}", "start": [1]}},
        id="claim-start-list",
    ),
    pytest.param("PATCH", TASK, {"json": {"status": "done"}}, id="unknown-status"),
    pytest.param("PATCH", TASK, {"json": {"status": 3}}, id="status-int"),
    pytest.param("PATCH", TASK, {"json": {}}, id="no-status"),
    pytest.param(
        "PATCH", TASK, {"json": {"status": "failed", "error": 5}}, id="error-int"
    ),
    pytest.param(
        "PATCH",
        TASK,
        {"json": {"status": "failed", "error": "a\x00b"}},
        id="error-nul",
    ),
    pytest.param(
        "PATCH",
        TASK,
        {"json": {"status": "running", "error": "early"}},
        id="error-not-terminal",
    ),
]


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(("method", "path", "kwargs"), BAD_BODIES)
async def test_bad_bodies_are_422(
    alice: httpx.AsyncClient,
    world: World,
    method: str,
    path: str,
    kwargs: dict[str, Any],
) -> None:
    if "json" in kwargs and kwargs["json"].get("worker_id") == "{worker}":
        kwargs = {"json": {**kwargs["json"], "worker_id": world.worker_id}}
    answer = await alice.request(method, world.path(path), **kwargs)
    body = assert_problem(answer, 422, "validation-error")
    assert body["errors"]
    assert body["detail"]


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("chunked", [False, True], ids=["sized", "chunked"])
async def test_body_over_the_limit_is_413(
    alice: httpx.AsyncClient, joblib: JobLib, world: World, chunked: bool
) -> None:
    limit = joblib.settings.max_body_bytes
    raw = b'{"payload": {"x": "' + b"a" * limit + b'"}}'

    async def stream() -> AsyncIterator[bytes]:
        # No Content-Length: the server has to count as it reads.
        for start in range(0, len(raw), 65536):
            yield raw[start : start + 65536]

    answer = await alice.post(world.path(SUBMIT), content=stream() if chunked else raw)
    assert_problem(answer, 413, "payload-too-large")


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PATCH", "/workers/w1"),
        ("DELETE", "/workers/12345"),
        ("GET", "/tasks/not-a-uuid"),
        ("PATCH", "/tasks/0000"),
    ],
)
async def test_bad_uuids_in_paths_are_422(
    alice: httpx.AsyncClient, method: str, path: str
) -> None:
    answer = await alice.request(method, path, json={"status": "cancelled"})
    assert_problem(answer, 422, "validation-error")


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("room_id", ["a:b", "a@b", "a%00b", "@"])
@pytest.mark.parametrize(
    ("method", "template"),
    [
        ("GET", "/rooms/{room}/tasks"),
        ("GET", "/rooms/{room}/jobs"),
        ("POST", "/rooms/{room}/tasks/{job}"),
        ("PUT", "/rooms/{room}/jobs"),
    ],
)
async def test_bad_room_ids_are_400(
    alice: httpx.AsyncClient, method: str, template: str, room_id: str
) -> None:
    path = template.format(room=room_id, job=JOB)
    body = {"category": "modifiers", "name": "X", "payload": {}}
    answer = await alice.request(method, path, json=body)
    assert_problem(answer, 400, "invalid-room-id")


LIST_ROUTES = [
    "/workers",
    "/rooms/room1/jobs",
    "/rooms/room1/workers",
    "/rooms/room1/tasks",
    f"/rooms/room1/jobs/{JOB}/tasks",
]


@pytest.mark.parametrize("path", LIST_ROUTES)
@pytest.mark.parametrize(
    "params",
    [
        {"limit": "-1"},
        {"limit": "501"},
        {"limit": "abc"},
        {"limit": ""},
        {"offset": "-1"},
        {"offset": "1.5"},
        {"offset": "10001"},
        {"offset": str(2**31)},
    ],
)
async def test_bad_paging_is_422(
    alice: httpx.AsyncClient, world: World, path: str, params: dict[str, str]
) -> None:
    answer = await alice.get(path, params=params)
    body = assert_problem(answer, 422, "validation-error")
    assert body["errors"][0]["loc"] == list(params)


@pytest.mark.parametrize("path", LIST_ROUTES)
async def test_paging_limits_are_inclusive(
    alice: httpx.AsyncClient, world: World, path: str
) -> None:
    for params in ({"limit": 0}, {"limit": 500}, {"offset": 0}, {"offset": 10_000}):
        assert (await alice.get(path, params=params)).status_code == 200


@pytest.mark.parametrize("path", LIST_ROUTES[-2:])
async def test_unknown_status_filter_is_422(
    alice: httpx.AsyncClient, world: World, path: str
) -> None:
    answer = await alice.get(path, params={"status": "done"})
    assert_problem(answer, 422, "validation-error")


async def test_unknown_route_is_a_404_problem(alice: httpx.AsyncClient) -> None:
    assert_problem(await alice.get("/nope"), 404, "not-found")
    assert_problem(await alice.get("/rooms/room1"), 404, "not-found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/tasks/{task}", {"GET", "HEAD", "PATCH"}),
        ("PUT", "/workers", {"GET", "HEAD", "POST"}),
        ("GET", "/workers/{worker}", {"PATCH", "DELETE"}),
        ("GET", "/rooms/room1/tasks/{job}", {"POST"}),
        ("DELETE", "/rooms/room1/jobs", {"GET", "HEAD", "PUT"}),
    ],
)
async def test_wrong_method_is_a_405_problem_naming_the_allowed_ones(
    alice: httpx.AsyncClient, world: World, method: str, path: str, allowed: set[str]
) -> None:
    answer = await alice.request(method, world.path(path))
    assert_problem(answer, 405, "method-not-allowed")
    assert set(answer.headers["allow"].split(", ")) == allowed


async def test_odd_but_valid_payloads_round_trip(
    alice: httpx.AsyncClient, world: World
) -> None:
    nested: Any = "bottom"
    for _ in range(90):
        nested = {"down": nested}
    payload = {
        "nul": "a\x00b",
        "unicode": "Grüße, 世界 🚀",
        "big": 10**300,
        "float": 1.5e300,
        "nested": nested,
        "empty": {"": []},
    }
    task = await submit(alice, JOB, payload=payload)
    assert task["payload"] == payload
    assert (await get_task(alice, task["id"]))["payload"] == payload
