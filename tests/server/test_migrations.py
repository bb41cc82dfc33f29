"""joblib's versioned schema: fresh databases, 0.1.0 databases, hosts, and the CLI.

The fixtures in /work/shared/fixtures are real joblib 0.1.0 databases (an SQLite
file and a pg_dump) with workers and tasks in every state; each test works on a
copy of one, since the originals are read-only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import httpx
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import Field, SQLModel

from joblib_server import Identity, JobLib, SchemaNotCurrent, Settings, TokenAuth
from joblib_server.cli import main
from joblib_server.database import Database, create_engine
from joblib_server.errors import SchemaError
from joblib_server.schema import (
    FIRST_REVISION,
    VERSION_TABLE,
    current_revision,
    ensure_schema,
    head_revision,
    upgrade_schema,
)
from joblib_server.tables import METADATA

pytestmark = pytest.mark.anyio

FIXTURES = Path("/work/shared/fixtures")
MANIFEST = json.loads((FIXTURES / "joblib-0.1.0-manifest.json").read_text())
COMMAND = str(Path(sys.executable).parent / "joblib-server")
REQUIRE_SERVICES = os.environ.get("JOBLIB_TEST_REQUIRE_SERVICES") == "1"

# The fixtures' workers belong to these identities: admin's serves
# @global:modifiers:Rotate, alice's serves lab:analysis:Energy.
ADMIN_TOKEN = "fixture-admin"
ALICE_TOKEN = "fixture-alice"
AUTH = TokenAuth(
    {ADMIN_TOKEN: Identity("admin", is_admin=True), ALICE_TOKEN: Identity("alice")}
)


class HostNote(SQLModel, table=True):
    """A host's own table on the global `SQLModel.metadata`: joblib must not make it."""

    __tablename__ = "host_note"

    id: int | None = Field(default=None, primary_key=True)
    text: str = ""


# databases ---------------------------------------------------------------------


def _pg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def _pg_admin(url: str, statement: str) -> None:
    connection = await asyncpg.connect(_pg_dsn(url), timeout=5)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture
def make_postgres(postgres_url: str) -> Iterator[Any]:
    """Create empty PostgreSQL databases on the test server; all dropped at the end."""
    made: list[str] = []

    def make() -> str:
        name = f"joblib_mig_{uuid.uuid4().hex[:10]}"
        anyio.run(_pg_admin, postgres_url, f'CREATE DATABASE "{name}"')
        made.append(name)
        return postgres_url.rsplit("/", 1)[0] + f"/{name}"

    yield make
    for name in made:
        anyio.run(
            _pg_admin, postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
        )


@pytest.fixture(params=["sqlite", "postgresql"])
def kind(request: pytest.FixtureRequest) -> str:
    """Which database the test runs on."""
    return str(request.param)


@pytest.fixture
def empty_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A database with no tables at all."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    make: Any = request.getfixturevalue("make_postgres")
    return str(make())


def _restore_postgres(url: str, dump: Path) -> None:
    if shutil.which("psql") is None:
        message = "psql is not installed; cannot restore the pg_dump fixture"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    parsed = make_url(url)
    subprocess.run(
        [
            "psql",
            "--quiet",
            "--no-psqlrc",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            str(parsed.host),
            "-p",
            str(parsed.port or 5432),
            "-U",
            str(parsed.username),
            "-d",
            str(parsed.database),
            "-f",
            str(dump),
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "PGPASSWORD": parsed.password or ""},
    )


@pytest.fixture
def fixture_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A copy of the joblib 0.1.0 fixture database of `kind`."""
    if kind == "sqlite":
        copy = tmp_path / "joblib-0.1.0.sqlite"
        # copyfile, not copy2: the original is read-only, the copy must be writable.
        shutil.copyfile(FIXTURES / "joblib-0.1.0.sqlite", copy)
        return f"sqlite:///{copy}"
    make: Any = request.getfixturevalue("make_postgres")
    url = str(make())
    dump = tmp_path / "joblib-0.1.0-postgres.sql"
    shutil.copyfile(FIXTURES / "joblib-0.1.0-postgres.sql", dump)
    _restore_postgres(url, dump)
    return url


def _manifest(kind: str) -> dict[str, Any]:
    manifest: dict[str, Any] = MANIFEST["sqlite" if kind == "sqlite" else "postgres"]
    return manifest


@pytest.fixture
async def engine_of() -> AsyncIterator[Any]:
    """Open engines on URLs; all are disposed at the end."""
    engines: list[AsyncEngine] = []

    def open_engine(url: str) -> AsyncEngine:
        engine = create_engine(url)
        engines.append(engine)
        return engine

    yield open_engine
    for engine in engines:
        await engine.dispose()


# what the database holds -------------------------------------------------------


def _differences(connection: sa.Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"version_table": VERSION_TABLE}
    )
    differences: list[Any] = compare_metadata(context, METADATA)
    return differences


async def differences(engine: AsyncEngine) -> list[Any]:
    """What Alembic finds between the database and `tables.METADATA`."""
    async with engine.connect() as connection:
        return await connection.run_sync(_differences)


def _pending_index(connection: sa.Connection) -> str:
    if connection.dialect.name == "sqlite":
        sql = "SELECT sql FROM sqlite_master WHERE name = 'ix_joblib_task_pending'"
    else:
        sql = (
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_joblib_task_pending'"
        )
    return str(connection.exec_driver_sql(sql).scalar_one())


def _table_names(connection: sa.Connection) -> set[str]:
    return set(sa.inspect(connection).get_table_names())


def _schema_sql(connection: sa.Connection) -> list[tuple[str, str]]:
    """SQLite's own record of every table and index but the version table."""
    rows = connection.exec_driver_sql(
        "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL"
        f" AND tbl_name <> '{VERSION_TABLE}' ORDER BY name"
    )
    return [(str(name), str(sql)) for name, sql in rows]


