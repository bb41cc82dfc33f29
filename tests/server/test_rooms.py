"""`GET /rooms` (ours): the rooms with jobs or tasks that the caller may read."""

from __future__ import annotations

import httpx
import pytest

from joblib_server import Action, Identity, JobLib, RoomPatterns
from tests.support.rest import (
    ClientFactory,
    assert_problem,
    claim,
    register,
    serving_job,
    submit,
    update,
)
from tests.support.tokens import ADMIN, BOB

pytestmark = pytest.mark.anyio


def _rooms(answer: httpx.Response) -> dict[str, dict[str, int]]:
    assert answer.status_code == 200, answer.text
    return {
        room.pop("room_id"): room
        for room in answer.json()["items"]  # {"room_id", "jobs", "pending", "running"}
    }


async def test_no_jobs_and_no_tasks_is_no_rooms(alice: httpx.AsyncClient) -> None:
    answer = await alice.get("/rooms")
    assert answer.json() == {"items": [], "total": 0, "limit": 50, "offset": 0}


async def test_rooms_with_jobs_or_tasks_and_what_is_in_them(
    alice: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    worker_id, job_name = await serving_job(alice, "lab")
    await register(alice, "lab", "Energy", worker_id=worker_id)
    await register(alice, "quiet", "Idle")
    globals_ = await register(admin, "@global", "Shared")
    first, second, third = [await submit(alice, job_name, "lab") for _ in range(3)]
    assert (await claim(alice, worker_id))["id"] == first["id"]  # type: ignore[index]
    assert (await claim(alice, worker_id, start=True))["id"] == second["id"]  # type: ignore[index]
    await submit(alice, globals_["full_name"], "elsewhere")  # a room with tasks only

    assert _rooms(await alice.get("/rooms")) == {
        "@global": {"jobs": 1, "pending": 0, "running": 0},
        "elsewhere": {"jobs": 0, "pending": 1, "running": 0},
        "lab": {"jobs": 2, "pending": 1, "running": 2},  # claimed and running
        "quiet": {"jobs": 1, "pending": 0, "running": 0},
    }
    await update(alice, third["id"], "cancelled")
    await update(alice, second["id"], "completed")
    assert _rooms(await alice.get("/rooms"))["lab"] == {
        "jobs": 2,
        "pending": 0,
        "running": 1,
    }


async def test_rooms_come_by_room_id_in_pages(alice: httpx.AsyncClient) -> None:
    for room in ("c", "a", "d", "b"):
        await register(alice, room, "Job")
    first = (await alice.get("/rooms", params={"limit": 3})).json()
    assert [r["room_id"] for r in first["items"]] == ["a", "b", "c"]
    assert first["total"] == 4
    rest = (await alice.get("/rooms", params={"limit": 3, "offset": 3})).json()
    assert [r["room_id"] for r in rest["items"]] == ["d"]
    assert_problem(
        await alice.get("/rooms", params={"limit": 501}), 422, "validation-error"
    )
    assert_problem(
        await alice.get("/rooms", params={"offset": -1}), 422, "validation-error"
    )


async def test_an_identity_sees_only_the_rooms_the_policy_lets_it_read(
    alice: httpx.AsyncClient, make_client: ClientFactory, joblib: JobLib
) -> None:
    for room in ("lab-1", "lab-2", "alice-r", "other"):
        await register(alice, room, "Job")
    joblib.policy = RoomPatterns({"bob": ["lab-*"]})
    bob, admin = make_client(BOB), make_client(ADMIN)
    assert list(_rooms(await bob.get("/rooms"))) == ["lab-1", "lab-2"]
    assert (await bob.get("/rooms")).json()["total"] == 2
    assert list(_rooms(await admin.get("/rooms"))) == [
        "alice-r",
        "lab-1",
        "lab-2",
        "other",
    ]


async def test_the_policy_is_asked_to_read_each_room(
    alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    await register(alice, "one", "Job")
    await register(alice, "two", "Job")
    asked: list[tuple[str, str, Action]] = []

    class Recording:
        async def allows(
            self, identity: Identity, room_id: str, action: Action
        ) -> bool:
            asked.append((identity.id, room_id, action))
            return room_id == "two"

        async def locked(self, identity: Identity, room_id: str) -> bool:
            return False

    joblib.policy = Recording()
    assert list(_rooms(await alice.get("/rooms"))) == ["two"]
    assert asked == [("alice", "one", Action.READ), ("alice", "two", Action.READ)]


async def test_rooms_need_an_identity(make_client: ClientFactory) -> None:
    assert_problem(await make_client(None).get("/rooms"), 401, "unauthorized")
