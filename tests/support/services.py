"""PostgreSQL and Redis for the tests: where they are, and what to do without them.

Locally a missing service skips the tests that need it, with a message; CI sets
JOBLIB_TEST_REQUIRE_SERVICES=1 to fail them instead.
"""

from __future__ import annotations

import asyncio
import os
from typing import NoReturn

import pytest

PG_ADMIN_URL = os.environ.get(
    "JOBLIB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("JOBLIB_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRE_SERVICES = os.environ.get("JOBLIB_TEST_REQUIRE_SERVICES") == "1"


def service_missing(what: str) -> NoReturn:
    """Skip the test because `what` is not there (fail it when CI requires it)."""
    message = f"{what} is not reachable; skipping (CI requires it)"
    if REQUIRE_SERVICES:
        pytest.fail(message)
    pytest.skip(message)


async def pg_exec(url: str, *statements: str) -> None:
    """Run `statements` one by one on their own asyncpg connection to `url`."""
    import asyncpg

    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


def empty_postgres(url: str) -> None:
    """Delete every row of joblib's tables in the PostgreSQL database at `url`."""
    asyncio.run(
        pg_exec(
            url,
            "TRUNCATE joblib_task, joblib_worker_job, joblib_worker, joblib_job,"
            " joblib_idempotency_key, joblib_provider",
        )
    )


def require_redis(url: str = REDIS_URL) -> None:
    """Skip (or, in CI, fail) the test unless Redis answers at `url`."""
    import redis

    try:
        redis.Redis.from_url(url, socket_timeout=2).ping()
    except redis.exceptions.ConnectionError as exc:
        service_missing(f"Redis at {url} ({exc})")
