"""joblib's schema under Alembic: upgrade it, read its revision, refuse a stale one.

joblib's revisions live in `joblib_server/migrations/versions` and their progress
in a version table of joblib's own, `joblib_alembic_version`, so a host's Alembic
history in the same database is left alone. A 0.1.0 database, made before joblib
versioned its schema, has the tables but no version: upgrading checks that they
are the 0.1.0 ones, records the first revision, and goes on from there.

A host that runs Alembic itself can upgrade joblib's tables in the same run: its
`env.py` calls `upgrade_connection(connection)` after its own `run_migrations()`.
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path

import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy.ext.asyncio import AsyncEngine

from joblib_server.database import Database
from joblib_server.errors import SchemaError, SchemaNotCurrent

logger = logging.getLogger("joblib_server")

VERSION_TABLE = "joblib_alembic_version"
"""Where joblib records its revision: not `alembic_version`, which a host may own."""

FIRST_REVISION = "0001"
"""The revision of joblib 0.1.0's tables."""

_MIGRATIONS = Path(__file__).parent / "migrations"

# What 0.1.0's `create_all` made, frozen here: an unversioned database is adopted
# only when its joblib tables are exactly these, with at least these indexes.
_TABLES_0_1_0: dict[str, tuple[set[str], set[str]]] = {
    "joblib_job": (
        {
            "id",
            "room_id",
            "category",
            "name",
            "schema",
            "deleted",
            "task_seq",
            "created_at",
        },
        set(),
    ),
    "joblib_worker": (
        {"id", "owner_id", "last_heartbeat", "created_at"},
        {"ix_joblib_worker_owner_id", "ix_joblib_worker_last_heartbeat"},
    ),
    "joblib_worker_job": ({"worker_id", "job_id"}, {"ix_joblib_worker_job_job_id"}),
    "joblib_task": (
        {
            "id",
            "job_id",
            "room_id",
            "submitted_by",
            "status",
            "payload",
            "seq",
            "worker_id",
            "error",
            "created_at",
            "started_at",
            "completed_at",
        },
        {
            "ix_joblib_task_pending",
            "ix_joblib_task_worker",
            "ix_joblib_task_job_seq",
            "ix_joblib_task_room",
        },
    ),
}


@cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory(str(_MIGRATIONS))


def head_revision() -> str:
    """The newest revision this joblib-server knows."""
    head = _scripts().get_current_head()
    if head is None:
        raise AssertionError(f"no revisions in {_MIGRATIONS}")
    return head


async def current_revision(engine: AsyncEngine) -> str | None:
    """The database's revision; None when joblib's tables are absent or unversioned."""
    async with engine.connect() as connection:
        return await connection.run_sync(_current)


async def upgrade_schema(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring joblib's tables to `revision`, creating or adopting them as needed."""
    database = Database(engine)
    # Several server processes may start at once on a new database: they take
    # turns (SQLite's BEGIN IMMEDIATE, PostgreSQL's advisory lock).
    async with database.write() as session:
        connection = await session.connection()
        async with database.backend.schema_lock(connection):
            await connection.run_sync(upgrade_connection, revision)


async def ensure_schema(engine: AsyncEngine, *, upgrade: bool) -> None:
    """Upgrade to the newest revision, or with `upgrade=False` refuse if not there."""
    if upgrade:
        await upgrade_schema(engine)
        return
    async with engine.connect() as connection:
        current, has_tables = await connection.run_sync(_state)
    head = head_revision()
    if current == head:
        return
    _check_known(current)
    where = engine.url.set(drivername=engine.url.get_backend_name())
    shown = where.render_as_string(hide_password=True)
    if current is not None:
        found = f"at revision {current}"
    else:
        found = "unversioned (joblib 0.1.0)" if has_tables else "not created yet"
    raise SchemaNotCurrent(
        f"joblib's schema is {found}, this server needs revision {head}: "
        f"run `joblib-server db upgrade --database-url {shown}`"
    )


def upgrade_connection(connection: sa.Connection, revision: str = "head") -> None:
    """Upgrade joblib's tables inside `connection`'s transaction; the caller commits.

    This is the synchronous core, for a host's Alembic `env.py` (call it there,
    not from inside a migration: Alembic's `op` is one global per process). Unlike
    `upgrade_schema` it takes no lock against other processes upgrading at once.
    """
    context = _context(connection)
    scripts = _scripts()
    current = context.get_current_revision()
    _check_known(current)
    if current is None and _has_tables(connection):
        _check_0_1_0(connection)
        context.stamp(scripts, FIRST_REVISION)
        logger.info("adopted joblib 0.1.0's tables as revision %s", FIRST_REVISION)
        current = FIRST_REVISION
    try:
        steps = list(scripts.iterate_revisions(revision, current))
    except (CommandError, RevisionError) as exc:
        raise SchemaError(
            f"cannot upgrade joblib's tables from {current or 'nothing'} "
            f"to {revision}: {exc}"
        ) from exc
    with Operations.context(context):
        for step in reversed(steps):
            step.module.upgrade()
            context.stamp(scripts, step.revision)
            logger.info("upgraded joblib's tables to revision %s", step.revision)


def _context(connection: sa.Connection) -> MigrationContext:
    return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})


def _current(connection: sa.Connection) -> str | None:
    return _context(connection).get_current_revision()


def _state(connection: sa.Connection) -> tuple[str | None, bool]:
    return _current(connection), _has_tables(connection)


def _has_tables(connection: sa.Connection) -> bool:
    names = set(sa.inspect(connection).get_table_names())
    return bool(names & _TABLES_0_1_0.keys())


def _check_known(current: str | None) -> None:
    if current is None:
        return
    try:
        _scripts().get_revision(current)
    except CommandError:
        raise SchemaError(
            f"joblib's tables are at revision {current}, newer than this "
            f"joblib-server knows (it knows up to {head_revision()}): "
            "upgrade joblib-server"
        ) from None


def _check_0_1_0(connection: sa.Connection) -> None:
    inspector = sa.inspect(connection)
    names = set(inspector.get_table_names())
    problems: list[str] = []
    for table, (columns, indexes) in _TABLES_0_1_0.items():
        if table not in names:
            problems.append(f"{table} is missing")
            continue
        found = {column["name"] for column in inspector.get_columns(table)}
        if found != columns:
            problems.append(f"{table} has columns {sorted(found)}")
        missing = indexes - {index["name"] for index in inspector.get_indexes(table)}
        if missing:
            problems.append(f"{table} lacks {sorted(missing)}")
    if problems:
        raise SchemaError(
            "joblib's tables have no version and are not those of joblib 0.1.0 "
            f"({'; '.join(problems)}): fix or drop them, then upgrade"
        )
