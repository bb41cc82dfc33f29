"""Payloads checked against their job's JSON Schema: 422 invalid-payload, nothing
stored; schemas checked at registration: 422 invalid-schema."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from pydantic import BaseModel, Field

from joblib_server import JobLib
from joblib_server.tables import JOB_TABLE
from tests.support.rest import ROOM, assert_problem, register, submit
from tests.support.rows import row_counts, snapshot

pytestmark = pytest.mark.anyio

STRICT: dict[str, Any] = {
    "type": "object",
    "properties": {"angle": {"type": "number"}, "axis": {"enum": ["x", "y", "z"]}},
    "required": ["angle"],
    "additionalProperties": False,
}


class Point(BaseModel):
    x: float
    y: float


class Path(BaseModel):
    """A job's parameters as a worker's pydantic model states them."""

    name: str = Field(min_length=1)
    points: list[Point]
    origin: Point | None = None


async def _job(client: httpx.AsyncClient, schema: dict[str, Any]) -> str:
    job = await register(client, schema=schema)
    return str(job["full_name"])


async def _refused(
    client: httpx.AsyncClient, job_name: str, payload: Any
) -> list[dict[str, Any]]:
    answer = await client.post(
        f"/rooms/{ROOM}/tasks/{job_name}", json={"payload": payload}
    )
    body = assert_problem(answer, 422, "invalid-payload")
    assert "does not match the job's schema" in body["detail"]
    errors: list[dict[str, Any]] = body["errors"]
    assert errors
    return errors


@pytest.mark.parametrize(
    ("payload", "loc", "says"),
    [
        ({"angle": "ninety"}, ["body", "payload", "angle"], "is not of type 'number'"),
        ({}, ["body", "payload"], "'angle' is a required property"),
        ({"angle": 1, "speed": 2}, ["body", "payload"], "'speed' was unexpected"),
        ({"angle": 1, "axis": "w"}, ["body", "payload", "axis"], "is not one of"),
    ],
    ids=["wrong type", "missing required", "unknown property", "not in enum"],
)
async def test_a_payload_that_breaks_the_schema_is_422_and_stores_nothing(
    alice: httpx.AsyncClient,
    joblib: JobLib,
    payload: dict[str, Any],
    loc: list[Any],
    says: str,
) -> None:
    job_name = await _job(alice, STRICT)
    before = await snapshot(joblib)

    [error] = await _refused(alice, job_name, payload)

    assert error["loc"] == loc
    assert says in error["msg"]
    assert await snapshot(joblib) == before
    listed = (await alice.get(f"/rooms/{ROOM}/tasks")).json()
    assert (listed["total"], listed["items"]) == (0, [])


async def test_a_payload_that_matches_is_queued(alice: httpx.AsyncClient) -> None:
    job_name = await _job(alice, STRICT)
    task = await submit(alice, job_name, payload={"angle": 90.5, "axis": "z"})
    assert task["payload"] == {"angle": 90.5, "axis": "z"}
    assert task["status"] == "pending"


async def test_a_pydantic_schema_with_refs_checks_nested_values(
    alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    schema = Path.model_json_schema()
    assert "$defs" in schema  # the nested model is a $ref
    job_name = await _job(alice, schema)
    good = {"name": "p", "points": [{"x": 0, "y": 1}], "origin": None}
    await submit(alice, job_name, payload=good)
    counts = await row_counts(joblib)

    errors = await _refused(
        alice,
        job_name,
        {"name": "", "points": [{"x": 0, "y": 1}, {"x": "far"}], "origin": {"x": 1}},
    )

    assert [error["loc"] for error in errors] == [
        ["body", "payload", "name"],
        ["body", "payload", "origin"],
        ["body", "payload", "points", 1],
        ["body", "payload", "points", 1, "x"],
    ]
    assert "'y' is a required property" in errors[2]["msg"]
    assert "is not of type 'number'" in errors[3]["msg"]
    assert await row_counts(joblib) == counts


async def test_errors_are_capped_and_the_detail_counts_them(
    alice: httpx.AsyncClient,
) -> None:
    schema = {"type": "object", "additionalProperties": {"type": "integer"}}
    job_name = await _job(alice, schema)
    errors = await _refused(alice, job_name, {f"k{i:02}": "x" for i in range(30)})
    assert len(errors) == 20
    assert [e["loc"][-1] for e in errors] == [f"k{i:02}" for i in range(20)]
    again = await alice.post(
        f"/rooms/{ROOM}/tasks/{job_name}",
        json={"payload": {f"k{i:02}": "x" for i in range(30)}},
    )
    assert again.json()["errors"] == errors  # the same answer every time
    assert "(30 errors, the first 20 listed)" in again.json()["detail"]


async def test_an_empty_schema_takes_any_payload(alice: httpx.AsyncClient) -> None:
    job_name = await _job(alice, {})
    payload = {"anything": [1, "two", {"three": None}]}
    assert (await submit(alice, job_name, payload=payload))["payload"] == payload


async def test_formats_are_annotations_not_assertions(
    alice: httpx.AsyncClient,
) -> None:
    schema = {"type": "object", "properties": {"mail": {"format": "email"}}}
    job_name = await _job(alice, schema)
    await submit(alice, job_name, payload={"mail": "not an address"})


@pytest.mark.parametrize(
    ("schema", "loc"),
    [
        ({"type": 5}, ["body", "schema", "type"]),
        ({"type": "object", "required": "angle"}, ["body", "schema", "required"]),
        ({"properties": {"a": {"pattern": "("}}}, ["body", "schema", "properties"]),
        ({"$ref": "#/$defs/Missing"}, ["body", "schema", "$ref"]),
        ({"$ref": "https://example.com/schema.json"}, ["body", "schema", "$ref"]),
    ],
    ids=["type 5", "required not a list", "bad regex", "dangling ref", "remote ref"],
)
async def test_an_invalid_schema_is_refused_at_registration(
    alice: httpx.AsyncClient, joblib: JobLib, schema: dict[str, Any], loc: list[str]
) -> None:
    answer = await alice.put(
        f"/rooms/{ROOM}/jobs",
        json={"category": "modifiers", "name": "Rotate", "schema": schema},
    )
    body = assert_problem(answer, 422, "invalid-schema")
    assert body["detail"].startswith("not a valid JSON Schema")
    assert body["errors"][0]["loc"][: len(loc)] == loc
    assert (await row_counts(joblib))["joblib_job"] == 0


async def test_a_stored_schema_that_is_invalid_does_not_block_submits(
    alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    """Jobs registered before schemas were checked may hold one that is not valid."""
    job = await register(alice, schema={"type": "object"})
    async with joblib.database.write() as session:
        await session.execute(
            sa.update(JOB_TABLE)
            .where(JOB_TABLE.c.id == uuid.UUID(job["id"]))
            .values(schema={"type": 5, "required": "angle"})
        )

    task = await submit(alice, job["full_name"], payload={"whatever": True})

    assert task["status"] == "pending"
    assert task["payload"] == {"whatever": True}