async def run_on(engine: AsyncEngine, reader: Any) -> Any:
    """Run a synchronous reader on a connection of `engine`."""
    async with engine.connect() as connection:
        return await connection.run_sync(reader)


def pg_schema(url: str) -> list[str]:
    """`pg_dump --schema-only` of joblib's tables, without comments and settings."""
    parsed = make_url(url)
    dump = subprocess.run(
        [
            "pg_dump",
            "--schema-only",
            "--no-owner",
            "-h",
            str(parsed.host),
            "-p",
            str(parsed.port or 5432),
            "-U",
            str(parsed.username),
            "-T",
            f"public.{VERSION_TABLE}",
            str(parsed.database),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [
        line
        for line in dump.splitlines()
        if line
        and not line.startswith(("--", "SET ", "SELECT pg_catalog", "\\"))
        and "Dumped" not in line
    ]


# a fresh database --------------------------------------------------------------


async def test_a_fresh_database_upgrades_to_head_and_matches_the_tables(
    empty_url: str, engine_of: Any
) -> None:
    engine = engine_of(empty_url)
    assert await current_revision(engine) is None
    await upgrade_schema(engine)
    assert await current_revision(engine) == head_revision()
    assert await differences(engine) == []
    # Alembic compares no index conditions: check the partial index by hand.
    assert "status" in (await run_on(engine, _pending_index))
    assert "'pending'" in (await run_on(engine, _pending_index))
    # Once there, an upgrade does nothing.
    await upgrade_schema(engine)
    assert await current_revision(engine) == head_revision()


async def test_ensure_schema_refuses_an_empty_database_unless_it_may_upgrade(
    empty_url: str, engine_of: Any
) -> None:
    engine = engine_of(empty_url)
    with pytest.raises(SchemaNotCurrent) as refused:
        await ensure_schema(engine, upgrade=False)
    message = str(refused.value)
    assert "not created yet" in message
    assert head_revision() in message
    assert "joblib-server db upgrade --database-url " in message
    assert "\n" not in message
    assert await run_on(engine, _table_names) == set()

    await ensure_schema(engine, upgrade=True)
    await ensure_schema(engine, upgrade=False)
    assert await current_revision(engine) == head_revision()


async def test_the_lifespan_upgrades_or_refuses_as_settings_say(
    empty_url: str,
) -> None:
    refusing = JobLib(
        database=Database.from_url(empty_url),
        auth=AUTH,
        settings=Settings(upgrade_schema=False),
        sweeper=False,
    )
    with pytest.raises(SchemaNotCurrent):
        async with refusing.lifespan():
            pass
    await refusing.database.dispose()
    upgrading = JobLib(database=Database.from_url(empty_url), auth=AUTH, sweeper=False)
    async with upgrading.lifespan():
        pass
    refusing = JobLib(
        database=Database.from_url(empty_url),
        auth=AUTH,
        settings=Settings(upgrade_schema=False),
        sweeper=False,
    )
    async with refusing.lifespan():
        assert await current_revision(refusing.database.engine) == head_revision()


async def test_host_tables_and_host_alembic_history_are_left_alone(
    empty_url: str, engine_of: Any
) -> None:
    assert "host_note" in SQLModel.metadata.tables
    assert "host_note" not in METADATA.tables
    engine = engine_of(empty_url)
    async with engine.begin() as connection:
        # The host's own Alembic history, in Alembic's default table.
        await connection.exec_driver_sql(
            "CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)"
        )
        await connection.exec_driver_sql(
            "INSERT INTO alembic_version VALUES ('host0001')"
        )
    joblib = JobLib(database=Database(engine), auth=AUTH, sweeper=False)
    async with joblib.lifespan():
        pass
    names = await run_on(engine, _table_names)
    assert "host_note" not in names
    assert set(METADATA.tables) <= names
    async with engine.connect() as connection:
        host = await connection.exec_driver_sql(
            "SELECT version_num FROM alembic_version"
        )
        assert host.scalars().all() == ["host0001"]


async def test_several_servers_upgrading_at_once_make_the_tables_once(
    empty_url: str, engine_of: Any
) -> None:
    engines = [engine_of(empty_url) for _ in range(4)]
    async with anyio.create_task_group() as group:
        for engine in engines:
            group.start_soon(upgrade_schema, engine)
    assert await current_revision(engines[0]) == head_revision()
    assert await differences(engines[0]) == []


@pytest.mark.slow  # three `joblib-server db upgrade` processes at once
def test_several_processes_upgrading_at_once_all_succeed(empty_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBLIB_")}
    processes = [
        subprocess.Popen(
            [COMMAND, "db", "upgrade", "--database-url", empty_url],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for process in processes:
        _out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err

    async def revision() -> str | None:
        engine = create_engine(empty_url)
        try:
            return await current_revision(engine)
        finally:
            await engine.dispose()

    assert anyio.run(revision) == head_revision()


async def test_a_revision_newer_than_this_server_is_refused(
    empty_url: str, engine_of: Any
) -> None:
    engine = engine_of(empty_url)
    await upgrade_schema(engine)
    async with engine.begin() as connection:
        await connection.exec_driver_sql(
            f"UPDATE {VERSION_TABLE} SET version_num = 'from-the-future'"
        )
    for upgrade in (True, False):
        with pytest.raises(SchemaError, match="newer than this joblib-server knows"):
            await ensure_schema(engine, upgrade=upgrade)


async def test_unversioned_tables_that_are_not_0_1_0_are_not_adopted(
    empty_url: str, engine_of: Any
) -> None:
    engine = engine_of(empty_url)
    async with engine.begin() as connection:
        await connection.exec_driver_sql(
            "CREATE TABLE joblib_job (id VARCHAR(32) PRIMARY KEY)"
        )
    with pytest.raises(SchemaError, match=r"not those of joblib 0\.1\.0"):
        await upgrade_schema(engine)
    assert await current_revision(engine) is None


# the 0.1.0 fixtures ------------------------------------------------------------


async def test_the_first_revision_is_exactly_the_0_1_0_schema(
    kind: str, fixture_url: str, empty_url: str, engine_of: Any
) -> None:
    fresh = engine_of(empty_url)
    await upgrade_schema(fresh, FIRST_REVISION)
    old = engine_of(fixture_url)
    if kind == "sqlite":
        assert await run_on(fresh, _schema_sql) == await run_on(old, _schema_sql)
    else:
        assert pg_schema(empty_url) == pg_schema(fixture_url)


async def test_a_0_1_0_database_is_adopted_and_served(
    kind: str, fixture_url: str
) -> None:
    manifest = _manifest(kind)
    database = Database.from_url(fixture_url)
    assert await current_revision(database.engine) is None
    with pytest.raises(SchemaNotCurrent, match=r"unversioned \(joblib 0\.1\.0\)"):
        await ensure_schema(database.engine, upgrade=False)

    joblib = JobLib(database=database, auth=AUTH, sweeper=False)
    async with joblib.lifespan():
        assert await current_revision(database.engine) == head_revision()
        assert await differences(database.engine) == []
        transport = httpx.ASGITransport(app=joblib.asgi_app())
        async with (
            httpx.AsyncClient(
                transport=transport,
                base_url="http://fixture",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            ) as admin,
            httpx.AsyncClient(
                transport=transport,
                base_url="http://fixture",
                headers={"Authorization": f"Bearer {ALICE_TOKEN}"},
            ) as alice,
        ):
            await _check_everything_is_there(admin, manifest)
            await _claim_and_complete(admin, alice, manifest)


async def _check_everything_is_there(
    admin: httpx.AsyncClient, manifest: dict[str, Any]
) -> None:
    workers = (await admin.get("/workers")).json()
    assert sorted(worker["id"] for worker in workers["items"]) == sorted(
        manifest["workers"]
    )
    expected = {
        task_id: status
        for status, task_ids in manifest["tasks"].items()
        for task_id in task_ids
    }
    expected[manifest["energy_task"]] = "pending"
    for task_id, status in expected.items():
        answer = await admin.get(f"/tasks/{task_id}")
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == status, task_id


async def _claim_and_complete(
    admin: httpx.AsyncClient, alice: httpx.AsyncClient, manifest: dict[str, Any]
) -> None:
    # The worker that ran the tasks is admin's and serves Rotate; the other one is
    # alice's and serves Energy, in room lab.
    [running] = manifest["tasks"]["running"]
    admin_worker = (await admin.get(f"/tasks/{running}")).json()["worker_id"]
    [alice_worker] = set(manifest["workers"]) - {admin_worker}
    # The older of Rotate's two pending tasks comes first.
    claimed = await admin.post("/tasks/claim", json={"worker_id": admin_worker})
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["task"]["id"] == manifest["tasks"]["pending"][0]
    claimed = await alice.post("/tasks/claim", json={"worker_id": alice_worker})
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["task"]["id"] == manifest["energy_task"]
    # The task that was running under 0.1.0 finishes under this version.
    done = await admin.patch(f"/tasks/{running}", json={"status": "completed"})
    assert done.status_code == 200, done.text
    assert (await admin.get(f"/tasks/{running}")).json()["status"] == "completed"


# the command line --------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBLIB_")}
    return subprocess.run(
        [COMMAND, *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.slow  # over ~5 s
def test_db_commands_upgrade_a_copy_of_each_fixture(fixture_url: str) -> None:
    head = head_revision()
    before = _cli("db", "current", "--database-url", fixture_url)
    assert before.returncode == 0, before.stderr
    assert before.stdout.startswith("none (not head): ")
    assert "unversioned (joblib 0.1.0)" in before.stdout

    upgraded = _cli("db", "upgrade", "--database-url", fixture_url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.strip() == f"joblib's schema upgraded from nothing to {head}"

    after = _cli("db", "current", "--database-url", fixture_url)
    assert after.returncode == 0, after.stderr
    assert after.stdout.strip() == f"{head} (head)"

    again = _cli("db", "upgrade", "--database-url", fixture_url, "--revision", "head")
    assert again.stdout.strip() == f"joblib's schema is already at revision {head}"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mysql://db.example/joblib", "unsupported database URL"),
        ("not a url", "Could not parse"),
        ("postgresql://postgres@127.0.0.1:1/joblib", "onnect"),
        ("sqlite:////nonexistent/folder/joblib.db", "unable to open database file"),
    ],
)
@pytest.mark.parametrize("command_", ["upgrade", "current"])
def test_db_commands_fail_in_one_line(
    url: str, says: str, command_: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", command_, "--database-url", url]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    [line] = err.splitlines()
    assert line.startswith("joblib-server: error: ")
    assert says in line


def test_serve_refuses_a_stale_database_when_upgrades_are_off(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'joblib.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBLIB_")}
    env.update(JOBLIB_UPGRADE_SCHEMA="false", JOBLIB_TOKENS='{"t": {"id": "a"}}')
    done = subprocess.run(
        [COMMAND, "serve", "--port", "1", "--database-url", url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert "joblib's schema is not created yet" in line
    assert f"joblib-server db upgrade --database-url {url}" in line


# a host that runs Alembic itself ----------------------------------------------

HOST_ENV = """
import sqlalchemy as sa
from alembic import context

from joblib_server.schema import upgrade_connection

target_metadata = sa.MetaData()
sa.Table("host_note", target_metadata, sa.Column("id", sa.Integer, primary_key=True))


def include_name(name, type_, parent_names):
    return not (type_ == "table" and name.startswith("joblib_"))


engine = sa.create_engine(context.config.get_main_option("sqlalchemy.url"))
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()
    upgrade_connection(connection)
    connection.commit()
engine.dispose()
"""

HOST_REVISION = """
import sqlalchemy as sa
from alembic import op

revision = "host0001"
down_revision = None


def upgrade():
    op.create_table("host_note", sa.Column("id", sa.Integer, primary_key=True))
"""


def test_a_host_alembic_env_upgrades_joblib_in_the_same_run(tmp_path: Path) -> None:
    scripts = tmp_path / "host_migrations"
    (scripts / "versions").mkdir(parents=True)
    (scripts / "env.py").write_text(HOST_ENV)
    (scripts / "versions" / "host0001.py").write_text(HOST_REVISION)
    database = tmp_path / "host.db"
    config = Config()
    config.set_main_option("script_location", str(scripts))
    config.set_main_option("sqlalchemy.url", f"sqlite:///{database}")
    command.upgrade(config, "head")
    # The host's autogenerate sees nothing to do: joblib's tables are left out.
    command.check(config)

    engine = sa.create_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as connection:
            host = connection.exec_driver_sql("SELECT version_num FROM alembic_version")
            assert host.scalars().all() == ["host0001"]
            ours = connection.exec_driver_sql(
                f"SELECT version_num FROM {VERSION_TABLE}"
            )
            assert ours.scalars().all() == [head_revision()]
            # Only the host's tables are not joblib's.
            assert {(kind, table.name) for kind, table in _differences(connection)} == {
                ("remove_table", "alembic_version"),
                ("remove_table", "host_note"),
            }
    finally:
        engine.dispose()
