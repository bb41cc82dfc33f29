"""One class per database: everything in which SQLite and PostgreSQL differ.

SQLite has one writer at a time: write transactions start with `BEGIN IMMEDIATE`
after an in-process lock, so a claim's read-then-update cannot interleave with
another writer and nothing needs row locks. PostgreSQL has many writers: a claim
locks the chosen row with `FOR UPDATE SKIP LOCKED`, so concurrent claimers pass
over each other's rows instead of queueing on them. Nothing outside this module
asks which database it talks to.
"""

from __future__ import annotations

import json
import re
import time
import uuid
import weakref
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import (
    AbstractContextManager,
    asynccontextmanager,
    nullcontext,
    suppress,
)
from functools import cache, partial
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import anyio
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from joblib_protocol import TaskStatus
from joblib_server import _inline_sqlite

StatementT = TypeVar("StatementT")

PENDING: sa.ColumnElement[str] = sa.literal_column("'pending'")
"""The pending status as SQL text, not a parameter: SQLite only uses the partial
index of pending tasks when the query's condition is visibly the index's own."""

_WRITE_OPTION = "joblib_write"
_BACKEND_KEY = "joblib_backend"


class Backend(ABC):
    """The SQL flavour and transaction rules of one database engine."""

    name: ClassVar[str]
    keeps_time_zones: ClassVar[bool] = True
    """Whether timestamps are stored with their zone (else as naive UTC)."""

    RETRY_AFTER_SECONDS: ClassVar[int] = 2
    """What a 503 `database-unavailable` answer's `Retry-After` says."""

    can_notify: ClassVar[bool] = False
    """Whether a transaction can notify other connections when it commits
    (PostgreSQL's `NOTIFY`, which the wake bus rides on)."""

    writes_at_once: ClassVar[bool] = False
    """Whether `write_one()` runs without BEGIN and COMMIT (autocommit), so that
    the statements of `at_once` can run there: each commits as a whole or not
    at all."""

    SLOW_READERS: ClassVar[int] = 2
    """How many reads that may scan many rows (lists) run at once. The others wait
    for their turn before they take a pooled connection, so lists can never hold
    every connection while claims and reports wait for one."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._slow_turns: anyio.Semaphore | None = None
        info = {_BACKEND_KEY: self}
        self._read = async_sessionmaker(
            self._reader(engine), expire_on_commit=False, info=info
        )
        self._write = async_sessionmaker(
            engine.execution_options(**{_WRITE_OPTION: True}),
            expire_on_commit=False,
            info=info,
        )

    @staticmethod
    def for_engine(engine: AsyncEngine) -> Backend:
        """The backend of `engine`'s database."""
        for backend in (SqliteBackend, PostgresBackend):
            if engine.dialect.name == backend.name:
                return backend(engine)
        raise ValueError(
            f"unsupported database {engine.dialect.name!r}: use SQLite or PostgreSQL"
        )

    def _reader(self, engine: AsyncEngine) -> AsyncEngine:
        return engine

    @asynccontextmanager
    async def read(self, *, slow: bool = False) -> AsyncIterator[AsyncSession]:
        """A session for reading only; `slow` for one that may scan many rows.

        Slow reads take turns (`SLOW_READERS`), and on SQLite their statements
        run on a worker thread instead of the event loop.
        """
        if not slow:
            async with self._read() as session, self._discarding_broken(session):
                yield session
            return
        if self._slow_turns is None:
            self._slow_turns = anyio.Semaphore(self.SLOW_READERS)
        async with self._slow_turns, self._read() as session:
            with self._slow_statements():
                async with self._discarding_broken(session):
                    yield session

    @asynccontextmanager
    async def _discarding_broken(self, session: AsyncSession) -> AsyncIterator[None]:
        """Throw the session's connection away if it failed as a connection.

        A connection whose server process was terminated, or that asyncpg left
        with "another operation is in progress", must not go back to the pool:
        every request that drew it would fail the same way.
        """
        try:
            yield
        except Exception as exc:
            if self.is_broken(exc):
                with suppress(Exception):
                    await session.invalidate()
            raise

    def is_unavailable(self, exc: BaseException) -> bool:
        """Whether `exc` says the database cannot be used right now (503, retry).

        No pooled connection came free in time, the server could not be
        reached, or the connection broke.
        """
        return isinstance(exc, sa_exc.TimeoutError) or self.is_broken(exc)

    def is_broken(self, exc: BaseException) -> bool:
        """Whether `exc` says the connection itself failed (it is then discarded)."""
        if isinstance(exc, OSError):  # refused, reset, timed out, unknown host
            return True
        return isinstance(exc, DBAPIError) and exc.connection_invalidated

    def _slow_statements(self) -> AbstractContextManager[None]:
        """Where the statements of a slow read run (by default, as any other)."""
        return nullcontext()

    @abstractmethod
    def write(self) -> Any:
        """An async context manager: a write transaction, committed on success."""

    @abstractmethod
    def is_retryable(self, exc: DBAPIError) -> bool:
        """Whether a failed write transaction may safely be run again."""

    @abstractmethod
    def insert_ignoring_conflicts(
        self, table: sa.Table, values: dict[str, Any], *conflict_columns: str
    ) -> Any:
        """An INSERT that does nothing when the row already exists."""

    def locked(
        self, statement: StatementT, *, skip_locked: bool = False, of: Any = None
    ) -> StatementT:
        """Lock the selected rows (of `of` only, if given) until commit."""
        return statement

    def claim_statement(self, *, start: bool) -> Any:
        """The statement that claims a job's oldest pending task, or nothing.

        Built once per backend and mode; run it with `b_job`, `b_worker`, `b_now`
        (the claim time, `claimed_at`, and `started_at` with `start`) and
        `b_request` (the claim's request id, or None).
        """
        return _claim_statement(self.name == SqliteBackend.name, start)

    def insert_tasks_statement(self) -> Any:
        """The statement that stores a submit's tasks, whatever their number.

        Built once per backend. Its parameters: `insert_tasks_params` (the
        payloads, ids and claim keys, one array each, in the tasks' order) and
        `b_job`, `b_room`, `b_by` (the submitter), `b_status`, `b_first_seq` (the
        first task's sequence number; the others follow in order), `b_created`,
        `b_timeout`, `b_expires`, `b_claimed` (`claimed_at`) and
        `b_claim_prefix` (a claim id is the prefix and the task's key; None:
        unclaimed).
        """
        return _insert_tasks_statement(self.name == SqliteBackend.name)

    def insert_tasks_params(
        self,
        payloads: list[dict[str, Any]],
        ids: list[uuid.UUID],
        claim_keys: list[str],
    ) -> dict[str, Any]:
        """The array parameters of `insert_tasks_statement`; keys are 32 hex digits."""
        # One json.dumps of the whole list, split by the database: neither
        # SQLAlchemy nor the driver handles a parameter set per task.
        return {
            "b_payloads": json.dumps(payloads),
            "b_ids": ids,
            "b_claim_keys": claim_keys,
        }

    def queue_statement(self) -> Any:
        """One statement that reserves sequence numbers, inserts and reads the head.

        None where the database cannot (SQLite: no UPDATE inside WITH); callers
        then run the three steps in their transaction. Run it with the parameters
        of `insert_tasks_statement` but `b_first_seq`, plus `b_count` and the job
        as the caller last read it: `b_job`, `b_schema` (its schema's JSON text),
        `b_job_timeout`, `b_job_pending`. It stores nothing, and returns no row,
        unless the job is still so and not deleted; else one row: `last_seq`
        (the batch's last number), `created_at` and `expires_at` (taken by the
        statement, from `b_pending` seconds: the tasks' `b_created`, `b_expires`
        and `b_claimed` are not parameters), `seen_seq` (the job's number in
        the statement's snapshot) and `head` (its lowest pending number there).
        """
        return None

    def write_one(self) -> Any:
        """An async context manager: a session for a change of one statement.

        By default the same transaction as `write()`.
        """
        return self.write()

    @asynccontextmanager
    async def schema_lock(self, connection: AsyncConnection) -> AsyncIterator[None]:
        """Hold off other processes changing the schema at the same time."""
        yield

    async def notify(self, session: AsyncSession, channel: str, payload: str) -> None:
        """Send `payload` on `channel` when `session`'s transaction commits."""
        raise NotImplementedError(f"{self.name} has no NOTIFY")

    async def listen_connection(self, name: str) -> Any:
        """A new connection of its own, outside the pool, to LISTEN on."""
        raise NotImplementedError(f"{self.name} has no LISTEN")

    async def dispose(self) -> None:
        """Forget per-event-loop state (the engine itself is disposed by its owner)."""
        self._slow_turns = None


