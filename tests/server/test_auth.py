"""Authentication: tokens, where they come from, and 401/403 on every route."""

from __future__ import annotations

import json
import stat
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from joblib_server import Identity, JobLib, TokenAuth, TokenStore, bearer_token
from joblib_server.auth import (
    TokenFileAuth,
    TokenTable,
    select_tokens,
    tokens_from_env,
)
from tests.support.rest import ClientFactory, assert_problem, claim, serving_job, submit
from tests.support.rows import snapshot

pytestmark = pytest.mark.anyio

ALICE = Identity("alice")
AUTH = TokenAuth({"secret": ALICE, "root": Identity("root", is_admin=True)})

ROUTES = [
    ("POST", "/workers"),
    ("GET", "/workers"),
    ("PATCH", "/workers/{worker}"),
    ("DELETE", "/workers/{worker}"),
    ("PUT", "/rooms/room1/jobs"),
    ("GET", "/rooms/room1/jobs"),
    ("GET", "/rooms/room1/jobs/{job}"),
    ("GET", "/rooms/room1/jobs/{job}/tasks"),
    ("GET", "/rooms/room1/workers"),
    ("GET", "/rooms/room1/tasks"),
    ("POST", "/rooms/room1/tasks/{job}"),
    ("POST", "/tasks/claim"),
    ("GET", "/tasks/{task}"),
    ("PATCH", "/tasks/{task}"),
]


@pytest.mark.parametrize(
    ("headers", "auth"),
    [
        ({"Authorization": "Bearer secret"}, None),
        ({"authorization": "bearer secret"}, None),
        ({"Authorization": "Bearer   secret  "}, None),
        ({}, {"token": "secret"}),
        ({"Authorization": "Basic c2VjcmV0"}, {"token": "secret"}),
    ],
)
async def test_token_auth_accepts_a_known_token(
    headers: dict[str, str], auth: dict[str, Any] | None
) -> None:
    assert await AUTH.authenticate(headers, auth) == ALICE


@pytest.mark.parametrize(
    ("headers", "auth"),
    [
        ({}, None),
        ({"Authorization": "Bearer wrong"}, None),
        ({"Authorization": "Bearer "}, None),
        ({"Authorization": "secret"}, None),
        ({"Authorization": "Basic secret"}, None),
        ({}, {"token": ""}),
        ({}, {"token": 42}),
        ({}, {"other": "secret"}),
    ],
)
async def test_token_auth_refuses_anything_else(
    headers: dict[str, str], auth: dict[str, Any] | None
) -> None:
    assert await AUTH.authenticate(headers, auth) is None


async def test_token_auth_learns_new_tokens() -> None:
    auth = TokenAuth({})
    assert await auth.authenticate({"authorization": "Bearer late"}) is None
    auth.add("late", ALICE)
    assert await auth.authenticate({"authorization": "Bearer late"}) == ALICE


def test_bearer_token_prefers_the_header() -> None:
    headers = {"authorization": "Bearer from-header"}
    assert bearer_token(headers, {"token": "from-auth"}) == "from-header"
    assert bearer_token({}, {"token": "from-auth"}) == "from-auth"
    assert bearer_token({}) is None


def test_token_store_creates_private_tokens(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "nested" / "tokens.json")
    assert store.load() == {}  # no file yet
    first = store.create(Identity("x", is_admin=True))
    second = store.create(Identity("y"))
    assert first != second
    assert len(first) >= 32
    assert store.load() == {first: Identity("x", is_admin=True), second: Identity("y")}
    mode = stat.S_IMODE(store.path.stat().st_mode)
    assert mode == 0o600
    assert json.loads(store.path.read_text())[first] == {"id": "x", "admin": True}


