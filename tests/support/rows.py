"""What the database holds, read past the API: row counts, rows, a snapshot."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select

from joblib_server import Database, Job, JobLib, Task
from tests.support.rest import ROOM

TABLES = ("joblib_job", "joblib_worker", "joblib_worker_job", "joblib_task")


async def row_counts(joblib: JobLib) -> dict[str, int]:
    """How many rows each table holds."""
    async with joblib.database.read() as session:
        return {
            table: int(
                (
                    await session.execute(sa.text(f"SELECT count(*) FROM {table}"))
                ).scalar_one()
            )
            for table in TABLES
        }


async def snapshot(joblib: JobLib) -> dict[str, list[tuple[str, ...]]]:
    """Every row of every table, to show that a request changed nothing."""
    async with joblib.database.read() as session:
        return {
            table: sorted(
                tuple(map(str, row))
                for row in await session.execute(sa.text(f"SELECT * FROM {table}"))
            )
            for table in TABLES
        }


async def task_row(joblib: JobLib, task_id: str) -> Task:
    """The task's row as stored."""
    async with joblib.database.read() as session:
        return await session.get_one(Task, uuid.UUID(task_id))


async def job_row(joblib: JobLib, name: str, room_id: str = ROOM) -> Job:
    """The job row `name` of `room_id`, soft-deleted or not."""
    async with joblib.database.read() as session:
        return (
            await session.execute(
                select(Job).where(Job.room_id == room_id, Job.name == name)
            )
        ).scalar_one()


def count_rows(database_url: str, table: str) -> int:
    """Count a table's rows through a fresh engine (for checks from sync tests)."""

    async def count() -> int:
        database = Database.from_url(database_url)
        try:
            async with database.read() as session:
                result = await session.execute(sa.text(f"SELECT count(*) FROM {table}"))
                return int(result.scalar_one())
        finally:
            await database.dispose()

    return asyncio.run(count())


@contextmanager
def recorded_statements(
    engine: AsyncEngine, *, attempted: bool = False
) -> Iterator[list[str]]:
    """The SQL of every statement `engine` ran inside the block, as it ran.

    With `attempted`, statements are recorded as they are sent, before the database
    answers (or refuses: `BEGIN IMMEDIATE` while another process writes).
    """
    statements: list[str] = []
    name = "before_cursor_execute" if attempted else "after_cursor_execute"

    def record(*args: Any) -> None:
        # (connection, cursor, statement, parameters, context, executemany)
        statements.append(str(args[2]))

    sa.event.listen(engine.sync_engine, name, record)
    try:
        yield statements
    finally:
        sa.event.remove(engine.sync_engine, name, record)