class SqliteBackend(Backend):
    """SQLite: statements run in place, one writer at a time."""

    name = "sqlite"
    # SQLite keeps no zone: naive UTC text compares in time order.
    keeps_time_zones = False

    BUSY_MS: ClassVar[int] = 20
    """How long one SQLite call may wait for another process's lock. Calls run on the
    event loop (see `_inline_sqlite`), so a longer wait would stall every request."""

    WRITE_WAIT_SECONDS: ClassVar[float] = 30.0
    """How long a write waits, sleeping between tries, for another process's write."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self._writer: anyio.Lock | None = None

    @staticmethod
    def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
        """An engine on the in-place connection, with the pragmas joblib relies on."""
        path = make_url(url).database or ":memory:"
        kwargs.setdefault("async_creator", partial(_inline_sqlite.connect, path))
        engine = create_async_engine(url, **kwargs)
        sync_engine = engine.sync_engine

        @event.listens_for(sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # The driver connection already leaves BEGIN to us (see `_on_begin`).
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={SqliteBackend.BUSY_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(sync_engine, "begin")
        def _on_begin(connection: Any) -> None:
            # A writer that starts deferred can fail to upgrade its lock with
            # SQLITE_BUSY at once, ignoring busy_timeout; IMMEDIATE waits its turn.
            write = connection.get_execution_options().get(_WRITE_OPTION, False)
            connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A `BEGIN IMMEDIATE` transaction, one at a time in this process."""
        # SQLite runs one writer at a time anyway. Waiting for our turn here, first
        # come first served, beats waiting in SQLite's busy handler, which sleeps
        # and retries and made the slowest writes take seconds under load. Reads
        # never take this lock; other processes are still held off by BEGIN
        # IMMEDIATE and the busy timeout.
        if self._writer is None:
            self._writer = anyio.Lock()
        async with (
            self._writer,
            self._write() as session,
            self._discarding_broken(session),
        ):
            await self._begin(session)
            try:
                yield session
            except BaseException:
                await session.rollback()
                raise
            await session.commit()

    async def _begin(self, session: AsyncSession) -> None:
        """Start `BEGIN IMMEDIATE`, sleeping between tries while another process writes.

        SQLite's own busy handler would wait on the event loop; sleeping between
        tries lets the loop serve other requests meanwhile.
        """
        deadline = anyio.current_time() + self.WRITE_WAIT_SECONDS
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

    def is_retryable(self, exc: DBAPIError) -> bool:
        """Another process held the write lock past every wait."""
        return "database is locked" in str(exc.orig)

    UNAVAILABLE: ClassVar[tuple[str, ...]] = (
        "database is locked",  # another process writes past every wait
        "unable to open database file",
        "disk I/O error",
    )

    def is_unavailable(self, exc: BaseException) -> bool:
        """Also: the file cannot be opened, or stays locked by another process."""
        if isinstance(exc, sa_exc.OperationalError):
            message = str(exc.orig)
            if any(reason in message for reason in self.UNAVAILABLE):
                return True
        return super().is_unavailable(exc)

    def insert_ignoring_conflicts(
        self, table: sa.Table, values: dict[str, Any], *conflict_columns: str
    ) -> Any:
        """`INSERT … ON CONFLICT DO NOTHING`."""
        return (
            sqlite.insert(table)
            .values(**values)
            .on_conflict_do_nothing(index_elements=list(conflict_columns))
        )

    def insert_tasks_params(
        self,
        payloads: list[dict[str, Any]],
        ids: list[uuid.UUID],
        claim_keys: list[str],
    ) -> dict[str, Any]:
        """Ids and keys as one string of 32 hex digits each (SQLite has no arrays)."""
        return {
            "b_payloads": json.dumps(payloads),
            "b_ids": "".join(task_id.hex for task_id in ids),
            "b_claim_keys": "".join(claim_keys),
        }

    @asynccontextmanager
    async def schema_lock(self, connection: AsyncConnection) -> AsyncIterator[None]:
        """Wait for another process's schema change (on the loop: once, at start)."""
        await connection.exec_driver_sql("PRAGMA busy_timeout=30000")
        try:
            yield
        finally:
            await connection.exec_driver_sql(f"PRAGMA busy_timeout={self.BUSY_MS}")

    def _slow_statements(self) -> AbstractContextManager[None]:
        """On a worker thread: a count over a long table must not stall the loop."""
        return _inline_sqlite.off_loop()

    async def dispose(self) -> None:
        """Drop the locks: a lock belongs to one event loop."""
        await super().dispose()
        self._writer = None


