"""The wake bus: a change committed by one `JobLib` wakes the waiters of another.

Two `JobLib`s on one database, each with its own bus and listener, stand for two
server processes (tests/integration/test_wake_processes.py runs real ones). The
re-check is 60 s, so an answer within seconds can only come from the bus.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from joblib_protocol import Emission, TaskAvailable, TaskStatus, TaskStatusEvent
from joblib_server import Database, JobLib, TokenAuth
from joblib_server.wakebus import (
    MAX_PAYLOAD_BYTES,
    Listening,
    NoWakeBus,
    PostgresWakeBus,
    RedisWakeBus,
    Wake,
    choose_wake_bus,
    listener_name,
    wake_of,
)
from tests.support.rest import (
    ROOM,
    claim,
    full_name,
    register,
    serving_job,
    submit,
    update,
)
from tests.support.servers import make_settings
from tests.support.services import REDIS_URL, pg_exec, require_redis
from tests.support.tokens import ALICE, BOB, TOKENS, bearer
from tests.support.waiting import aeventually

pytestmark = pytest.mark.anyio

RECHECK = 60.0
"""The safety-net re-check: far beyond every wait below."""
WOKEN_WITHIN = 5.0


# --- the message ------------------------------------------------------------


def _status(task_id: str, status: TaskStatus) -> Emission:
    now = datetime.now(UTC)
    event = TaskStatusEvent(
        id=task_id, name="r:modifiers:J", room_id="r", status=status, created_at=now
    )
    return Emission(event, "room:r")


def test_wake_of_takes_new_tasks_finished_tasks_and_removed_workers() -> None:
    done, running = str(uuid.uuid4()), str(uuid.uuid4())
    worker = uuid.uuid4()
    available = TaskAvailable(job_name="r:modifiers:J", room_id="r", task_id=running)
    wake = wake_of(
        [
            Emission(available, "jobs:r:modifiers:J"),
            _status(done, TaskStatus.COMPLETED),
            _status(done, TaskStatus.COMPLETED),
            _status(running, TaskStatus.RUNNING),
        ],
        {worker},
    )
    assert wake == Wake(jobs=("r:modifiers:J",), tasks=(done,), workers=(str(worker),))
    assert not wake_of([_status(running, TaskStatus.RUNNING)], ())


def test_a_message_round_trips_and_a_huge_one_wakes_everyone() -> None:
    wake = Wake(jobs=("a:b:c", "a:b:c"), tasks=("t",), workers=("w",), origin="me")
    assert Wake.decode(wake.encode()) == wake
    huge = Wake(tasks=tuple(str(uuid.uuid4()) for _ in range(500)), origin="me")
    encoded = huge.encode()
    assert len(encoded) < MAX_PAYLOAD_BYTES
    assert Wake.decode(encoded) == Wake(everyone=True, origin="me")
    assert Wake.decode("not json") is None
    assert Wake.decode('{"j": []}') is None  # no origin: not ours


async def test_the_setting_chooses_the_bus(postgres_url: str, tmp_path: Path) -> None:
    sqlite = Database.from_url(f"sqlite:///{tmp_path}/joblib.db")
    postgres = Database.from_url(postgres_url)
    try:
        assert isinstance(choose_wake_bus("auto", sqlite), NoWakeBus)
        assert isinstance(choose_wake_bus("auto", postgres), PostgresWakeBus)
        assert isinstance(choose_wake_bus("off", postgres), NoWakeBus)
        redis_bus = choose_wake_bus("auto", sqlite, REDIS_URL)
        assert isinstance(redis_bus, RedisWakeBus)
        await redis_bus.aclose()
        with pytest.raises(ValueError, match="PostgreSQL"):
            choose_wake_bus("postgresql", sqlite)
        with pytest.raises(ValueError, match="Redis URL"):
            choose_wake_bus("redis", postgres)
    finally:
        await sqlite.dispose()
        await postgres.dispose()


# --- two JobLibs --------------------------------------------------------------


@dataclass
class Side:
    """One `JobLib` (a server process, as far as the bus can tell) and its clients."""

    joblib: JobLib
    client: Callable[[str], httpx.AsyncClient]

    def count(self, direction: str) -> float:
        value = self.joblib.metrics.registry.get_sample_value(
            "joblib_wake_bus_messages_total", {"direction": direction}
        )
        return value or 0.0

    @property
    def subscriptions(self) -> float:
        value = self.joblib.metrics.registry.get_sample_value(
            "joblib_wake_bus_subscriptions_total"
        )
        return value or 0.0


EMPTY_TABLES = (
    "TRUNCATE joblib_task, joblib_worker_job, joblib_worker, joblib_job,"
    " joblib_idempotency_key, joblib_provider"
)

CASES = {
    "postgresql-notify": ("postgresql", "postgresql"),
    "postgresql-redis": ("postgresql", "redis"),
    "sqlite-redis": ("sqlite", "redis"),
}
"""Database and bus: NOTIFY needs PostgreSQL, Redis goes with either."""


@pytest.fixture(params=list(CASES))
def bus(request: pytest.FixtureRequest) -> str:
    """The bus of the case (the case's name is the test id)."""
    if CASES[request.param][1] == "redis":
        require_redis()
    return str(request.param)


@pytest.fixture
async def pair(
    request: pytest.FixtureRequest, bus: str, tmp_path: Path
) -> AsyncIterator[tuple[Side, Side]]:
    """Two JobLibs on the case's database, their buses listening."""
    database_kind, bus = CASES[bus]
    if database_kind == "postgresql":
        database_url: str = request.getfixturevalue("postgres_url")
        await pg_exec(database_url, EMPTY_TABLES)
    else:
        database_url = f"sqlite:///{tmp_path / 'joblib.db'}"
    settings = make_settings(
        long_poll_max_wait_seconds=30, long_poll_recheck_seconds=RECHECK, wake_bus=bus
    )
    async with AsyncExitStack() as stack:
        sides = []
        for _ in range(2):
            database = Database.from_url(database_url)
            joblib = JobLib(
                database=database,
                auth=TokenAuth(TOKENS),
                settings=settings,
                sweeper=False,
                wake_bus=choose_wake_bus(bus, database, REDIS_URL),  # type: ignore[arg-type]
            )
            await stack.enter_async_context(joblib.lifespan())
            app = Starlette(routes=[Mount("/v1/joblib", app=joblib.asgi_app())])

            def client(token: str, app: Starlette = app) -> httpx.AsyncClient:
                return httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app),
                    base_url="http://testserver/v1/joblib",
                    headers=bearer(token),
                    timeout=30,
                )

            side = Side(joblib, client)
            await aeventually(_listening(side), what="the bus listening")
            sides.append(side)
        yield sides[0], sides[1]


