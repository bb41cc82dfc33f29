"""An aiosqlite-shaped SQLite connection whose calls run at once, on the event loop.

aiosqlite runs every call (cursor, execute, fetch, close, commit) on its own thread
and hands the result back through the event loop: four or more thread hops per
statement. Under load each hop also waits its turn in the loop, and since SQLite
writes run one at a time, a write held the write lock about 7 ms for 1-2 ms of
work. A statement on a local WAL database takes microseconds, less than one hop,
so joblib runs them in place. The price: a slow query (a count over a very long
table) holds up the loop while it runs, so reads that can be slow (lists) run inside
`off_loop()`: their statements then run on a worker thread, and the loop serves
other requests meanwhile (sqlite3 lets go of the GIL while SQLite works).

SQLAlchemy's aiosqlite dialect takes such an object through `async_creator`. Its
2.1 adapter calls `conn.cursor()` and awaits the cursor's `__aenter__` (as in
`async with conn.cursor()`); its 2.0 adapter awaits `conn.cursor()` itself, once
per statement. Like aiosqlite's, our cursor answers to both.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

import anyio.to_thread

T = TypeVar("T")

_off_loop: ContextVar[bool] = ContextVar("joblib_sqlite_off_loop", default=False)


@contextmanager
def off_loop() -> Iterator[None]:
    """Within the block, this task's statements run on a worker thread."""
    token = _off_loop.set(True)
    try:
        yield
    finally:
        _off_loop.reset(token)


async def _call(function: Callable[..., T], *args: Any) -> T:
    if not _off_loop.get():
        return function(*args)
    # Not cancellable: the connection must not be used again while SQLite works.
    return await anyio.to_thread.run_sync(function, *args)


class InlineCursor:
    """An aiosqlite-like cursor whose coroutines finish without suspending."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    def __await__(self) -> Generator[Any, None, InlineCursor]:
        """Return the cursor itself (aiosqlite's `await conn.cursor()`)."""
        return self.__aenter__().__await__()

    async def __aenter__(self) -> InlineCursor:
        """Return the cursor itself (aiosqlite's `async with conn.cursor()`)."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the cursor."""
        self._cursor.close()

    @property
    def description(self) -> Any:
        """The DB-API description of the last result."""
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        """Rows changed by the last statement."""
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        """The rowid of the last inserted row."""
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        """Rows per `fetchmany` by default."""
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Any = None) -> InlineCursor:
        """Run one statement."""
        await _call(self._cursor.execute, sql, () if parameters is None else parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> InlineCursor:
        """Run one statement once per parameter set."""
        await _call(self._cursor.executemany, sql, parameters)
        return self

    async def fetchone(self) -> Any:
        """The next row, or None."""
        return await _call(self._cursor.fetchone)

    async def fetchmany(self, size: int | None = None) -> Sequence[Any]:
        """Up to `size` rows."""
        if size is None:
            return await _call(self._cursor.fetchmany)
        return await _call(self._cursor.fetchmany, size)

    async def fetchall(self) -> Sequence[Any]:
        """The remaining rows."""
        return await _call(self._cursor.fetchall)

    async def close(self) -> None:
        """Close the cursor."""
        self._cursor.close()


class InlineConnection:
    """An aiosqlite-like connection over a plain `sqlite3.Connection`."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        # SQLAlchemy's adapter looks for `_connection` to tell an open one.
        self._connection: sqlite3.Connection | None = connection

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._connection is None:
            raise ValueError("no active connection")
        return self._connection

    def cursor(self) -> InlineCursor:
        """A new cursor."""
        return InlineCursor(self._conn.cursor())

    async def commit(self) -> None:
        """Commit the open transaction."""
        self._conn.commit()

    async def rollback(self) -> None:
        """Roll back the open transaction."""
        self._conn.rollback()

    async def close(self) -> None:
        """Close the connection; closing twice is harmless."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def stop(self) -> None:
        """Close at once (SQLAlchemy's terminate)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        """Register a SQL function."""
        self._conn.create_function(*args, **kwargs)

    @property
    def isolation_level(self) -> str | None:
        """The driver's transaction mode (None: joblib issues BEGIN itself)."""
        return self._conn.isolation_level


async def connect(path: str, **kwargs: Any) -> InlineConnection:
    """Open `path` in autocommit-by-hand mode: joblib sends BEGIN itself.

    Any thread may use the connection (one at a time: the pool lends it to one
    session, and `off_loop` awaits each call), so reads can leave the loop.
    """
    kwargs.setdefault("check_same_thread", False)
    connection = sqlite3.connect(path, isolation_level=None, **kwargs)
    return InlineConnection(connection)
