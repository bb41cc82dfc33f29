"""What `joblib-server serve` checks before it writes anything or serves.

Each check raises `StartupError` with one line that says what is wrong and
where: the CLI prints it and exits 2. They run before the tokens file or the
SQLite database is written, so a start that fails leaves nothing behind.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any, get_origin
from urllib.parse import urlsplit

import anyio
from pydantic import BaseModel, ValidationError
from pydantic_settings import SettingsError
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from joblib_server.backends import (
    can_notify,
    create_engine,
    database_file,
    normalize_url,
)
from joblib_server.executors import Executor, standalone_executor
from joblib_server.settings import Settings, StandaloneSettings

CONNECT_TIMEOUT_SECONDS = 10.0
"""How long the database and Redis get to answer before the start is refused."""

_URL_FORMS = "use sqlite:///path/to/joblib.db or postgresql://user@host/db"


class StartupError(Exception):
    """The server cannot start; the message is one line saying why."""


def read_settings(**overrides: Any) -> StandaloneSettings:
    """`StandaloneSettings.from_env`, a bad `JOBLIB_*` variable told in one line."""
    try:
        return StandaloneSettings.from_env(**overrides)
    except SettingsError as exc:
        # Raised for a list or object setting whose text is not JSON.
        found = re.search(r'field "(\w+)"', str(exc))
        name = found.group(1) if found else ""
        variable = f"JOBLIB_{name.upper()}"
        given = os.environ.get(variable, "")
        raise StartupError(
            f"{variable}={given!r} is not JSON: expected {_json_form(name)}"
        ) from None
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else ""
            problems.append(
                f"JOBLIB_{name.upper()}={error['input']!r}: {error['msg']}"
                if name
                else error["msg"]
            )
        raise StartupError("; ".join(problems)) from None


def _json_form(name: str) -> str:
    for model in (Settings, StandaloneSettings):
        field = model.model_fields.get(name)
        if field is None:
            continue
        shape = get_origin(field.annotation) or field.annotation
        if shape is list:
            example = json.dumps(field.get_default(call_default_factory=True))
            return f"a JSON list, e.g. JOBLIB_{name.upper()}='{example}'"
        if shape is dict or (
            isinstance(shape, type) and issubclass(shape, BaseModel | dict)
        ):
            return "a JSON object"
    return "a JSON value"


def check_database_url(url: str) -> None:
    """A URL joblib can use: `sqlite://` or `postgresql://`, readable as a URL."""
    try:
        normalize_url(url)
    except ValueError as exc:  # another database
        raise StartupError(str(exc)) from None
    except SQLAlchemyError:
        raise StartupError(
            f"Could not parse the database URL {url!r}: {_URL_FORMS}"
        ) from None


def check_wake_bus(settings: StandaloneSettings) -> None:
    """A wake bus the settings allow: Redis with a Redis URL, NOTIFY on PostgreSQL."""
    bus = settings.joblib.wake_bus
    if bus == "redis" and not settings.redis_url:
        raise StartupError("JOBLIB_WAKE_BUS=redis needs JOBLIB_REDIS_URL")
    if bus == "postgresql" and not can_notify(settings.database_url):
        raise StartupError(
            "JOBLIB_WAKE_BUS=postgresql needs a PostgreSQL database "
            "(JOBLIB_DATABASE_URL)"
        )


def check_sqlite_file(url: str) -> None:
    """An SQLite database in a folder that exists, and a file that is SQLite.

    Refused rather than created: a missing folder is more often a typo or a
    volume that is not mounted than a wish for a new folder.
    """
    path = database_file(url)
    if path is None:
        return
    path = path.expanduser()
    folder = path.resolve().parent
    if not folder.is_dir():
        raise StartupError(
            f"the folder {folder} of the SQLite database does not exist; "
            "create it, or give another --database-url"
        )
    if not path.exists():
        if not os.access(folder, os.W_OK):
            raise StartupError(f"cannot create the SQLite database in {folder}")
        return
    try:
        read_only = f"{path.resolve().as_uri()}?mode=ro"
        with closing(sqlite3.connect(read_only, uri=True)) as db:
            db.execute("PRAGMA schema_version").fetchone()
    except sqlite3.Error as exc:
        raise StartupError(
            f"{path}: cannot be used as an SQLite database ({exc})"
        ) from None


def check_folder(path: Path, what: str) -> None:
    """The folder that is to hold `path` exists."""
    if not path.parent.is_dir():
        raise StartupError(f"the folder {path.parent} of the {what} does not exist")


async def check_database(url: str, within: float = CONNECT_TIMEOUT_SECONDS) -> None:
    """A server database (PostgreSQL) answers; SQLite files are checked on disk."""
    if database_file(url) is not None or make_url(url).get_backend_name() == "sqlite":
        return
    parsed = make_url(url)
    where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
    engine = create_engine(url)
    try:
        with anyio.fail_after(within):
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    except TimeoutError:
        raise StartupError(
            f"the database at {where} did not answer within {within:g} s"
        ) from None
    except (OSError, SQLAlchemyError) as exc:
        raise StartupError(
            f"cannot connect to the database at {where}: {one_line(exc)}"
        ) from None
    finally:
        await engine.dispose()


async def check_redis(url: str, within: float = CONNECT_TIMEOUT_SECONDS) -> None:
    """The `redis` package is installed and the Redis at `url` answers a PING."""
    try:
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError
    except ImportError:
        raise StartupError(
            "JOBLIB_REDIS_URL is set, but the redis package is not installed: "
            "pip install 'joblib-server[redis]'"
        ) from None
    parts = urlsplit(url)
    where = f"{parts.hostname or 'localhost'}:{parts.port or 6379}"
    try:
        client = aioredis.Redis.from_url(
            url, socket_connect_timeout=within, socket_timeout=within
        )
    except ValueError as exc:
        raise StartupError(f"JOBLIB_REDIS_URL={url!r} cannot be used: {exc}") from None
    try:
        with anyio.fail_after(within + 1):
            await client.ping()
    except (RedisError, OSError, TimeoutError) as exc:
        reason = one_line(exc) if str(exc) else "no answer"
        raise StartupError(
            f"Redis at {where} (JOBLIB_REDIS_URL) does not answer: {reason}"
        ) from None
    finally:
        await client.aclose()


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to `host`:`port` for uvicorn to listen on."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        hint = (
            "; another server is listening there"
            if exc.errno == errno.EADDRINUSE
            else ""
        )
        reason = (exc.strerror or str(exc)).lower()
        raise StartupError(f"cannot listen on {host}:{port}: {reason}{hint}") from None
    sock.set_inheritable(True)
    return sock


def check_executor(settings: StandaloneSettings) -> Executor | None:
    """The executor of the internal jobs the settings name; one line if wrong."""
    try:
        return standalone_executor(settings)
    except ValueError as exc:
        raise StartupError(str(exc)) from None


def one_line(exc: BaseException) -> str:
    """The first line of what went wrong, the driver's own words for a database."""
    # A DBAPIError's text adds the SQL and a link; the driver's own message is
    # the part that says what went wrong.
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig else exc
    lines = str(cause).strip().splitlines() or [type(cause).__name__]
    return lines[0]
