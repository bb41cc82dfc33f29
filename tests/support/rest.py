"""REST helpers: in-process calls that read as a test's story, and a live client."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx

from joblib_protocol import PROBLEM_CONTENT_TYPE, Emission, TaskStatusEvent
from joblib_server import RecordingEmitter
from tests.support.tokens import bearer

SCHEMA: dict[str, Any] = {"type": "object", "properties": {"angle": {"type": "number"}}}
ROOM = "room1"

JSON = dict[str, Any]

ClientFactory = Callable[..., httpx.AsyncClient]
"""The `make_client` fixture: an httpx client of the in-process app, for a token."""


def full_name(
    room_id: str = ROOM, name: str = "Rotate", category: str = "modifiers"
) -> str:
    return f"{room_id}:{category}:{name}"


async def register(
    client: httpx.AsyncClient,
    room_id: str = ROOM,
    name: str = "Rotate",
    *,
    category: str = "modifiers",
    schema: JSON | None = None,
    worker_id: str | None = None,
    expect: int = 201,
) -> JSON:
    """Register a job (creating a worker unless `worker_id` is given)."""
    body: JSON = {"category": category, "name": name, "schema": schema or SCHEMA}
    if worker_id is not None:
        body["worker_id"] = worker_id
    answer = await client.put(f"/rooms/{room_id}/jobs", json=body)
    assert answer.status_code == expect, answer.text
    result: JSON = answer.json()
    return result


async def create_worker(client: httpx.AsyncClient) -> str:
    answer = await client.post("/workers")
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


async def submit(
    client: httpx.AsyncClient,
    job_name: str,
    room_id: str = ROOM,
    payload: JSON | None = None,
) -> JSON:
    answer = await client.post(
        f"/rooms/{room_id}/tasks/{job_name}", json={"payload": payload or {}}
    )
    assert answer.status_code == 202, answer.text
    result: JSON = answer.json()
    return result


async def claim(
    client: httpx.AsyncClient,
    worker_id: str,
    *,
    start: bool = False,
    request_id: str | None = None,
) -> JSON | None:
    """Claim for a worker; the task, or None when nothing waits."""
    body: JSON = {"worker_id": worker_id, "start": start}
    if request_id is not None:
        body["request_id"] = request_id
    answer = await client.post("/tasks/claim", json=body)
    assert answer.status_code == 200, answer.text
    task: JSON | None = answer.json()["task"]
    return task


async def update(
    client: httpx.AsyncClient,
    task_id: str,
    status: str,
    error: str | None = None,
    *,
    expect: int = 200,
) -> JSON:
    body: JSON = {"status": status}
    if error is not None:
        body["error"] = error
    answer = await client.patch(f"/tasks/{task_id}", json=body)
    assert answer.status_code == expect, answer.text
    result: JSON = answer.json()
    return result


async def get_task(client: httpx.AsyncClient, task_id: str) -> JSON:
    answer = await client.get(f"/tasks/{task_id}")
    assert answer.status_code == 200, answer.text
    result: JSON = answer.json()
    return result


async def serving_job(
    client: httpx.AsyncClient, room_id: str = ROOM, name: str = "Rotate"
) -> tuple[str, str]:
    """Register a job with a fresh worker: (worker_id, full_name)."""
    job = await register(client, room_id, name)
    return str(job["worker_id"]), str(job["full_name"])


async def claimed_task(
    worker: httpx.AsyncClient,
    submitter: httpx.AsyncClient,
    *,
    start: bool = False,
) -> tuple[str, str]:
    """A task that a new worker of `worker`'s has claimed (and started, with
    `start`): (task_id, worker_id). The job is `full_name()`."""
    worker_id, job_name = await serving_job(worker)
    task = await submit(submitter, job_name)
    claimed = await claim(worker, worker_id, start=start)
    assert claimed is not None
    assert claimed["id"] == task["id"]
    return str(task["id"]), worker_id


def assert_problem(answer: httpx.Response, status: int, slug: str) -> JSON:
    """Check an RFC 9457 answer of the given type and return its body."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM_CONTENT_TYPE
    body: JSON = answer.json()
    assert body["type"] == f"/v1/problems/{slug}"
    assert body["status"] == status
    assert body["title"]
    return body


def parse_time(value: str) -> datetime:
    """Parse a wire timestamp, insisting that it carries a timezone."""
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() is not None, value
    return parsed


def events(emitter: RecordingEmitter, name: str) -> list[Emission]:
    """The recorded emissions of one event name."""
    return [e for e in emitter.sent if e.event.event_name() == name]


def task_statuses(emitter: RecordingEmitter) -> list[str]:
    """The statuses the recorded `task_status_event`s announced, in order."""
    return [
        e.event.status for e in emitter.sent if isinstance(e.event, TaskStatusEvent)
    ]


def rest(api: str, token: str) -> httpx.Client:
    """A REST client for a live server's `/v1/joblib` API."""
    return httpx.Client(base_url=api, headers=bearer(token), timeout=30)


async def held_claim(
    client: httpx.AsyncClient,
    worker_id: str,
    answers: list[httpx.Response],
    wait: float,
) -> None:
    """Claim with `Prefer: wait`, and append the answer to `answers` when it comes."""
    answers.append(
        await client.post(
            "/tasks/claim",
            json={"worker_id": worker_id},
            headers={"Prefer": f"wait={wait:g}"},
        )
    )