class PostgresBackend(Backend):
    """PostgreSQL through asyncpg: many writers, row locks, retried conflicts."""

    name = "postgresql"
    can_notify = True
    writes_at_once = True

    PING_AFTER_IDLE_SECONDS: ClassVar[float] = 5.0
    """A pooled connection idle for longer is pinged before it is used again."""

    # Serialization failure and deadlock: the transaction did nothing, run it again.
    RETRYABLE_SQLSTATES: ClassVar[frozenset[str]] = frozenset({"40001", "40P01"})

    @staticmethod
    def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
        """A pooled asyncpg engine that pings only connections that sat idle."""
        kwargs.setdefault("pool_size", 20)
        kwargs.setdefault("max_overflow", 10)
        engine = create_async_engine(url, **kwargs)
        # pool_pre_ping pings at every checkout, and asyncpg's ping is three round
        # trips (BEGIN, a query, ROLLBACK): a third of a busy request's database
        # time. A connection in steady use has just proven itself; only one that
        # sat idle (and may have been cut meanwhile) is pinged before use.
        sync_engine = engine.sync_engine
        idle_since = "joblib_idle_since"

        @event.listens_for(sync_engine, "checkin")
        def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
            record.info[idle_since] = time.monotonic()

        @event.listens_for(sync_engine, "checkout")
        def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
            since = record.info.get(idle_since)
            limit = PostgresBackend.PING_AFTER_IDLE_SECONDS
            if since is None or time.monotonic() - since < limit:
                return
            try:
                sync_engine.dialect.do_ping(dbapi_connection)
            except Exception as exc:
                # The pool drops this connection and checks out another.
                raise DisconnectionError(f"idle connection is gone: {exc}") from exc

        return engine

    def _reader(self, engine: AsyncEngine) -> AsyncEngine:
        # Reads run in autocommit: each statement sees the latest commits either
        # way (READ COMMITTED), and BEGIN and ROLLBACK would cost two round trips.
        return engine.execution_options(isolation_level="AUTOCOMMIT")

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A transaction; concurrent ones meet at row locks."""
        async with (
            self._write() as session,
            self._discarding_broken(session),
            session.begin(),
        ):
            yield session

    @asynccontextmanager
    async def write_one(self) -> AsyncIterator[AsyncSession]:
        """In autocommit: the statement is its own transaction.

        BEGIN and COMMIT would be two of a submit's three round trips.
        """
        async with self._read() as session, self._discarding_broken(session):
            yield session

    def queue_statement(self) -> Any:
        """A data-modifying WITH: UPDATE the job, INSERT … SELECT, read the head."""
        return _queue_statement()

    def is_retryable(self, exc: DBAPIError) -> bool:
        """A serialization failure or a deadlock."""
        return _sqlstate(exc) in self.RETRYABLE_SQLSTATES

    BROKEN_SQLSTATES: ClassVar[frozenset[str]] = frozenset(
        {"57P01", "57P02", "57P03", "53300"}
    )
    """Terminated by an administrator, crash shutdown, starting up, too many
    connections; with every connection exception (class 08)."""

    def is_broken(self, exc: BaseException) -> bool:
        """Also: asyncpg's interface errors and PostgreSQL's connection states."""
        if super().is_broken(exc) or isinstance(exc, sa_exc.InterfaceError):
            # "connection is closed", "another operation is in progress"
            return True
        sqlstate = _sqlstate(exc)
        return bool(sqlstate) and (
            sqlstate.startswith("08") or sqlstate in self.BROKEN_SQLSTATES
        )

    def insert_ignoring_conflicts(
        self, table: sa.Table, values: dict[str, Any], *conflict_columns: str
    ) -> Any:
        """`INSERT … ON CONFLICT DO NOTHING`."""
        return (
            postgresql.insert(table)
            .values(**values)
            .on_conflict_do_nothing(index_elements=list(conflict_columns))
        )

    def locked(
        self, statement: StatementT, *, skip_locked: bool = False, of: Any = None
    ) -> StatementT:
        """`SELECT … FOR UPDATE [SKIP LOCKED]`."""
        return statement.with_for_update(skip_locked=skip_locked, of=of)  # type: ignore[attr-defined]

    @asynccontextmanager
    async def schema_lock(self, connection: AsyncConnection) -> AsyncIterator[None]:
        """An advisory lock, held until the connection's transaction ends."""
        await connection.execute(
            sa.text("SELECT pg_advisory_xact_lock(hashtext('joblib_create_tables'))")
        )
        yield

    async def notify(self, session: AsyncSession, channel: str, payload: str) -> None:
        """`pg_notify` in the transaction: delivered at its commit, not on rollback."""
        await session.execute(
            sa.text("SELECT pg_notify(:channel, :payload)"),
            {"channel": channel, "payload": payload},
        )

    async def listen_connection(self, name: str) -> Any:
        """A plain asyncpg connection to the engine's database, named `name`."""
        import asyncpg

        url = self.engine.url.set(drivername="postgresql")
        return await asyncpg.connect(
            url.render_as_string(hide_password=False),
            timeout=10,
            server_settings={"application_name": name},
        )


