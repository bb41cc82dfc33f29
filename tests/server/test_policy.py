"""Who may do what: job ownership, the access policy on every route and event.

In process, on both databases: REST through the app, Socket.IO through the
`Realtime` handlers called as python-socketio calls them. The end-to-end runs
(the standalone server, its token table, real sockets) are in
`tests/integration/test_policy_live.py`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import socketio
import sqlalchemy as sa

from joblib_server import (
    AccessPolicy,
    Action,
    Identity,
    JobLib,
    OpenRooms,
    Realtime,
    RoomPatterns,
    Settings,
    TokenStore,
    TokenTable,
    attach_joblib,
)
from joblib_server.auth import tokens_from_env
from joblib_server.cli import main
from joblib_server.policy import restricts
from tests.support.rest import (
    JSON,
    SCHEMA,
    ClientFactory,
    assert_problem,
    claim,
    create_worker,
    full_name,
    get_task,
    register,
    serving_job,
    submit,
)
from tests.support.rows import job_row, snapshot
from tests.support.servers import make_settings
from tests.support.tokens import ADMIN, ALICE, BOB

pytestmark = pytest.mark.anyio

ALICE_ID, BOB_ID, ADMIN_ID = Identity("alice"), Identity("bob"), Identity("admin", True)
LAB = "lab-1"
OTHER = "other"
SECRET = {"category": "modifiers", "name": "Secret", "schema": SCHEMA}


@pytest.fixture
def settings() -> Settings:
    # A refused long-poll must answer at once; one that waited would take a minute.
    return make_settings(long_poll_max_wait_seconds=60, long_poll_recheck_seconds=60)


def _realtime(joblib: JobLib, identity: Identity, sid: str = "sid-1") -> Realtime:
    """joblib's Socket.IO handlers on a server no client connects to."""
    realtime = Realtime(joblib, socketio.AsyncServer(async_mode="asgi"))
    realtime.accept(sid, identity)
    return realtime


def _refused(answer: dict[str, Any], status: int, slug: str) -> None:
    assert answer["ok"] is False, answer
    assert answer["error"]["status"] == status
    assert answer["error"]["type"] == f"/v1/problems/{slug}"


# --- a room job belongs to the identity that registered it -------------------


async def test_bob_cannot_take_over_alices_room_job(
    alice: httpx.AsyncClient,
    bob: httpx.AsyncClient,
    joblib: JobLib,
) -> None:
    """The issue's scenario: read the job, register it again, claim its tasks."""
    job = await register(alice, "alice-r", "Secret")
    secret = "alice-r:modifiers:Secret"
    bobs_worker = await create_worker(bob)
    before = await snapshot(joblib)

    seen = await bob.get(f"/rooms/alice-r/jobs/{secret}")
    assert seen.status_code == 200  # the room is open for reading
    for body in (SECRET, {**SECRET, "worker_id": bobs_worker}):
        answer = await bob.put("/rooms/alice-r/jobs", json=body)
        detail = assert_problem(answer, 403, "forbidden")["detail"]
        assert secret in detail
    assert await snapshot(joblib) == before  # no job, worker or link changed

    task = await submit(alice, secret, "alice-r", {"password": "hunter2"})
    assert await claim(bob, bobs_worker) is None
    mine = await claim(alice, job["worker_id"])
    assert mine is not None
    assert (mine["id"], mine["payload"]) == (task["id"], {"password": "hunter2"})


async def test_a_refused_registration_creates_no_worker(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, joblib: JobLib
) -> None:
    await register(alice, name="Mine")
    before = await snapshot(joblib)
    answer = await bob.put(
        "/rooms/room1/jobs",
        json={"category": "modifiers", "name": "Mine", "schema": {"other": True}},
    )
    # Another's job is refused before its schema is compared.
    assert_problem(answer, 403, "forbidden")
    assert await snapshot(joblib) == before


