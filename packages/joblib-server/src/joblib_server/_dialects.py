"""Every piece of SQL that differs between SQLite and PostgreSQL, in one place.

SQLite has one writer at a time: write transactions start with `BEGIN IMMEDIATE`
(after an in-process lock, see `Database.write`), so a claim's read-then-update
cannot interleave with another writer, and nothing needs row locks. PostgreSQL has
many writers: a claim locks the chosen row with `FOR UPDATE SKIP LOCKED`, so
concurrent claimers pass over each other's rows instead of queueing on them, and
upserts rely on `ON CONFLICT`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from joblib_protocol import TaskStatus
from joblib_server.tables import TASK_TABLE

StatementT = TypeVar("StatementT")

PENDING: sa.ColumnElement[str] = sa.literal_column("'pending'")
"""The pending status as SQL text, not a parameter: SQLite only uses the partial
index of pending tasks when the query's condition is visibly the index's own."""

_task = TASK_TABLE


@dataclass(frozen=True)
class Dialect:
    """The SQL flavour of one database engine."""

    name: str

    @property
    def is_sqlite(self) -> bool:
        """Whether this is SQLite (single writer, no row locks)."""
        return self.name == "sqlite"

    def insert_ignoring_conflicts(
        self, table: sa.Table, values: dict[str, Any], *conflict_columns: str
    ) -> Any:
        """Return an INSERT that does nothing when the row already exists."""
        insert = postgresql.insert if self.name == "postgresql" else sqlite.insert
        return (
            insert(table)
            .values(**values)
            .on_conflict_do_nothing(index_elements=list(conflict_columns))
        )

    def locked(
        self, statement: StatementT, *, skip_locked: bool = False, of: Any = None
    ) -> StatementT:
        """Lock the selected rows (of `of` only, if given); a no-op on SQLite."""
        if self.is_sqlite:
            return statement
        return statement.with_for_update(skip_locked=skip_locked, of=of)  # type: ignore[attr-defined]

    def claim_statement(self, *, start: bool) -> Any:
        """The statement that claims a job's oldest pending task, or nothing.

        Built once per dialect and mode; run it with `b_job`, `b_worker` and
        `b_now` (the claim time, used as `started_at` with `start`).
        """
        return _claim_statement(self.is_sqlite, start)


@cache
def _claim_statement(is_sqlite: bool, start: bool) -> Any:
    oldest = (
        sa.select(_task.c.id)
        .where(_task.c.job_id == sa.bindparam("b_job"), _task.c.status == PENDING)
        .order_by(_task.c.created_at, _task.c.seq, _task.c.id)
        .limit(1)
    )
    if not is_sqlite:
        # Concurrent claimers pass over each other's rows instead of queueing.
        oldest = oldest.with_for_update(skip_locked=True)
    values: dict[str, Any] = {
        "status": (TaskStatus.RUNNING if start else TaskStatus.CLAIMED).value,
        "worker_id": sa.bindparam("b_worker"),
    }
    if start:
        values["started_at"] = sa.bindparam("b_now")
    return (
        sa.update(_task)
        .where(_task.c.id == oldest.scalar_subquery())
        .where(_task.c.status == PENDING)
        .values(**values)
        .returning(*_task.c)
    )


SQLITE = Dialect("sqlite")
POSTGRESQL = Dialect("postgresql")


def dialect_for(engine: AsyncEngine) -> Dialect:
    """Return the dialect of `engine` (SQLite or PostgreSQL)."""
    return _by_name(engine.dialect.name)


def dialect_of(session: AsyncSession) -> Dialect:
    """Return the dialect of the database `session` talks to."""
    return _by_name(session.get_bind().dialect.name)


def _by_name(name: str) -> Dialect:
    if name == "sqlite":
        return SQLITE
    if name == "postgresql":
        return POSTGRESQL
    raise ValueError(f"unsupported database {name!r}: use SQLite or PostgreSQL")