def _sqlstate(exc: BaseException) -> str:
    """The SQLSTATE of a PostgreSQL error, wrapped by SQLAlchemy or not; else ""."""
    for error in (exc, getattr(exc, "orig", None)):
        code = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
        if isinstance(code, str):
            return code
    return ""


BACKENDS: dict[str, type[SqliteBackend] | type[PostgresBackend]] = {
    "sqlite": SqliteBackend,
    "postgresql": PostgresBackend,
    "postgres": PostgresBackend,
}


def backend_of(session: AsyncSession) -> Backend:
    """The backend of the database `session` talks to."""
    backend = session.info.get(_BACKEND_KEY)
    if isinstance(backend, Backend):
        return backend
    # A session the host opened itself: wrap its engine once and remember it.
    bind = session.bind
    engine = bind if isinstance(bind, AsyncEngine) else None
    if engine is None:
        raise ValueError("joblib needs a session bound to an AsyncEngine")
    backend = _by_engine.get(engine)
    if backend is None:
        backend = _by_engine[engine] = Backend.for_engine(engine)
    session.info[_BACKEND_KEY] = backend
    return backend


_by_engine: weakref.WeakKeyDictionary[AsyncEngine, Backend] = (
    weakref.WeakKeyDictionary()
)


def keeps_time_zones(dialect: sa.Dialect) -> bool:
    """Whether `dialect`'s database stores timestamps with their zone."""
    return BACKENDS[dialect.name].keeps_time_zones