@pytest.mark.parametrize(
    "content",
    ['["a"]', '{"t": "x"}', '{"t": {"admin": true}}', '{"t": {"id": 5}}'],
)
def test_token_store_rejects_malformed_files(tmp_path: Path, content: str) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=str(path)):
        TokenStore(path).load()


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_token_file_auth_follows_the_file(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    first = store.create(Identity("x"))
    heard: list[TokenTable] = []
    auth = TokenFileAuth(store, check_seconds=0.2, on_change=heard.append)
    assert await auth.authenticate(_bearer(first)) == Identity("x")

    # A token added to the file counts at once: an unknown token looks again.
    late = store.create(Identity("y"), ["lab-*"])
    assert await auth.authenticate(_bearer(late)) == Identity("y")
    assert heard[-1].rooms == {"y": ("lab-*",)}

    # A revoked one once check_seconds passed (the test server: within 1 s).
    store.revoke("x")
    auth.check_seconds = 0
    assert await auth.authenticate(_bearer(first)) is None
    assert await auth.authenticate(_bearer(late)) == Identity("y")
    assert await auth.authenticate({}) is None


async def test_token_file_auth_keeps_its_tokens_through_a_broken_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    token = store.create(Identity("x"))
    auth = TokenFileAuth(store, check_seconds=0)
    store.path.write_text("{broken")
    assert await auth.authenticate(_bearer(token)) == Identity("x")
    assert await auth.authenticate(_bearer(token)) == Identity("x")
    warnings = [r for r in caplog.records if "cannot be read" in r.getMessage()]
    assert len(warnings) == 1  # once per broken version of the file
    # A removed file holds no tokens.
    store.path.unlink()
    assert await auth.authenticate(_bearer(token)) is None


@pytest.mark.parametrize(
    ("which", "chosen"),
    [
        ("tok-alpha-1", ["tok-alpha-1"]),  # a whole token
        ("x", ["tok-alpha-1", "tok-alpha-2"]),  # an identity: all its tokens
        ("tok-b", ["tok-beta"]),  # a prefix of one identity's tokens
        ("tok-alpha", ["tok-alpha-1", "tok-alpha-2"]),
    ],
)
def test_select_tokens(which: str, chosen: list[str]) -> None:
    raw = {
        "tok-alpha-1": {"id": "x"},
        "tok-alpha-2": {"id": "x"},
        "tok-beta": {"id": "y"},
    }
    assert sorted(select_tokens(raw, which)) == chosen


def test_select_tokens_refuses_what_is_not_clear() -> None:
    raw = {"tok-alpha": {"id": "x"}, "tok-beta": {"id": "y"}, "abc": {"id": "tok-"}}
    with pytest.raises(ValueError, match="an identity and the start"):
        select_tokens(raw, "tok-")  # an identity, and the start of others' tokens
    with pytest.raises(ValueError, match="several tokens"):
        select_tokens({k: v for k, v in raw.items() if k != "abc"}, "tok-")
    with pytest.raises(LookupError, match="4 characters"):
        select_tokens(raw, "tok")
    with pytest.raises(LookupError):
        select_tokens(raw, "nothing")


def test_tokens_from_env() -> None:
    tokens = tokens_from_env(
        '{"t1": {"id": "alice"}, "t2": {"id": "root", "admin": true},'
        ' "t3": {"id": "bob", "admin": false}}'
    )
    assert tokens == {
        "t1": Identity("alice"),
        "t2": Identity("root", is_admin=True),
        "t3": Identity("bob"),
    }


@pytest.mark.parametrize(
    "value", ["", "not json", "[]", '{"t": "alice"}', '{"t": {"name": "alice"}}']
)
def test_tokens_from_env_rejects_malformed_values(value: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - json errors are ValueErrors too
        tokens_from_env(value)


@pytest.fixture
async def ids(alice: httpx.AsyncClient) -> dict[str, str]:
    """A worker of alice's serving a job, and a task she submitted to it."""
    worker_id, job_name = await serving_job(alice)
    task = await submit(alice, job_name)
    return {"worker": worker_id, "job": job_name, "task": task["id"]}


@pytest.mark.parametrize("token", [None, "wrong-token", "ALICE-TOKEN"])
@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_every_route_wants_a_valid_token(
    make_client: ClientFactory,
    joblib: JobLib,
    ids: dict[str, str],
    token: str | None,
    method: str,
    path: str,
) -> None:
    client = make_client(token)
    before = await snapshot(joblib)
    answer = await client.request(
        method,
        path.format(**ids),
        json={"category": "modifiers", "name": "X", "status": "cancelled"},
    )
    body = assert_problem(answer, 401, "unauthorized")
    assert answer.headers["www-authenticate"] == "Bearer"
    assert "token" in body["detail"]
    assert await snapshot(joblib) == before


async def test_wrong_identity_gets_403(
    alice: httpx.AsyncClient,
    bob: httpx.AsyncClient,
    joblib: JobLib,
) -> None:
    bobs_worker, job_name = await serving_job(bob, "room2", "BobsJob")
    task = await submit(bob, job_name, "room2")
    await claim(bob, bobs_worker)
    before = await snapshot(joblib)
    attempts = [
        ("PATCH", f"/workers/{bobs_worker}", None),
        ("DELETE", f"/workers/{bobs_worker}", None),
        ("POST", "/tasks/claim", {"worker_id": bobs_worker}),
        ("PATCH", f"/tasks/{task['id']}", {"status": "running"}),
        ("PATCH", f"/tasks/{task['id']}", {"status": "cancelled"}),
        ("PUT", "/rooms/@global/jobs", {"category": "modifiers", "name": "G"}),
        ("PUT", "/rooms/@internal/jobs", {"category": "modifiers", "name": "I"}),
    ]
    for method, path, body in attempts:
        answer = await alice.request(method, path, json=body)
        assert_problem(answer, 403, "forbidden")
    assert await snapshot(joblib) == before


async def test_reads_are_open_to_every_identity(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, ids: dict[str, str]
) -> None:
    for method, path in ROUTES:
        if method == "GET":
            assert (await bob.get(path.format(**ids))).status_code == 200, path


async def test_unknown_worker_ids_are_404_not_403(bob: httpx.AsyncClient) -> None:
    missing = str(uuid.uuid4())
    for method, path in (("PATCH", "/workers/{}"), ("DELETE", "/workers/{}")):
        answer = await bob.request(method, path.format(missing))
        assert_problem(answer, 404, "worker-not-found")


def test_new_tokens_never_start_like_a_command_line_option() -> None:
    from joblib_server.auth import new_token

    # One base64url token in 64 would start with "-"; 2,000 find it for sure.
    tokens = {new_token() for _ in range(2000)}
    assert len(tokens) == 2000
    assert not [token for token in tokens if token.startswith("-")]
