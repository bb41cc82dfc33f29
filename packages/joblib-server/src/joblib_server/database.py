"""`Database`: an engine and its backend, with read and write sessions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from joblib_server.backends import Backend, create_engine, normalize_url
from joblib_server.errors import ProblemError, database_unavailable

__all__ = ["Database", "create_engine", "normalize_url"]


class Database:
    """An engine with joblib's two kinds of session: read and write.

    Changes go through `JobLib.execute`, which opens the write transaction, retries
    it and does the after-commit work; `write()` is the bare transaction under it.
    """

    def __init__(self, engine: AsyncEngine, *, owns_engine: bool = False) -> None:
        self.engine = engine
        self.backend: Backend = Backend.for_engine(engine)
        # An engine a host passed in is the host's to close.
        self.owns_engine = owns_engine

    @classmethod
    def from_url(cls, url: str, **engine_kwargs: Any) -> Database:
        """Create the engine for `url` and wrap it; `dispose()` closes it."""
        return cls(create_engine(url, **engine_kwargs), owns_engine=True)

    async def create_tables(self) -> None:
        """Upgrade joblib's tables to the newest revision (`schema.upgrade_schema`)."""
        # Imported here: `schema` opens its write transaction through this module.
        from joblib_server.schema import upgrade_schema

        await upgrade_schema(self.engine)

    @asynccontextmanager
    async def read(self, *, slow: bool = False) -> AsyncIterator[AsyncSession]:
        """A session for reading only (on PostgreSQL it runs in autocommit).

        `slow=True` for a read that may scan many rows (a list): such reads take
        turns, and on SQLite they run off the event loop (`Backend.read`). A
        database that cannot be used now raises the 503 `database-unavailable`
        problem (`Backend.is_unavailable`).
        """
        try:
            async with self.backend.read(slow=slow) as session:
                yield session
        except Exception as exc:
            if not self.backend.is_unavailable(exc):
                raise
            raise self.unavailable(exc) from exc

    def unavailable(self, cause: BaseException) -> ProblemError:
        """The 503 problem for a failure the backend calls unavailability."""
        return database_unavailable(cause, self.backend.RETRY_AFTER_SECONDS)

    def write(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A bare write transaction that commits when the block ends without error.

        It does none of the after-commit work; use `JobLib.execute` for changes.
        """
        result: AbstractAsyncContextManager[AsyncSession] = self.backend.write()
        return result

    def write_one(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A session for a change of one statement (`Backend.write_one`).

        On PostgreSQL the statement commits by itself; elsewhere it is `write()`.
        """
        result: AbstractAsyncContextManager[AsyncSession] = self.backend.write_one()
        return result

    async def dispose(self) -> None:
        """Forget per-loop state, and close the pool if this object made the engine."""
        await self.backend.dispose()
        if self.owns_engine:
            await self.engine.dispose()