def database_file(url: str) -> Path | None:
    """The file an SQLite URL names; None for a server database or in-memory."""
    parsed = make_url(url)
    if BACKENDS.get(parsed.get_backend_name()) is not SqliteBackend:
        return None
    if parsed.database in (None, "", ":memory:"):
        return None
    return Path(str(parsed.database))


def normalize_url(url: str) -> str:
    """Pick the async driver for a URL as users write it (`postgresql://…`)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    drivers = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}
    driver = drivers.get("postgresql" if backend == "postgres" else backend)
    if driver is None:
        raise ValueError(
            f"unsupported database URL {url!r}: use sqlite:// or postgresql://"
        )
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def can_notify(url: str) -> bool:
    """Whether the database at `url` can carry the wake bus (`Backend.can_notify`)."""
    return BACKENDS[make_url(normalize_url(url)).get_backend_name()].can_notify


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """Create an async engine for `url`, set up the way joblib's backend needs it."""
    url = normalize_url(url)
    return BACKENDS[make_url(url).get_backend_name()].create_engine(url, **kwargs)


@cache
def _claim_statement(is_sqlite: bool, start: bool) -> Any:
    from joblib_server.tables import TASK_TABLE as _task

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
        "claimed_at": sa.bindparam("b_now"),
        "claim_request_id": sa.bindparam("b_request"),
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


