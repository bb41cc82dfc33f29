"""Our SQLite connection under each SQLAlchemy we support (2.0 and 2.1).

SQLAlchemy's aiosqlite dialect drives `_inline_sqlite` through a different adapter in
2.0 than in 2.1 (2.0 awaits `conn.cursor()`, 2.1 enters the cursor). Each test takes
one of the adapter's paths: a statement with rows, one with a count, executemany, a
failing statement, a streamed (server-side) result. CI runs this module, with the
REST, realtime and cleanup tests, on the newest SQLAlchemy 2.0.x as well.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from joblib_server import Database

pytestmark = pytest.mark.anyio

ROWS = [{"x": 1, "y": "a"}, {"x": 2, "y": "b"}, {"x": 3, "y": "c"}]


@pytest.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator[Database]:
    """A SQLite `Database` with a table `t` holding `ROWS`."""
    database = Database.from_url(f"sqlite:///{tmp_path / 'versions.db'}")
    async with database.write() as session:
        await session.execute(sa.text("CREATE TABLE t (x INTEGER PRIMARY KEY, y TEXT)"))
        inserted = await session.execute(
            sa.text("INSERT INTO t (x, y) VALUES (:x, :y)"), ROWS
        )
        assert inserted.rowcount == len(ROWS)  # type: ignore[attr-defined]
    yield database
    await database.dispose()


async def _all(database: Database) -> list[tuple[int, str]]:
    async with database.read() as session:
        rows = await session.execute(sa.text("SELECT x, y FROM t ORDER BY x"))
        return [(x, y) for x, y in rows]


async def test_statements_answer_rows_counts_and_new_ids(sqlite: Database) -> None:
    assert await _all(sqlite) == [(1, "a"), (2, "b"), (3, "c")]
    async with sqlite.write() as session:
        changed = await session.execute(sa.text("UPDATE t SET y = 'z' WHERE x >= 2"))
        assert changed.rowcount == 2  # type: ignore[attr-defined]
        added = await session.execute(sa.text("INSERT INTO t (y) VALUES ('d')"))
        assert added.lastrowid == 4  # type: ignore[attr-defined]
    assert await _all(sqlite) == [(1, "a"), (2, "z"), (3, "z"), (4, "d")]


async def _insert_a_row_then_a_duplicate(database: Database) -> None:
    async with database.write() as session:
        await session.execute(sa.text("INSERT INTO t (y) VALUES ('kept?')"))
        await session.execute(sa.text("INSERT INTO t (x, y) VALUES (1, 'again')"))


async def test_a_failed_statement_raises_and_its_transaction_rolls_back(
    sqlite: Database,
) -> None:
    with pytest.raises(sa.exc.IntegrityError, match="UNIQUE"):
        await _insert_a_row_then_a_duplicate(sqlite)
    assert await _all(sqlite) == [(1, "a"), (2, "b"), (3, "c")]
    # The connection went back to the pool in working order.
    async with sqlite.write() as session:
        await session.execute(sa.text("INSERT INTO t (y) VALUES ('d')"))
    assert (await _all(sqlite))[-1] == (4, "d")


async def test_a_streamed_result_arrives_in_parts(sqlite: Database) -> None:
    async with sqlite.read() as session:
        result = await session.stream(sa.text("SELECT x FROM t ORDER BY x"))
        parts = [[x for (x,) in part] async for part in result.partitions(2)]
    assert parts == [[1, 2], [3]]
