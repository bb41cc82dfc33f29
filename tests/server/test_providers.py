"""Providers over REST: register, list, read (cached, coalesced, waited for), answer.

The worker's side is played in-process: the test sees each `provider_request` in
the recording emitter and uploads the answer (or reports a failure) over REST.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import anyio
import httpx
import pytest

from joblib_protocol import (
    Emission,
    ProviderRequest,
    ProviderResultReady,
    ProvidersInvalidate,
    provider_channel,
    request_hash,
)
from joblib_server import Identity, JobLib, RecordingEmitter
from joblib_server.disconnects import grace_expired, socket_closed
from joblib_server.provider_results import MemoryResults, result_key
from joblib_server.providers import join_provider
from tests.support.rest import JSON, assert_problem, create_worker
from tests.support.waiting import aeventually

pytestmark = pytest.mark.anyio

ROOM = "room1"
NAME = f"{ROOM}:filesystem:local"
SCHEMA: JSON = {"type": "object", "properties": {"path": {"type": "string"}}}
NOW = {"Prefer": "wait=0"}
ALICE_ID = Identity("alice")


async def register(
    client: httpx.AsyncClient,
    room_id: str = ROOM,
    name: str = "local",
    *,
    expect: int = 201,
    **fields: Any,
) -> JSON:
    body: JSON = {"category": "filesystem", "name": name, "schema": SCHEMA, **fields}
    answer = await client.put(f"/rooms/{room_id}/providers", json=body)
    assert answer.status_code == expect, answer.text
    result: JSON = answer.json()
    return result


def requests_sent(emitter: RecordingEmitter) -> list[ProviderRequest]:
    return [e.event for e in emitter.sent if isinstance(e.event, ProviderRequest)]


async def upload(
    client: httpx.AsyncClient, provider: JSON, digest: str, data: bytes
) -> httpx.Response:
    return await client.post(
        f"/providers/{provider['id']}/results",
        content=data,
        headers={"X-Request-Hash": digest},
    )


async def all_waiting(joblib: JobLib, provider: JSON, digest: str, count: int) -> None:
    """Until `count` readers wait for the read (the in-process backend counts them)."""
    results = joblib.provider_results
    assert isinstance(results, MemoryResults)
    key = result_key(provider["id"], digest)
    await aeventually(lambda: results.waiting(key) == count, what=f"{count} readers")


def read_url(full_name: str = NAME, room_id: str = ROOM) -> str:
    return f"/rooms/{room_id}/providers/{full_name}"


# registration


async def test_register_answers_the_provider_then_200_when_registered_again(
    alice: httpx.AsyncClient, emitter: RecordingEmitter
) -> None:
    first = await register(alice, content_type="image/png")
    assert set(first) == {
        "id",
        "room_id",
        "category",
        "name",
        "full_name",
        "schema",
        "content_type",
        "worker_id",
        "created_at",
    }
    assert first["full_name"] == NAME
    assert first["content_type"] == "image/png"
    assert first["schema"] == SCHEMA
    assert Emission(ProvidersInvalidate(), f"room:{ROOM}") in emitter.sent

    emitter.clear()
    again = await register(alice, worker_id=first["worker_id"], schema={}, expect=200)
    assert again["id"] == first["id"]
    assert again["schema"] == {}
    assert again["content_type"] == "application/json"
    assert Emission(ProvidersInvalidate(), f"room:{ROOM}") in emitter.sent


async def test_global_providers_are_registered_by_admins_only(
    alice: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    body = {"category": "filesystem", "name": "local", "schema": {}}
    refused = await alice.put("/rooms/@global/providers", json=body)
    assert_problem(refused, 403, "forbidden")
    await register(admin, "@global")


async def test_another_identitys_provider_is_refused_but_an_admin_may_take_it(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    await register(alice)
    body = {"category": "filesystem", "name": "local", "schema": SCHEMA}
    assert_problem(
        await bob.put(f"/rooms/{ROOM}/providers", json=body), 403, "forbidden"
    )
    taken = await register(admin, expect=200)
    workers = (await admin.get("/workers")).json()["items"]
    assert taken["worker_id"] in [w["id"] for w in workers]


async def test_a_worker_not_the_callers_is_not_found(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    bobs = await create_worker(bob)
    body = {"category": "filesystem", "name": "local", "worker_id": bobs}
    answer = await alice.put(f"/rooms/{ROOM}/providers", json=body)
    assert_problem(answer, 404, "worker-not-found")
    body["worker_id"] = str(uuid.uuid4())
    answer = await alice.put(f"/rooms/{ROOM}/providers", json=body)
    assert_problem(answer, 404, "worker-not-found")
    assert (await alice.get(f"/rooms/{ROOM}/providers")).json()["total"] == 0


async def test_categories_are_checked_when_the_server_lists_them(
    alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    joblib.settings.allowed_provider_categories = ["frames"]
    body = {"category": "filesystem", "name": "local"}
    answer = await alice.put(f"/rooms/{ROOM}/providers", json=body)
    assert_problem(answer, 400, "invalid-category")
    await register(alice, category="frames")


@pytest.mark.parametrize(
    ("field", "value", "status", "slug"),
    [
        ("name", "a:b", 400, "invalid-job-name"),
        ("category", "", 400, "invalid-job-name"),
        ("schema", {"type": 3}, 422, "invalid-schema"),
        ("content_type", "text/plain\r\nX-Evil: 1", 422, "validation-error"),
    ],
)
async def test_bad_registrations_are_refused(
    alice: httpx.AsyncClient, field: str, value: Any, status: int, slug: str
) -> None:
    body = {"category": "filesystem", "name": "local", field: value}
    answer = await alice.put(f"/rooms/{ROOM}/providers", json=body)
    assert_problem(answer, status, slug)


async def test_registering_takes_a_token(make_client: Any) -> None:
    anonymous = make_client(None)
    body = {"category": "filesystem", "name": "local"}
    answer = await anonymous.put(f"/rooms/{ROOM}/providers", json=body)
    assert_problem(answer, 401, "unauthorized")


# listing and info


async def test_a_room_lists_its_own_and_the_global_providers_newest_first(
    alice: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    await register(admin, "@global", "shared")
    await register(alice, ROOM, "mine")
    await register(alice, "room2", "theirs")
    page = (await alice.get(f"/rooms/{ROOM}/providers")).json()
    assert page["total"] == 2
    assert [p["full_name"] for p in page["items"]] == [
        f"{ROOM}:filesystem:mine",
        "@global:filesystem:shared",
    ]
    global_page = (await alice.get("/rooms/@global/providers")).json()
    assert [p["name"] for p in global_page["items"]] == ["shared"]
    limited = (await alice.get(f"/rooms/{ROOM}/providers?limit=1&offset=1")).json()
    assert [p["name"] for p in limited["items"]] == ["shared"]
    assert_problem(await alice.get("/rooms/a:b/providers"), 400, "invalid-room-id")


async def test_info_of_a_visible_provider_and_404_elsewhere(
    alice: httpx.AsyncClient,
) -> None:
    provider = await register(alice)
    info = await alice.get(f"/rooms/{ROOM}/providers/{NAME}/info")
    assert info.status_code == 200
    assert info.json() == provider
    elsewhere = await alice.get(f"/rooms/room2/providers/{NAME}/info")
    assert_problem(elsewhere, 404, "provider-not-found")
    missing = await alice.get(f"/rooms/{ROOM}/providers/{ROOM}:filesystem:none/info")
    assert_problem(missing, 404, "provider-not-found")
    assert_problem(
        await alice.get(f"/rooms/{ROOM}/providers/nonsense/info"),
        404,
        "provider-not-found",
    )


# reading


async def test_a_cached_result_answers_at_once_without_asking_the_worker(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, emitter: RecordingEmitter
) -> None:
    provider = await register(alice)
    digest = request_hash({"path": "/data"})
    assert (await upload(alice, provider, digest, b'["a.xyz"]')).status_code == 204
    assert (
        Emission(
            ProviderResultReady(provider_name=NAME, request_hash=digest), f"room:{ROOM}"
        )
        in emitter.sent
    )
    answer = await bob.get(
        read_url(), params={"path": "/data"}, headers={"Prefer": "wait=5"}
    )
    assert answer.status_code == 200
    assert answer.content == b'["a.xyz"]'
    assert answer.headers["content-type"] == "application/json"
    assert "preference-applied" not in answer.headers
    assert requests_sent(emitter) == []


async def test_binary_results_round_trip_byte_for_byte(
    alice: httpx.AsyncClient, emitter: RecordingEmitter
) -> None:
    provider = await register(alice, content_type="application/octet-stream")
    data = bytes(range(256)) * 64 + b"\x00\xff\r\n"
    params = {"path": "/frames/0"}

    async def worker() -> None:
        asked = await aeventually(lambda: requests_sent(emitter), what="a request")
        assert (
            await upload(alice, provider, asked[0].request_id, data)
        ).status_code == 204

    async with anyio.create_task_group() as group:
        group.start_soon(worker)
        answer = await alice.get(read_url(), params=params)
    assert answer.status_code == 200
    assert answer.content == data
    assert answer.headers["content-type"] == "application/octet-stream"
    assert "preference-applied" not in answer.headers, "no Prefer was sent"
    again = await alice.get(read_url(), params=params)
    assert again.content == data


async def test_fifty_identical_reads_ask_the_worker_once(
    alice: httpx.AsyncClient, emitter: RecordingEmitter, joblib: JobLib
) -> None:
    provider = await register(alice)
    params = {"path": "/data", "glob": "*.xyz"}
    answers: list[httpx.Response] = []

    async def read() -> None:
        answers.append(
            await alice.get(read_url(), params=params, headers={"Prefer": "wait=10"})
        )

    async with anyio.create_task_group() as group:
        for _ in range(50):
            group.start_soon(read)
        asked = await aeventually(lambda: requests_sent(emitter), what="a request")
        await all_waiting(joblib, provider, asked[0].request_id, 50)
        assert (
            await upload(alice, provider, asked[0].request_id, b"42")
        ).status_code == 204
    assert len(requests_sent(emitter)) == 1
    request = requests_sent(emitter)[0]
    assert request.provider_name == NAME
    assert request.request_id == request_hash(params)
    assert json.loads(request.params) == params
    assert request.params == '{"glob":"*.xyz","path":"/data"}'
    sent = [e for e in emitter.sent if isinstance(e.event, ProviderRequest)]
    assert sent[0].room == provider_channel(NAME)
    assert len(answers) == 50
    assert {(a.status_code, a.content) for a in answers} == {(200, b"42")}
    assert {a.headers.get("preference-applied") for a in answers} == {"wait=10"}


async def test_a_read_nobody_answers_times_out_with_retry_after(
    alice: httpx.AsyncClient, emitter: RecordingEmitter
) -> None:
    await register(alice)
    started = time.monotonic()
    answer = await alice.get(read_url(), headers={"Prefer": "wait=0.3"})
    assert time.monotonic() - started >= 0.3
    body = assert_problem(answer, 504, "provider-timeout")
    assert answer.headers["retry-after"] == "2"
    assert NAME in body["detail"]
    assert len(requests_sent(emitter)) == 1
    # Still in flight: the same read again waits without asking again.
    assert_problem(await alice.get(read_url(), headers=NOW), 504, "provider-timeout")
    assert len(requests_sent(emitter)) == 1


async def test_a_stopping_server_answers_its_waiting_readers_at_once(
    alice: httpx.AsyncClient, joblib: JobLib, emitter: RecordingEmitter
) -> None:
    provider = await register(alice)
    answers: list[httpx.Response] = []

    async def read() -> None:
        answers.append(await alice.get(read_url(), headers={"Prefer": "wait=30"}))

    started = time.monotonic()
    async with anyio.create_task_group() as group:
        group.start_soon(read)
        asked = await aeventually(lambda: requests_sent(emitter), what="a request")
        await all_waiting(joblib, provider, asked[0].request_id, 1)
        await joblib.begin_shutdown()
    late = await alice.get(read_url(), headers={"Prefer": "wait=30"})
    assert time.monotonic() - started < 5
    for answer in (*answers, late):
        assert_problem(answer, 504, "provider-timeout")


async def test_the_wait_is_capped_and_defaults_from_the_settings(
    alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    await register(alice)
    joblib.settings.provider_long_poll_default_seconds = 0.1
    joblib.settings.provider_long_poll_max_seconds = 0.2
    started = time.monotonic()
    assert_problem(await alice.get(read_url()), 504, "provider-timeout")
    answer = await alice.get(read_url(), headers={"Prefer": "wait=3600"})
    assert_problem(answer, 504, "provider-timeout")
    assert time.monotonic() - started < 2


async def test_an_expired_result_is_asked_for_again(
    alice: httpx.AsyncClient, joblib: JobLib, emitter: RecordingEmitter
) -> None:
    joblib.settings.provider_result_ttl_seconds = 0.2
    provider = await register(alice)
    await upload(alice, provider, request_hash({}), b"old")
    assert (await alice.get(read_url(), headers=NOW)).content == b"old"
    assert requests_sent(emitter) == []

    async def expired() -> bool:
        return (await alice.get(read_url(), headers=NOW)).status_code == 504

    await aeventually(expired, what="the cached result to expire")
    assert len(requests_sent(emitter)) == 1


async def test_a_worker_error_answers_every_waiting_reader_at_once(
    alice: httpx.AsyncClient, emitter: RecordingEmitter, joblib: JobLib
) -> None:
    provider = await register(alice)
    finished: list[tuple[float, httpx.Response]] = []

    async def read() -> None:
        answer = await alice.get(read_url(), headers={"Prefer": "wait=10"})
        finished.append((time.monotonic(), answer))

    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(read)
        asked = await aeventually(lambda: requests_sent(emitter), what="a request")
        await all_waiting(joblib, provider, asked[0].request_id, 5)
        reported = time.monotonic()
        answer = await alice.post(
            f"/providers/{provider['id']}/errors",
            json={"request_hash": asked[0].request_id, "error": "no such file: /x"},
        )
        assert answer.status_code == 204
    assert len(finished) == 5
    for at, answer in finished:
        body = assert_problem(answer, 502, "provider-failed")
        assert body["detail"] == "no such file: /x"
        assert at - reported < 0.1
    # Not cached: the next read asks the worker again.
    assert_problem(await alice.get(read_url(), headers=NOW), 504, "provider-timeout")
    assert len(requests_sent(emitter)) == 2


async def test_parameters_are_checked_against_the_schema(
    alice: httpx.AsyncClient, emitter: RecordingEmitter
) -> None:
    schema = {
        "type": "object",
        "properties": {
            "frame": {"type": "integer", "minimum": 0},
            "label": {"type": "string"},
            # What pydantic writes for `note: str | None = None`.
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
        "required": ["frame"],
        "additionalProperties": False,
    }
    await register(alice, schema=schema)
    bad = await alice.get(read_url(), params={"frame": "abc"}, headers=NOW)
    body = assert_problem(bad, 422, "invalid-payload")
    assert body["errors"][0]["loc"] == ["query", "frame"]
    assert_problem(await alice.get(read_url(), headers=NOW), 422, "invalid-payload")
    extra = await alice.get(read_url(), params={"frame": "1", "x": "1"}, headers=NOW)
    assert_problem(extra, 422, "invalid-payload")
    assert requests_sent(emitter) == []
    # A string parameter stays a string even when it reads as JSON.
    good = await alice.get(read_url(), params={"frame": "3", "label": "7"}, headers=NOW)
    assert_problem(good, 504, "provider-timeout")
    assert requests_sent(emitter)[0].params == '{"frame":"3","label":"7"}'
    # So does an optional one, as the worker SDK reads it.
    noted = await alice.get(read_url(), params={"frame": "3", "note": "7"}, headers=NOW)
    assert_problem(noted, 504, "provider-timeout")


async def test_reading_takes_a_token_and_a_visible_provider(
    alice: httpx.AsyncClient, make_client: Any
) -> None:
    await register(alice)
    assert_problem(await make_client(None).get(read_url()), 401, "unauthorized")
    missing = await alice.get(read_url(f"{ROOM}:filesystem:none"), headers=NOW)
    assert_problem(missing, 404, "provider-not-found")
    elsewhere = await alice.get(read_url(NAME, "room2"), headers=NOW)
    assert_problem(elsewhere, 404, "provider-not-found")


# answers


async def test_a_result_over_the_limit_is_refused(
    alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    joblib.settings.max_provider_result_bytes = 10
    provider = await register(alice)
    digest = request_hash({})
    assert_problem(
        await upload(alice, provider, digest, b"x" * 11), 413, "payload-too-large"
    )
    assert (await alice.get(read_url(), headers=NOW)).status_code == 504
    assert (await upload(alice, provider, digest, b"x" * 10)).status_code == 204
    assert (await alice.get(read_url(), headers=NOW)).content == b"x" * 10


async def test_only_the_owner_answers_and_with_a_request_hash(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    provider = await register(alice)
    digest = request_hash({})
    assert_problem(await upload(bob, provider, digest, b"1"), 403, "forbidden")
    assert_problem(await upload(admin, provider, digest, b"1"), 403, "forbidden")
    error = {"request_hash": digest, "error": "x"}
    refused = await bob.post(f"/providers/{provider['id']}/errors", json=error)
    assert_problem(refused, 403, "forbidden")
    no_hash = await alice.post(f"/providers/{provider['id']}/results", content=b"1")
    assert_problem(no_hash, 422, "validation-error")
    unknown = {**provider, "id": str(uuid.uuid4())}
    assert_problem(
        await upload(alice, unknown, digest, b"1"), 404, "provider-not-found"
    )
    not_uuid = await alice.post("/providers/nope/results", content=b"1")
    assert_problem(not_uuid, 422, "validation-error")
    too_long = await alice.post(
        f"/providers/{provider['id']}/errors",
        json={"request_hash": digest, "error": "x" * 5000},
    )
    assert_problem(too_long, 422, "validation-error")


# removal


async def test_delete_by_owner_or_admin(
    alice: httpx.AsyncClient,
    bob: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    emitter: RecordingEmitter,
) -> None:
    provider = await register(alice)
    assert_problem(await bob.delete(f"/providers/{provider['id']}"), 403, "forbidden")
    emitter.clear()
    assert (await alice.delete(f"/providers/{provider['id']}")).status_code == 204
    assert Emission(ProvidersInvalidate(), f"room:{ROOM}") in emitter.sent
    assert (await alice.get(f"/rooms/{ROOM}/providers")).json()["total"] == 0
    assert_problem(
        await alice.delete(f"/providers/{provider['id']}"), 404, "provider-not-found"
    )
    other = await register(alice, name="other")
    assert (await admin.delete(f"/providers/{other['id']}")).status_code == 204


async def test_removing_the_worker_removes_its_providers(
    alice: httpx.AsyncClient, emitter: RecordingEmitter
) -> None:
    provider = await register(alice)
    await register(alice, name="second", worker_id=provider["worker_id"])
    emitter.clear()
    answer = await alice.delete(f"/workers/{provider['worker_id']}")
    assert answer.status_code == 204
    assert (await alice.get(f"/rooms/{ROOM}/providers")).json()["total"] == 0
    assert Emission(ProvidersInvalidate(), f"room:{ROOM}") in emitter.sent
    read = await alice.get(read_url(), headers=NOW)
    assert_problem(read, 404, "provider-not-found")


async def test_a_provider_worker_keeps_the_servers_grace(
    alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    joblib.settings.disconnect_grace_seconds = 30
    provider = await register(alice)
    worker_id = uuid.UUID(provider["worker_id"])
    epoch = await joblib.execute(join_provider, ALICE_ID, worker_id, NAME)
    assert await joblib.execute(socket_closed, worker_id, epoch) == 30
    assert (await alice.get(f"/rooms/{ROOM}/providers")).json()["total"] == 1
    assert await joblib.execute(grace_expired, worker_id, epoch) is not None
    assert (await alice.get(f"/rooms/{ROOM}/providers")).json()["total"] == 0