_INSERT_TASKS = """
INSERT INTO joblib_task (id, job_id, room_id, submitted_by, status, payload, seq,
    created_at, timeout_seconds, expires_at, claimed_at, claim_request_id)
SELECT {id}, {job}, :b_room, :b_by, :b_status, {payload}, {seq},
    :b_created, :b_timeout, :b_expires, :b_claimed, :b_claim_prefix || {key}
FROM {rows}
"""


@cache
def _insert_tasks_statement(is_sqlite: bool) -> Any:
    from joblib_server.tables import UTCDateTime

    if is_sqlite:
        # json_each gives each payload object back as its JSON text, numbers and
        # escapes as written; ids and claim keys are 32 characters each.
        sql = _INSERT_TASKS.format(
            id="substr(:b_ids, p.key * 32 + 1, 32)",
            job=":b_job",
            payload="p.value",
            seq=":b_first_seq + p.key",
            key="substr(:b_claim_keys, p.key * 32 + 1, 32)",
            rows="json_each(:b_payloads) AS p",
        )
        arrays: list[sa.BindParameter[Any]] = [
            sa.bindparam("b_payloads", type_=sa.String),
            sa.bindparam("b_ids", type_=sa.String),
            sa.bindparam("b_claim_keys", type_=sa.String),
        ]
    else:
        sql = _pg_casts(
            _INSERT_TASKS.format(
                **_PG_TASK_ROWS,
                job="CAST(:b_job AS uuid)",
                seq="CAST(:b_first_seq AS bigint) + p.ordinality - 1",
                rows=_PG_TASK_ROWS_FROM,
            )
        )
        arrays = _pg_arrays()
    return sa.text(sql).bindparams(
        *arrays,
        sa.bindparam("b_job", type_=sa.Uuid),
        sa.bindparam("b_room", type_=sa.String),
        sa.bindparam("b_by", type_=sa.String),
        sa.bindparam("b_status", type_=sa.String),
        sa.bindparam("b_first_seq", type_=sa.BigInteger),
        sa.bindparam("b_created", type_=UTCDateTime()),
        sa.bindparam("b_timeout", type_=sa.Float),
        sa.bindparam("b_expires", type_=UTCDateTime()),
        sa.bindparam("b_claimed", type_=UTCDateTime()),
        sa.bindparam("b_claim_prefix", type_=sa.String),
    )


# json, not jsonb: each payload keeps its text (key order, duplicate keys, numbers
# as written, \u0000), as when sent one by one. The elements themselves, not a
# path into them: `->` on an array element holding \u0000 fails. A shorter array
# (no claim keys) reads as NULLs.
_PG_TASK_ROWS = {"id": "p.id", "payload": "p.payload", "key": "p.claim_key"}
_PG_TASK_ROWS_FROM = (
    "ROWS FROM (json_array_elements(CAST(:b_payloads AS json)), "
    "unnest(CAST(:b_ids AS uuid[])), unnest(CAST(:b_claim_keys AS text[]))) "
    "WITH ORDINALITY AS p(payload, id, claim_key, ordinality)"
)


def _pg_casts(sql: str) -> str:
    """asyncpg needs each parameter's type; a SELECT list does not tell it."""
    for name, cast in (
        ("b_room", "varchar"),
        ("b_by", "varchar"),
        ("b_status", "varchar"),
        ("b_created", "timestamptz"),
        ("b_timeout", "float8"),
        ("b_expires", "timestamptz"),
        ("b_claimed", "timestamptz"),
        ("b_claim_prefix", "varchar"),
    ):
        sql = sql.replace(f":{name}", f"CAST(:{name} AS {cast})")
    return sql