async def test_the_first_registrant_owns_the_job_and_adds_workers(
    alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    first = await register(alice)
    second = await register(alice, expect=200)
    assert (await job_row(joblib, "Rotate")).owner_id == "alice"
    assert sorted(second["workers"]) == sorted(
        [first["worker_id"], second["worker_id"]]
    )


async def test_an_admin_may_link_a_worker_to_anyones_job(
    alice: httpx.AsyncClient, admin: httpx.AsyncClient, joblib: JobLib
) -> None:
    first = await register(alice)
    linked = await register(admin, expect=200)
    assert set(linked["workers"]) == {first["worker_id"], linked["worker_id"]}
    assert (await job_row(joblib, "Rotate")).owner_id == "alice"


async def test_a_soft_deleted_job_stays_its_owners(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, joblib: JobLib
) -> None:
    job = await register(alice)
    assert (await alice.delete(f"/workers/{job['worker_id']}")).status_code == 204
    assert (await job_row(joblib, "Rotate")).deleted
    assert_problem(
        await bob.put("/rooms/room1/jobs", json={**SECRET, "name": "Rotate"}),
        403,
        "forbidden",
    )
    assert (await job_row(joblib, "Rotate")).deleted
    await register(alice)  # revived by its owner: 201, as a new registration
    assert not (await job_row(joblib, "Rotate")).deleted


async def _forget_owner(joblib: JobLib, name: str = "Rotate") -> None:
    """Make the job look like one from before 0.2.0, which has no owner."""
    async with joblib.database.write() as session:
        await session.execute(
            sa.text("UPDATE joblib_job SET owner_id = NULL WHERE name = :name"),
            {"name": name},
        )


async def test_a_job_from_before_owners_goes_to_its_registrant(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, joblib: JobLib
) -> None:
    await register(alice)
    await _forget_owner(joblib)
    before = await snapshot(joblib)
    # Bob serves none of it: the job is still the identity's whose workers serve it.
    assert_problem(
        await bob.put("/rooms/room1/jobs", json={**SECRET, "name": "Rotate"}),
        403,
        "forbidden",
    )
    assert await snapshot(joblib) == before
    await register(alice, expect=200)
    assert (await job_row(joblib, "Rotate")).owner_id == "alice"


async def test_an_unserved_job_from_before_owners_goes_to_whoever_registers(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, joblib: JobLib
) -> None:
    job = await register(alice)
    await _forget_owner(joblib)
    assert (await alice.delete(f"/workers/{job['worker_id']}")).status_code == 204
    await register(bob)  # the old rule: nobody serves it, anyone may take it
    assert (await job_row(joblib, "Rotate")).owner_id == "bob"
    assert_problem(
        await alice.put("/rooms/room1/jobs", json={**SECRET, "name": "Rotate"}),
        403,
        "forbidden",
    )


# --- every route asks the policy ----------------------------------------------


class Recording:
    """Allows everything and remembers every question (no `restricts`: always ask)."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, str]] = []
        self.locks: list[tuple[str, str]] = []

    async def allows(self, identity: Identity, room_id: str, action: Action) -> bool:
        self.asked.append((identity.id, room_id, action.value))
        return True

    async def locked(self, identity: Identity, room_id: str) -> bool:
        self.locks.append((identity.id, room_id))
        return False


async def test_every_rest_route_about_a_room_asks_the_policy(
    alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    worker_id, job_name = await serving_job(alice)
    task = await submit(alice, job_name)
    policy = Recording()
    joblib.policy = policy
    assert isinstance(policy, AccessPolicy)
    calls: list[tuple[str, str, Any, list[tuple[str, str, str]]]] = [
        ("PUT", "/rooms/room1/jobs", SECRET, [("alice", "room1", "register")]),
        ("GET", "/rooms/room1/jobs", None, [("alice", "room1", "read")]),
        ("GET", f"/rooms/room1/jobs/{job_name}", None, [("alice", "room1", "read")]),
        (
            "GET",
            f"/rooms/room1/jobs/{job_name}/tasks",
            None,
            [("alice", "room1", "read")],
        ),
        ("GET", "/rooms/room1/workers", None, [("alice", "room1", "read")]),
        ("GET", "/rooms/room1/tasks", None, [("alice", "room1", "read")]),
        (
            "POST",
            f"/rooms/room1/tasks/{job_name}",
            {"payload": {}},
            [("alice", "room1", "submit")],
        ),
        (
            "POST",
            f"/rooms/room1/tasks/{job_name}/batch",
            {"payloads": [{}]},
            [("alice", "room1", "submit")],
        ),
        ("GET", f"/tasks/{task['id']}", None, [("alice", "room1", "read")]),
        (
            "POST",
            "/tasks/claim",
            {"worker_id": worker_id},
            [("alice", "room1", "serve")],
        ),
        (
            "PATCH",
            f"/tasks/{task['id']}",
            {"status": "running"},
            [("alice", "room1", "read")],
        ),
        # Workers belong to no room: nothing to ask.
        ("POST", "/workers", None, []),
        ("GET", "/workers", None, []),
        ("PATCH", f"/workers/{worker_id}", None, []),
    ]
    for method, path, body, expected in calls:
        policy.asked.clear()
        answer = await alice.request(method, path, json=body)
        assert answer.status_code < 300, (method, path, answer.text)
        assert policy.asked == expected, (method, path)
    # Only the writes ask whether the room is locked.
    assert policy.locks == [("alice", "room1")] * 3


async def test_the_socket_events_ask_the_policy(
    alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    worker_id, job_name = await serving_job(alice)

    class Refusing(Recording):
        async def allows(
            self, identity: Identity, room_id: str, action: Action
        ) -> bool:
            await super().allows(identity, room_id, action)
            return False

    joblib.policy = policy = Refusing()
    realtime = _realtime(joblib, ALICE_ID)
    before = await snapshot(joblib)
    join = {"job_name": job_name, "worker_id": worker_id}
    _refused(await realtime.join_job_room("sid-1", join), 403, "forbidden")
    _refused(await realtime.join_room("sid-1", {"room_id": "room1"}), 403, "forbidden")
    assert policy.asked == [("alice", "room1", "serve"), ("alice", "room1", "observe")]
    assert await snapshot(joblib) == before  # the worker's epoch did not move
    assert realtime.connections["sid-1"].workers == {}


# --- an identity held to some rooms -------------------------------------------


@pytest.fixture
async def held(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, admin: httpx.AsyncClient
) -> JSON:
    """Alice serves a job in lab-1 and one in `other`, each with a task; then her
    token is held to `lab-*`. Bob and the admin are free."""
    lab_job = await register(alice, LAB, "LabJob")
    other_job = await register(alice, OTHER, "OtherJob", worker_id=lab_job["worker_id"])
    only_other = await register(alice, OTHER, "OnlyOther")
    await register(admin, "@global", "Everywhere")
    lab_task = await submit(bob, lab_job["full_name"], LAB, {"where": "lab"})
    other_task = await submit(bob, other_job["full_name"], OTHER, {"where": "other"})
    # Hers twice over: she submitted it and her worker runs it.
    hers = await submit(alice, only_other["full_name"], OTHER)
    running = await claim(alice, only_other["worker_id"], start=True)
    assert running is not None
    assert running["id"] == hers["id"]
    return {
        "worker": lab_job["worker_id"],
        "only_other_worker": only_other["worker_id"],
        "lab_job": lab_job["full_name"],
        "other_job": other_job["full_name"],
        "lab_task": lab_task["id"],
        "other_task": other_task["id"],
        "hers": hers["id"],
    }


@pytest.fixture
def held_to_lab(joblib: JobLib, held: JSON) -> JSON:
    joblib.policy = RoomPatterns({"alice": ["lab-*"]})
    return held


async def test_a_held_identity_is_refused_outside_its_rooms(
    alice: httpx.AsyncClient, joblib: JobLib, held_to_lab: JSON
) -> None:
    ids = held_to_lab
    before = await snapshot(joblib)
    refused: list[tuple[str, str, Any]] = [
        ("GET", f"/rooms/{OTHER}/jobs", None),
        ("GET", f"/rooms/{OTHER}/jobs/{ids['other_job']}", None),
        ("GET", f"/rooms/{OTHER}/jobs/{ids['other_job']}/tasks", None),
        ("GET", f"/rooms/{OTHER}/workers", None),
        ("GET", f"/rooms/{OTHER}/tasks", None),
        ("GET", f"/tasks/{ids['other_task']}", None),
        ("POST", f"/rooms/{OTHER}/tasks/{ids['other_job']}", {"payload": {}}),
        ("POST", f"/rooms/{OTHER}/tasks/@global:modifiers:Everywhere", {"payload": {}}),
        ("PUT", f"/rooms/{OTHER}/jobs", SECRET),
        ("PUT", "/rooms/@global/jobs", SECRET),
        ("POST", "/tasks/claim", {"worker_id": ids["only_other_worker"]}),
        # The task rules would let her (her worker, her submission); the room not.
        ("PATCH", f"/tasks/{ids['hers']}", {"status": "completed"}),
        ("PATCH", f"/tasks/{ids['hers']}", {"status": "cancelled"}),
    ]
    for method, path, body in refused:
        answer = await alice.request(method, path, json=body)
        assert_problem(answer, 403, "forbidden")
    assert await snapshot(joblib) == before


async def test_the_openapi_document_lists_the_refusals(
    alice: httpx.AsyncClient,
) -> None:
    paths = (await alice.get("/openapi.json")).json()["paths"]
    reads = [
        "/rooms/{room_id}/jobs",
        "/rooms/{room_id}/jobs/{full_name}",
        "/rooms/{room_id}/jobs/{full_name}/tasks",
        "/rooms/{room_id}/workers",
        "/rooms/{room_id}/tasks",
        "/tasks/{task_id}",
    ]
    for path in reads:
        assert "403" in paths[path]["get"]["responses"], path
    for method, path in [
        ("post", "/rooms/{room_id}/tasks/{full_name}"),
        ("post", "/rooms/{room_id}/tasks/{full_name}/batch"),
        ("put", "/rooms/{room_id}/jobs"),
    ]:
        assert {"403", "423"} <= set(paths[path][method]["responses"]), path
    for method, path in [("post", "/tasks/claim"), ("patch", "/tasks/{task_id}")]:
        assert "403" in paths[path][method]["responses"], path


async def test_a_held_identity_works_inside_its_rooms(
    alice: httpx.AsyncClient, joblib: JobLib, held_to_lab: JSON
) -> None:
    ids = held_to_lab
    listed = (await alice.get(f"/rooms/{LAB}/tasks")).json()
    assert [t["id"] for t in listed["items"]] == [ids["lab_task"]]
    assert (await get_task(alice, ids["lab_task"]))["payload"] == {"where": "lab"}
    jobs = (await alice.get(f"/rooms/{LAB}/jobs")).json()["items"]
    assert {j["full_name"] for j in jobs} == {
        ids["lab_job"],
        "@global:modifiers:Everywhere",
    }
    await register(alice, "lab-2", "Fresh")
    await submit(alice, "@global:modifiers:Everywhere", LAB)  # global, from lab-1
    # Her worker also serves a job in `other`: its task stays where it is.
    claimed = await claim(alice, ids["worker"], start=True)
    assert claimed is not None
    assert claimed["id"] == ids["lab_task"]
    assert await claim(alice, ids["worker"]) is None
    done = await alice.patch(f"/tasks/{ids['lab_task']}", json={"status": "completed"})
    assert done.status_code == 200, done.text
    assert (await get_task(alice, ids["lab_task"]))["status"] == "completed"


async def test_others_keep_every_room(
    bob: httpx.AsyncClient, admin: httpx.AsyncClient, held_to_lab: JSON
) -> None:
    for client in (bob, admin):
        assert (await client.get(f"/rooms/{OTHER}/tasks")).json()["total"] == 2
        task = await get_task(client, held_to_lab["other_task"])
        assert task["payload"] == {"where": "other"}


async def test_a_refused_long_poll_does_not_wait(
    alice: httpx.AsyncClient, joblib: JobLib, held_to_lab: JSON
) -> None:
    with anyio.fail_after(30):  # the wait asked for is a minute
        answer = await alice.get(
            f"/tasks/{held_to_lab['other_task']}", headers={"Prefer": "wait=60"}
        )
    assert_problem(answer, 403, "forbidden")
    assert len(joblib.waiters) == 0


async def test_a_held_identity_on_the_socket(joblib: JobLib, held_to_lab: JSON) -> None:
    realtime = _realtime(joblib, ALICE_ID)
    before = await snapshot(joblib)
    _refused(await realtime.join_room("sid-1", {"room_id": OTHER}), 403, "forbidden")
    join = {"job_name": held_to_lab["other_job"], "worker_id": held_to_lab["worker"]}
    _refused(await realtime.join_job_room("sid-1", join), 403, "forbidden")
    assert await snapshot(joblib) == before
    # Allowed: it gets as far as entering the room, which needs a real client
    # (the live tests connect one).
    with pytest.raises((ValueError, KeyError)):
        await realtime.join_room("sid-1", {"room_id": LAB})


# --- a locked room ------------------------------------------------------------


class Frozen(OpenRooms):
    """Every room open, but `frozen` takes no writes, except from admins."""

    def restricts(self, identity: Identity) -> bool:
        return True

    async def locked(self, identity: Identity, room_id: str) -> bool:
        return room_id == "frozen" and not identity.is_admin


async def test_a_locked_room_refuses_writes_with_423(
    alice: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    joblib: JobLib,
) -> None:
    _, job_name = await serving_job(alice, "frozen")
    await register(admin, "@global", "Everywhere")
    joblib.policy = Frozen()
    before = await snapshot(joblib)
    for method, path, body in [
        ("POST", f"/rooms/frozen/tasks/{job_name}", {"payload": {}}),
        ("POST", "/rooms/frozen/tasks/@global:modifiers:Everywhere", {"payload": {}}),
        ("PUT", "/rooms/frozen/jobs", SECRET),
    ]:
        answer = await alice.request(method, path, json=body)
        body = assert_problem(answer, 423, "room-locked")
        assert "frozen" in body["detail"]
    assert await snapshot(joblib) == before
    # Reads go on; other rooms take writes; the policy may let admins through.
    assert (await alice.get("/rooms/frozen/tasks")).status_code == 200
    await submit(alice, "@global:modifiers:Everywhere", "room1")
    await submit(admin, job_name, "frozen")


async def test_a_refusal_comes_before_a_lock(
    alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    _, job_name = await serving_job(alice, "frozen")

    class Closed(Frozen):
        async def allows(
            self, identity: Identity, room_id: str, action: Action
        ) -> bool:
            return action != Action.SUBMIT

    joblib.policy = Closed()
    answer = await alice.post(f"/rooms/frozen/tasks/{job_name}", json={"payload": {}})
    assert_problem(answer, 403, "forbidden")


async def test_the_readme_policy_example(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, joblib: JobLib
) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    block = re.search(r"<!-- policy-example -->\n```python\n(.*?)```", readme, re.S)
    assert block, "README.md has no policy-example block"
    namespace: dict[str, Any] = {}
    exec(block.group(1), namespace)
    _, job_name = await serving_job(alice)
    members: dict[str, set[str]] = {"room1": {"alice"}}
    joblib.policy = namespace["Members"](members, {"frozen"})
    assert isinstance(joblib.policy, AccessPolicy)

    assert (await bob.get("/rooms/room1/tasks")).status_code == 200
    refused = await bob.post(f"/rooms/room1/tasks/{job_name}", json={"payload": {}})
    assert_problem(refused, 403, "forbidden")
    await submit(alice, job_name)
    members["frozen"] = {"alice"}
    answer = await alice.put("/rooms/frozen/jobs", json=SECRET)
    assert_problem(answer, 423, "room-locked")


# --- the deprecated hook --------------------------------------------------------


async def test_may_observe_still_works_but_warns(joblib: JobLib) -> None:
    async def nobody(identity: Identity, room_id: str) -> bool:
        return False

    sio = socketio.AsyncServer(async_mode="asgi")
    with pytest.warns(DeprecationWarning, match="may_observe"):
        realtime = attach_joblib(sio, joblib, may_observe=nobody)
    realtime.accept("sid-1", ALICE_ID)
    _refused(await realtime.join_room("sid-1", {"room_id": "room1"}), 403, "forbidden")


# --- the policies themselves ------------------------------------------------------


@pytest.mark.parametrize(
    ("identity", "room", "allowed"),
    [
        (ALICE_ID, "lab-1", True),
        (ALICE_ID, "lab-", True),
        (ALICE_ID, "LAB-1", False),  # case-sensitive
        (ALICE_ID, "alice-r", True),
        (ALICE_ID, "alice-r2", False),
        (ALICE_ID, "room1", False),
        (ALICE_ID, "@global", False),  # a reserved room is a room like others
        (BOB_ID, "anything", True),  # not listed: free
        (BOB_ID, "@global", True),
        (Identity("alice", is_admin=True), "room1", True),  # admins: everywhere
    ],
)
async def test_room_patterns(identity: Identity, room: str, allowed: bool) -> None:
    policy = RoomPatterns({"alice": ["lab-*", "alice-r"]})
    for action in Action:
        assert await policy.allows(identity, room, action) is allowed
    assert await policy.locked(identity, room) is False


async def test_room_patterns_star_and_nothing() -> None:
    policy = RoomPatterns({"everywhere": ["*"], "nowhere": []})
    assert await policy.allows(Identity("everywhere"), "@global", Action.OBSERVE)
    assert not await policy.allows(Identity("nowhere"), "room1", Action.READ)


def test_who_the_policies_restrict() -> None:
    patterns = RoomPatterns({"alice": ["lab-*"]})
    assert restricts(patterns, ALICE_ID)
    assert not restricts(patterns, BOB_ID)
    assert not restricts(patterns, Identity("alice", is_admin=True))
    assert not restricts(OpenRooms(), ALICE_ID)
    assert restricts(Recording(), ADMIN_ID)  # a policy that does not say: ask it


# --- the token table's rooms ----------------------------------------------------


def test_the_token_table_reads_rooms() -> None:
    table = TokenTable.from_json(
        json.dumps(
            {
                "t1": {"id": "alice", "rooms": ["lab-*", "alice-r"]},
                "t2": {"id": "alice", "rooms": ["alice-r", "lab-*"]},
                "t3": {"id": "root", "admin": True},
                "t4": {"id": "bob"},
            }
        )
    )
    assert table.identities == {
        "t1": ALICE_ID,
        "t2": ALICE_ID,
        "t3": Identity("root", is_admin=True),
        "t4": BOB_ID,
    }
    assert table.rooms == {"alice": ("alice-r", "lab-*")}
    # The old reader still reads the same table.
    assert tokens_from_env(json.dumps({"t": {"id": "x", "rooms": ["a"]}})) == {
        "t": Identity("x")
    }


@pytest.mark.parametrize(
    "entries",
    [
        {"t": {"id": "alice", "rooms": "lab-*"}},
        {"t": {"id": "alice", "rooms": [""]}},
        {"t": {"id": "alice", "rooms": [5]}},
        # Rooms hold an identity, not a token: one identity, one list.
        {"t1": {"id": "alice", "rooms": ["a"]}, "t2": {"id": "alice", "rooms": ["b"]}},
        {"t1": {"id": "alice", "rooms": ["a"]}, "t2": {"id": "alice"}},
    ],
)
def test_the_token_table_refuses_bad_rooms(entries: JSON) -> None:
    with pytest.raises(ValueError, match=r"JOBLIB_TOKENS: .*'alice'"):
        TokenTable.from_json(json.dumps(entries))


def test_the_token_store_writes_rooms(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    token = store.create(ALICE_ID, ["lab-*"])
    second = store.create(ALICE_ID, ["lab-*"])
    free = store.create(BOB_ID)
    stored = json.loads(store.path.read_text())
    assert stored[token] == {"id": "alice", "admin": False, "rooms": ["lab-*"]}
    assert stored[free] == {"id": "bob", "admin": False}  # as 0.1.0 wrote them
    assert store.table().rooms == {"alice": ("lab-*",)}
    assert set(store.load()) == {token, second, free}
    with pytest.raises(ValueError, match="different 'rooms'"):
        store.create(ALICE_ID, ["elsewhere"])
    assert json.loads(store.path.read_text()) == stored  # unchanged


def test_the_token_command_takes_rooms(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens = tmp_path / "tokens.json"
    command = ["token", "--name", "alice", "--tokens-file", str(tokens)]
    assert main([*command, "--room", "lab-*", "--room", "alice-r"]) == 0
    token = capsys.readouterr().out.strip()
    entry = json.loads(tokens.read_text())[token]
    assert entry == {"id": "alice", "admin": False, "rooms": ["lab-*", "alice-r"]}
    assert main(command) == 2  # alice's rooms would differ between her tokens
    assert re.search(r"error: .*different 'rooms'", capsys.readouterr().err)
    assert len(json.loads(tokens.read_text())) == 1


async def test_joblib_defaults_to_open_rooms(
    make_client: ClientFactory, joblib: JobLib
) -> None:
    assert isinstance(joblib.policy, OpenRooms)
    # Anyone reads and submits anywhere; the job stays its registrant's.
    _, job_name = await serving_job(make_client(ALICE), "anywhere")
    assert job_name == full_name("anywhere")
    bob = make_client(BOB)
    assert (await bob.get("/rooms/anywhere/jobs")).json()["total"] == 1
    await submit(bob, job_name, "anywhere")
    await register(make_client(ADMIN), "anywhere", expect=200)
    await register(bob, "anywhere", expect=403)
