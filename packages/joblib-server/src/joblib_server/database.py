"""Engines and sessions for SQLite (sqlite3, run in place) and PostgreSQL (asyncpg)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from joblib_server import _inline_sqlite
from joblib_server import tables as _tables  # noqa: F401 - registers the tables
from joblib_server._dialects import Dialect, dialect_for

_WRITE_OPTION = "joblib_write"

_SQLITE_BUSY_MS = 20
"""How long one SQLite call may wait for another process's lock. Calls run on the
event loop (see `_inline_sqlite`), so a longer wait would stall every request."""

_IDLE_SINCE = "joblib_idle_since"
_PING_AFTER_IDLE_SECONDS = 5.0
"""A PostgreSQL connection idle for longer is pinged before it is used again."""

_SQLITE_WRITE_WAIT_SECONDS = 30.0
"""How long a write waits, sleeping between tries, for another process's write."""


def normalize_url(url: str) -> str:
    """Pick the async driver for a URL as users write it (`postgresql://…`)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(
            hide_password=False
        )
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(
            hide_password=False
        )
    raise ValueError(
        f"unsupported database URL {url!r}: use sqlite:// or postgresql://"
    )


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """Create an async engine for `url`, with the SQLite pragmas joblib relies on."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        path = make_url(url).database or ":memory:"
        kwargs.setdefault("async_creator", partial(_inline_sqlite.connect, path))
        engine = create_async_engine(url, **kwargs)
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    engine = create_async_engine(url, **kwargs)
    _ping_idle_connections(engine)
    return engine


def _ping_idle_connections(engine: AsyncEngine) -> None:
    # pool_pre_ping pings at every checkout, and asyncpg's ping is three round
    # trips (BEGIN, a query, ROLLBACK): a third of a busy request's database
    # time. A connection in steady use has just proven itself; only one that sat
    # idle (and may have been cut meanwhile) is pinged before use.
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(_IDLE_SINCE)
        if since is None or time.monotonic() - since < _PING_AFTER_IDLE_SECONDS:
            return
        try:
            sync_engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool drops this connection and checks out another.
            raise DisconnectionError(f"idle connection is gone: {exc}") from exc


def _configure_sqlite(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver connection already leaves BEGIN to us (see `_on_begin`).
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A writer that starts deferred can fail to upgrade its lock with
        # SQLITE_BUSY at once, ignoring busy_timeout; IMMEDIATE waits its turn.
        write = connection.get_execution_options().get(_WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


class Database:
    """An engine with joblib's two kinds of session: read and write."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect: Dialect = dialect_for(engine)
        # PostgreSQL reads run in autocommit: each statement sees the latest
        # commits either way (READ COMMITTED), and BEGIN and ROLLBACK would cost
        # two more round trips. SQLite reads keep one snapshot for the request.
        readers = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._read = async_sessionmaker(
            engine if self.dialect.is_sqlite else readers, expire_on_commit=False
        )
        self._write = async_sessionmaker(
            engine.execution_options(**{_WRITE_OPTION: True}), expire_on_commit=False
        )
        self._sqlite_writer: anyio.Lock | None = None

    @classmethod
    def from_url(cls, url: str, **engine_kwargs: Any) -> Database:
        """Create the engine for `url` and wrap it."""
        return cls(create_engine(url, **engine_kwargs))

    async def create_tables(self) -> None:
        """Upgrade joblib's tables to the newest revision (`schema.upgrade_schema`)."""
        # Imported here: `schema` opens its write transaction through this module.
        from joblib_server.schema import upgrade_schema

        await upgrade_schema(self.engine)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for reading only (on PostgreSQL it runs in autocommit)."""
        async with self._read() as session:
            yield session

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A transaction that commits when the block ends without error."""
        if not self.dialect.is_sqlite:
            async with self._write() as session, session.begin():
                yield session
            return
        # SQLite runs one writer at a time anyway. Waiting for our turn here, first
        # come first served, beats waiting in SQLite's busy handler, which sleeps
        # and retries and made the slowest writes take seconds under load. Reads
        # never take this lock; other processes are still held off by BEGIN
        # IMMEDIATE and the busy timeout.
        if self._sqlite_writer is None:
            self._sqlite_writer = anyio.Lock()
        async with self._sqlite_writer, self._write() as session:
            await _begin_sqlite_write(session)
            try:
                yield session
            except BaseException:
                await session.rollback()
                raise
            await session.commit()

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()
        # A lock belongs to one event loop; a later loop makes its own.
        self._sqlite_writer = None


async def _begin_sqlite_write(session: AsyncSession) -> None:
    """Start the session's `BEGIN IMMEDIATE`, waiting for other processes' writes.

    SQLite's own busy handler would wait on the event loop; sleeping between tries
    lets the loop serve other requests meanwhile.
    """
    deadline = anyio.current_time() + _SQLITE_WRITE_WAIT_SECONDS
    pause = 0.001
    while True:
        try:
            await session.connection()
            return
        except OperationalError as exc:
            if "locked" not in str(exc.orig) or anyio.current_time() >= deadline:
                raise
        await session.rollback()
        await anyio.sleep(pause)
        pause = min(pause * 2, 0.05)
