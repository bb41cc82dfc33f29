"""The result backends behind one protocol: in-process, and Redis (several processes).

Each test runs on `MemoryResults` and on `RedisResults`; two `RedisResults` on
one Redis stand for two server processes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import anyio
import pytest

from joblib_server.provider_results import (
    Failure,
    MemoryResults,
    RedisResults,
    ResultBackend,
)
from tests.support.services import REDIS_URL, require_redis
from tests.support.waiting import aeventually

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "redis"])
async def backends(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[ResultBackend, ResultBackend]]:
    """Two views of one store: the same object in memory, two clients of Redis."""
    if request.param == "memory":
        memory = MemoryResults()
        yield memory, memory
        return
    require_redis()
    prefix = f"joblib-test:{uuid.uuid4().hex[:8]}"
    first = RedisResults(REDIS_URL, prefix=prefix)
    second = RedisResults(REDIS_URL, prefix=prefix)
    try:
        yield first, second
    finally:
        await first.aclose()
        await second.aclose()


async def nothing() -> None:
    pass


async def test_one_mark_per_key_until_answered(
    backends: tuple[ResultBackend, ResultBackend],
) -> None:
    one, other = backends
    assert await one.acquire("k", 30)
    assert not await other.acquire("k", 30)
    assert await other.acquire("other", 30)
    await other.store("k", b"v", 30)
    assert await one.get("k") == b"v"
    assert await one.acquire("k", 30), "the store released the mark"
    await one.fail("k", "no")
    assert await other.acquire("k", 30), "the failure released the mark"


async def test_marks_and_results_expire(
    backends: tuple[ResultBackend, ResultBackend],
) -> None:
    one, other = backends
    assert await one.acquire("k", 0.1)
    await one.store("r", b"v", 0.1)
    await aeventually(lambda: other.acquire("k", 30), what="the mark to expire")
    await aeventually(
        lambda: _missing(other, "r"), what="the result to expire", timeout=5
    )


async def _missing(backend: ResultBackend, key: str) -> bool:
    return await backend.get(key) is None


async def test_a_store_wakes_every_waiter_on_either_side(
    backends: tuple[ResultBackend, ResultBackend],
) -> None:
    one, other = backends
    started: list[str] = []
    answers: list[object] = []

    async def wait(backend: ResultBackend) -> None:
        async def start() -> None:
            started.append("x")

        answers.append(await backend.wait("k", 10, start))

    async with anyio.create_task_group() as group:
        for backend in (one, other, one, other):
            group.start_soon(wait, backend)
        await aeventually(lambda: len(started) == 4, what="four waiters")
        await other.store("k", b"bytes", 30)
    assert answers == [b"bytes"] * 4


async def test_a_failure_wakes_every_waiter_at_once_and_caches_nothing(
    backends: tuple[ResultBackend, ResultBackend],
) -> None:
    one, other = backends
    started: list[str] = []
    answered: list[tuple[float, object]] = []

    async def wait(backend: ResultBackend) -> None:
        async def start() -> None:
            started.append("x")

        answer = await backend.wait("k", 10, start)
        answered.append((time.monotonic(), answer))

    async with anyio.create_task_group() as group:
        for backend in (one, other):
            group.start_soon(wait, backend)
        await aeventually(lambda: len(started) == 2, what="two waiters")
        failed = time.monotonic()
        await one.fail("k", "broken")
    assert [answer for _, answer in answered] == [Failure("broken")] * 2
    assert all(at - failed < 0.1 for at, _ in answered)
    assert await other.get("k") is None


async def test_a_cached_result_answers_without_starting(
    backends: tuple[ResultBackend, ResultBackend],
) -> None:
    one, other = backends
    await one.store("k", b"cached", 30)
    started: list[str] = []

    async def start() -> None:
        started.append("x")

    assert await other.wait("k", 10, start) == b"cached"
    assert started == []


async def test_no_answer_within_the_wait_is_none(
    backends: tuple[ResultBackend, ResultBackend],
) -> None:
    one, _ = backends
    began = time.monotonic()
    assert await one.wait("k", 0.2, nothing) is None
    assert time.monotonic() - began >= 0.2