def _listening(side: Side) -> Callable[[], bool]:
    return lambda: side.subscriptions >= 1


async def _held_claim(
    client: httpx.AsyncClient, worker_id: str, answers: list[tuple[dict, float]]
) -> None:
    answer = await client.post(
        "/tasks/claim",
        json={"worker_id": worker_id, "start": True},
        headers={"Prefer": "wait=30"},
    )
    assert answer.status_code == 200, answer.text
    answers.append((answer.json(), anyio.current_time()))


async def test_a_submit_on_a_wakes_a_claim_held_on_b(pair: tuple[Side, Side]) -> None:
    a, b = pair
    async with a.client(BOB) as on_a, b.client(ALICE) as on_b:
        worker_id, job_name = await serving_job(on_b)
        answers: list[tuple[dict, float]] = []
        async with anyio.create_task_group() as group:
            group.start_soon(_held_claim, on_b, worker_id, answers)
            await aeventually(lambda: len(b.joblib.claims) == 1, what="a held claim")
            await aeventually(
                lambda: b.joblib.claims.known_jobs(uuid.UUID(worker_id)),
                what="the claim parked on its job",
            )
            submitted_at = anyio.current_time()
            task = await submit(on_a, job_name)
        [(answer, answered_at)] = answers
    assert answer["task"]["id"] == task["id"]
    assert answered_at - submitted_at < WOKEN_WITHIN
    assert a.count("sent") >= 1
    assert b.count("received") >= 1
    # A heard its own message too, and left it alone.
    assert a.count("received") == 0


