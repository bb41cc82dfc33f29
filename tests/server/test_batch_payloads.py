"""Payloads go into the database as one JSON array (`Backend.insert_tasks_statement`):
each must come back exactly as sent, and concurrent batches keep the queue whole."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import anyio
import httpx
import pytest

from joblib_server.views import (
    TaskRow,
    new_task_views,
    task_available,
    task_emission,
    task_response,
)
from tests.support.rest import ROOM, claim, get_task, serving_job, submit

ODD_PAYLOADS: list[dict[str, Any]] = [
    {"angle": 1, "text": "héllo wörld ✓ 日本語 🚀", "escapes": '"quoted" \\ \n\t/'},
    {"nested": {"a": [1, [2, [3, {"b": None}]]], "empty": {}, "list": []}},
    {"big": 2**70, "negative_big": -(2**64) - 1, "small": 1e-300, "huge": 1.5e300},
    {"float_one": 1.0, "minus_zero": -0.0, "exp": 12345678901234567890.5},
    {"null": None, "true": True, "false": False, "zero": 0},
    # Key order is kept as sent, not sorted (jsonb would sort: shorter keys first).
    {"zzz_long_key": 1, "a": 2, "mm": 3},
    {},
    {"control": "\u0001\u001f", "nul_escape": "a\u0000b"},
]


def _exact(value: Any) -> str:
    """JSON text that tells 1 from 1.0 and keeps key order: equal means identical."""
    return json.dumps(value)


@pytest.mark.anyio
async def test_payloads_survive_the_json_array_exactly(
    alice: httpx.AsyncClient,
) -> None:
    worker_id, job_name = await serving_job(alice)
    answer = await alice.post(
        f"/rooms/{ROOM}/tasks/{job_name}/batch", json={"payloads": ODD_PAYLOADS}
    )
    assert answer.status_code == 202, answer.text
    items = answer.json()["items"]
    assert [_exact(item["payload"]) for item in items] == list(
        map(_exact, ODD_PAYLOADS)
    )
    for item, sent in zip(items, ODD_PAYLOADS, strict=True):
        assert _exact((await get_task(alice, item["id"]))["payload"]) == _exact(sent)
    for sent in ODD_PAYLOADS:
        claimed = await claim(alice, worker_id)
        assert claimed is not None
        assert _exact(claimed["payload"]) == _exact(sent)


@pytest.mark.anyio
async def test_a_single_submit_keeps_its_payload_exactly(
    alice: httpx.AsyncClient,
) -> None:
    _, job_name = await serving_job(alice)
    for sent in ODD_PAYLOADS:
        task = await submit(alice, job_name, payload=sent or {"x": None})
        stored = (await get_task(alice, task["id"]))["payload"]
        assert _exact(stored) == _exact(sent or {"x": None})


@pytest.mark.anyio
async def test_concurrent_batches_keep_positions_and_creation_order(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    worker_id, job_name = await serving_job(alice)
    answers: dict[int, list[dict[str, Any]]] = {}

    async def send(n: int, client: httpx.AsyncClient) -> None:
        payloads = [{"angle": n * 100 + i} for i in range(10)]
        answer = await client.post(
            f"/rooms/{ROOM}/tasks/{job_name}/batch", json={"payloads": payloads}
        )
        assert answer.status_code == 202, answer.text
        answers[n] = answer.json()["items"]

    async with anyio.create_task_group() as group:
        for n in range(6):
            group.start_soon(send, n, alice if n % 2 else bob)
    # Each batch is a block of consecutive positions, in its payloads' order; the
    # blocks tile the queue 1..60 in some order.
    blocks = sorted(answers.values(), key=lambda items: items[0]["queue_position"])
    queue = [item for items in blocks for item in items]
    for items in blocks:
        first = items[0]["queue_position"]
        assert [i["queue_position"] for i in items] == list(range(first, first + 10))
        assert len({i["created_at"] for i in items}) == 1
    assert [item["queue_position"] for item in queue] == list(range(1, 61))
    created = [item["created_at"] for item in queue]
    assert created == sorted(created)
    # Workers get them in queue order, and each waiting task's position is right.
    for position, item in enumerate(queue, start=1):
        assert (await get_task(alice, item["id"]))["queue_position"] == 1
        claimed = await claim(alice, worker_id)
        assert claimed is not None
        assert claimed["id"] == item["id"], position


@pytest.mark.parametrize("available", [True, False])
def test_copied_views_are_the_validated_ones(available: bool) -> None:
    """`new_task_views` copies the first task's models: same models, same JSON."""
    ids = [uuid.uuid4() for _ in ODD_PAYLOADS]
    first = TaskRow(
        id=ids[0],
        job_name=f"{ROOM}:modifiers:Rotate",
        room_id=ROOM,
        status="pending",
        created_at=datetime.now(UTC),
        started_at=None,
        completed_at=None,
        worker_id=None,
        error=None,
        payload=ODD_PAYLOADS[0],
        attempt=1,
        error_code=None,
        timeout_seconds=30.0,
        expires_at=datetime.now(UTC),
    )
    positions = [3, 4, 5, 6, 7, 8, 9, 10]
    items, emissions = new_task_views(
        first, ids, ODD_PAYLOADS, positions, available=available
    )
    rows = [
        replace(first, id=task_id, payload=payload)
        for task_id, payload in zip(ids, ODD_PAYLOADS, strict=True)
    ]
    expected = [task_response(row, p) for row, p in zip(rows, positions, strict=True)]
    assert items == expected
    assert [i.model_dump_json() for i in items] == [
        i.model_dump_json() for i in expected
    ]
    events = {task_emission(row, p) for row, p in zip(rows, positions, strict=True)}
    if available:
        events |= {task_available(row) for row in rows}
    assert emissions == events
    assert sorted(e.event.model_dump_json() for e in emissions) == sorted(
        e.event.model_dump_json() for e in events
    )