def _pg_arrays() -> list[sa.BindParameter[Any]]:
    return [
        sa.bindparam("b_payloads", type_=sa.String),
        sa.bindparam("b_ids", type_=postgresql.ARRAY(sa.Uuid())),
        sa.bindparam("b_claim_keys", type_=postgresql.ARRAY(sa.String())),
    ]


@cache
def _queue_statement() -> Any:
    from joblib_server.tables import UTCDateTime

    # The reservation locks the job row until commit, as the three statements
    # did, and `created_at` is read from the clock once the lock is held: a
    # later number never gets an earlier time, and claims take tasks by time.
    # The main query reads the statement's snapshot: it sees neither the new
    # tasks nor those of a submit that committed while this one waited for
    # the lock; `seen_seq` lets the caller tell (it is then below
    # `last_seq - b_count`) and read the head again.
    sql = f"""
WITH job AS (
    UPDATE joblib_job SET task_seq = task_seq + :b_count
    WHERE id = :b_job AND NOT deleted
        AND CAST(schema AS text) = :b_schema
        AND timeout_seconds IS NOT DISTINCT FROM :b_job_timeout
        AND pending_timeout_seconds IS NOT DISTINCT FROM :b_job_pending
    RETURNING id, task_seq, clock_timestamp() AS created_at
), stamp AS (
    SELECT id, task_seq, created_at,
        created_at + :b_pending * interval '1 second' AS expires_at
    FROM job
), made AS (
    INSERT INTO joblib_task (id, job_id, room_id, submitted_by, status, payload,
        seq, created_at, timeout_seconds, expires_at, claimed_at, claim_request_id)
    SELECT p.id, stamp.id, :b_room, :b_by, :b_status, p.payload,
        stamp.task_seq - :b_count + p.ordinality, stamp.created_at, :b_timeout,
        stamp.expires_at,
        CASE WHEN :b_claim_prefix IS NULL THEN NULL ELSE stamp.created_at END,
        :b_claim_prefix || p.claim_key
    FROM stamp, {_PG_TASK_ROWS_FROM}
)
SELECT stamp.task_seq AS last_seq, stamp.created_at, stamp.expires_at,
    (SELECT task_seq FROM joblib_job WHERE id = stamp.id) AS seen_seq,
    (SELECT min(seq) FROM joblib_task
        WHERE job_id = stamp.id AND status = 'pending') AS head
FROM stamp
"""
    for name, cast in (
        ("b_count", "bigint"),
        ("b_job", "uuid"),
        ("b_schema", "text"),
        ("b_job_timeout", "float8"),
        ("b_job_pending", "float8"),
        ("b_pending", "float8"),
        ("b_room", "varchar"),
        ("b_by", "varchar"),
        ("b_status", "varchar"),
        ("b_timeout", "float8"),
        ("b_claim_prefix", "varchar"),
    ):
        sql = re.sub(rf":{name}\b", f"CAST(:{name} AS {cast})", sql)
    return (
        sa.text(sql)
        .bindparams(
            *_pg_arrays(),
            sa.bindparam("b_count", type_=sa.BigInteger),
            sa.bindparam("b_job", type_=sa.Uuid),
            sa.bindparam("b_schema", type_=sa.String),
            sa.bindparam("b_job_timeout", type_=sa.Float),
            sa.bindparam("b_job_pending", type_=sa.Float),
            sa.bindparam("b_pending", type_=sa.Float),
            sa.bindparam("b_room", type_=sa.String),
            sa.bindparam("b_by", type_=sa.String),
            sa.bindparam("b_status", type_=sa.String),
            sa.bindparam("b_timeout", type_=sa.Float),
            sa.bindparam("b_claim_prefix", type_=sa.String),
        )
        .columns(
            sa.column("last_seq", sa.BigInteger),
            sa.column("created_at", UTCDateTime()),
            sa.column("expires_at", UTCDateTime()),
            sa.column("seen_seq", sa.BigInteger),
            sa.column("head", sa.BigInteger),
        )
    )