async def test_a_completion_on_a_answers_a_long_poll_on_b(
    pair: tuple[Side, Side],
) -> None:
    a, b = pair
    async with a.client(ALICE) as on_a, b.client(BOB) as on_b:
        worker_id, job_name = await serving_job(on_a)
        task = await submit(on_b, job_name)
        assert (await claim(on_a, worker_id, start=True) or {})["id"] == task["id"]
        answers: list[tuple[httpx.Response, float]] = []

        async def long_poll() -> None:
            answer = await on_b.get(
                f"/tasks/{task['id']}", headers={"Prefer": "wait=30"}
            )
            answers.append((answer, anyio.current_time()))

        async with anyio.create_task_group() as group:
            group.start_soon(long_poll)
            await aeventually(lambda: len(b.joblib.waiters) == 1, what="a long-poll")
            completed_at = anyio.current_time()
            await update(on_a, task["id"], "completed")
        [(answer, answered_at)] = answers
    assert answer.json()["status"] == "completed"
    assert answered_at - completed_at < WOKEN_WITHIN


async def _kill_listeners(bus: str) -> None:
    """Cut every wake bus listener of this process from the server's side."""
    name = listener_name()
    if bus == "postgresql":
        from tests.support.services import PG_ADMIN_URL

        await pg_exec(
            PG_ADMIN_URL,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE application_name = '{name}'",
        )
        return
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        for info in await client.client_list():
            if info.get("name") == name:
                await client.client_kill_filter(_id=info["id"])
    finally:
        await client.aclose()


async def test_a_listener_cut_off_listens_again_and_wakes_its_waiters(
    pair: tuple[Side, Side], bus: str
) -> None:
    a, b = pair
    bus = CASES[bus][1]
    async with a.client(BOB) as on_a, b.client(ALICE) as on_b:
        worker_id, job_name = await serving_job(on_b)
        other = await register(on_a, ROOM, "Other")
        answers: list[tuple[dict, float]] = []
        async with anyio.create_task_group() as group:
            group.start_soon(_held_claim, on_b, worker_id, answers)
            await aeventually(
                lambda: b.joblib.claims.known_jobs(uuid.UUID(worker_id)),
                what="the claim parked on its job",
            )
            before = b.subscriptions
            await _kill_listeners(bus)
            # Listening again, every waiter re-checks once: the claim stays held
            # (nothing to claim) and is woken again by the next submit.
            await aeventually(
                lambda: b.subscriptions > before, timeout=15, what="a new subscription"
            )
            await aeventually(
                lambda: len(b.joblib.claims) == 1, what="the claim held again"
            )
            assert not answers
            # A submit on another job concerns nobody here.
            await submit(on_a, str(other["full_name"]))
            submitted_at = anyio.current_time()
            task = await submit(on_a, job_name)
        [(answer, answered_at)] = answers
    assert answer["task"]["id"] == task["id"]
    assert answered_at - submitted_at < WOKEN_WITHIN


async def test_a_rolled_back_change_sends_nothing(postgres_url: str) -> None:
    """NOTIFY rides the transaction: a change that fails is never announced."""
    database = Database.from_url(postgres_url)
    bus = PostgresWakeBus(database)
    heard: list[str] = []
    import asyncpg

    listener = await asyncpg.connect(postgres_url)
    try:
        await listener.add_listener(bus.channel, lambda *args: heard.append(args[-1]))

        async def failing_change() -> None:
            async with database.write() as session:
                await bus.send_in(session, Wake(jobs=(full_name(),)))
                raise RuntimeError("the change fails")

        with pytest.raises(RuntimeError):
            await failing_change()
        async with database.write() as session:
            await bus.send_in(session, Wake(tasks=("committed",)))
        await aeventually(lambda: heard, what="the committed change's NOTIFY")
        assert [Wake.decode(text) for text in heard] == [
            Wake(tasks=("committed",), origin=bus.origin)
        ]
    finally:
        await listener.close()
        await database.dispose()


async def test_a_bus_that_cannot_connect_keeps_trying_and_fails_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis down: publishing logs and returns, the listener tries again."""
    bus = RedisWakeBus("redis://127.0.0.1:1")
    subscribed: list[None] = []
    try:
        assert not await bus.send_after(Wake(jobs=("a:b:c",)))
        async with anyio.create_task_group() as group:
            listening = Listening(lambda wake: None, lambda: subscribed.append(None))
            group.start_soon(bus.listen, listening)
            await aeventually(
                lambda: (
                    sum("lost its connection" in r.message for r in caplog.records) >= 2
                ),
                what="two tries to listen",
            )
            group.cancel_scope.cancel()
    finally:
        await bus.aclose()
    assert not subscribed
    assert "publishing a wake-up on Redis failed" in caplog.text
