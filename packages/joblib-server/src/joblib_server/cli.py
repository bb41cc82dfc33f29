"""`joblib-server`: run the standalone server, create tokens, upgrade the database."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import anyio
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from joblib_server.auth import Identity, TokenAuth, TokenStore, TokenTable
from joblib_server.backends import database_file
from joblib_server.database import create_engine, normalize_url
from joblib_server.errors import JobLibError, SchemaNotCurrent
from joblib_server.policy import RoomPatterns
from joblib_server.schema import (
    current_revision,
    ensure_schema,
    head_revision,
    upgrade_schema,
)
from joblib_server.settings import StandaloneSettings

logger = logging.getLogger("joblib_server")

T = TypeVar("T")

TOKENS_FILE_NAME = "joblib-tokens.json"

_SPARE_FILES = 256
"""Open files a server needs beside its sockets: requests, database, logs."""

# What a database command can meet that is the user's to fix, not a bug: a URL we
# cannot use, a server that does not answer, tables we cannot upgrade.
_USER_ERRORS = (JobLibError, ValueError, SQLAlchemyError, OSError)


class _Failed(Exception):
    """A command failed for a reason told in one line; the exit status is 2."""


def default_tokens_file(database_url: str) -> Path:
    """The tokens file next to an SQLite database, else in the working directory."""
    path = database_file(database_url)
    if path is not None:
        return path.expanduser().resolve().parent / TOKENS_FILE_NAME
    return Path.cwd() / TOKENS_FILE_NAME


def _tokens_file(args: argparse.Namespace, settings: StandaloneSettings) -> Path:
    given = args.tokens_file or settings.tokens_file
    return (
        Path(given).resolve() if given else default_tokens_file(settings.database_url)
    )


def _settings(args: argparse.Namespace) -> StandaloneSettings:
    try:
        settings = StandaloneSettings.from_env(database_url=args.database_url)
    except ValueError as exc:
        raise _Failed(f"bad JOBLIB_* setting: {exc}") from exc
    try:
        normalize_url(settings.database_url)
    except (ValueError, SQLAlchemyError) as exc:
        raise _Failed(_one_line(exc)) from exc
    return settings


def _on_database(
    settings: StandaloneSettings, work: Callable[[AsyncEngine], Awaitable[T]]
) -> T:
    """Run `work` on an engine for the settings' database; errors become one line."""

    async def run() -> T:
        engine = create_engine(settings.database_url)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    try:
        return anyio.run(run)
    except _USER_ERRORS as exc:
        raise _Failed(_one_line(exc)) from exc


def _one_line(exc: BaseException) -> str:
    # A DBAPIError's text adds the SQL and a link; the driver's own message is
    # the part that says what went wrong.
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig else exc
    lines = str(cause).strip().splitlines() or [type(cause).__name__]
    return lines[0]


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from joblib_server.app import JobLibServer, create_app

    settings = _settings(args)
    if not settings.joblib.upgrade_schema:
        # The lifespan would refuse as well, but inside uvicorn's traceback.
        _on_database(settings, lambda engine: ensure_schema(engine, upgrade=False))
    if settings.tokens is not None and settings.tokens.get_secret_value():
        table = TokenTable.from_json(settings.tokens.get_secret_value())
        where = "the JOBLIB_TOKENS environment variable"
    else:
        store = TokenStore(_tokens_file(args, settings))
        table = store.table()
        if not table.identities:
            store.create(Identity(id="admin", is_admin=True))
            table = store.table()
            logger.warning("no tokens yet: created an admin token in %s", store.path)
        where = str(store.path)
    # Tokens with "rooms" hold their identities to those rooms.
    policy = RoomPatterns(table.rooms)
    app = create_app(settings, TokenAuth(table.identities), policy=policy)
    shown = make_url(settings.database_url).render_as_string(hide_password=True)
    logger.info(
        "joblib-server on http://%s:%d/v1/joblib (database %s; tokens in %s)",
        args.host,
        args.port,
        shown,
        where,
    )
    _raise_file_limit(settings.joblib.max_sockets)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        # An idle keep-alive connection is closed after this (uvicorn's own
        # deadline; JobLibServer adds those for headers and bodies).
        timeout_keep_alive=settings.keep_alive_seconds,
        # Connections still open this long after SIGTERM are closed anyway.
        timeout_graceful_shutdown=settings.graceful_shutdown_seconds,
    )
    JobLibServer(config, app.joblib).run()
    return 0


def _raise_file_limit(max_sockets: int) -> None:
    """Raise the soft limit on open files to the hard one, and warn when it is low.

    Every socket is a file; 1,024 (a common soft limit) leaves no room beside
    the default `max_sockets` of 1,000 for requests and database connections.
    """
    try:
        import resource
    except ImportError:  # not on this platform
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    if soft < max_sockets + _SPARE_FILES:
        logger.warning(
            "only %d open files allowed: fewer than max_sockets (%d) plus %d for "
            "requests and the database; lower JOBLIB_MAX_SOCKETS or raise ulimit -n",
            soft,
            max_sockets,
            _SPARE_FILES,
        )


def _token(args: argparse.Namespace) -> int:
    settings = _settings(args)
    store = TokenStore(_tokens_file(args, settings))
    try:
        token = store.create(Identity(id=args.name, is_admin=args.admin), args.room)
    except ValueError as exc:
        raise _Failed(str(exc)) from exc
    print(token)
    print(f"stored in {store.path}", file=sys.stderr)
    return 0


def _db_upgrade(args: argparse.Namespace) -> int:
    async def upgrade(engine: AsyncEngine) -> tuple[str | None, str | None]:
        before = await current_revision(engine)
        await upgrade_schema(engine, args.revision)
        return before, await current_revision(engine)

    before, after = _on_database(_settings(args), upgrade)
    if before == after:
        print(f"joblib's schema is already at revision {after}")
    else:
        print(f"joblib's schema upgraded from {before or 'nothing'} to {after}")
    return 0


def _db_current(args: argparse.Namespace) -> int:
    async def current(engine: AsyncEngine) -> str:
        revision = await current_revision(engine)
        try:
            await ensure_schema(engine, upgrade=False)
        except SchemaNotCurrent as exc:
            return f"{revision or 'none'} (not head): {exc}"
        return f"{revision} (head)"

    print(_on_database(_settings(args), current))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line."""
    parser = argparse.ArgumentParser(prog="joblib-server")
    sub = parser.add_subparsers(dest="command", required=True)
    database_help = "default: $JOBLIB_DATABASE_URL or ./joblib.db"

    serve = sub.add_parser("serve", help="run the standalone server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--database-url", help=database_help)
    serve.add_argument(
        "--tokens-file", help="default: joblib-tokens.json by the database"
    )
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(run=_serve)

    token = sub.add_parser("token", help="create an access token and print it")
    token.add_argument(
        "--name", required=True, help="the identity the token stands for"
    )
    token.add_argument(
        "--admin", action="store_true", help="make the identity an admin"
    )
    token.add_argument(
        "--room",
        action="append",
        metavar="PATTERN",
        help="hold the identity to rooms matching PATTERN (a glob, e.g. 'lab-*'); "
        "repeat for more; without it the identity may use every room",
    )
    token.add_argument("--database-url", help="locates the tokens file, as for serve")
    token.add_argument("--tokens-file")
    token.set_defaults(run=_token)

    db = sub.add_parser("db", help="joblib's tables: upgrade them, show their revision")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_sub.add_parser(
        "upgrade", help="create or upgrade joblib's tables (0.1.0 ones included)"
    )
    upgrade.add_argument("--database-url", help=database_help)
    upgrade.add_argument(
        "--revision",
        default="head",
        help=f"the revision to reach (default: head, now {head_revision()})",
    )
    upgrade.set_defaults(run=_db_upgrade)
    current = db_sub.add_parser(
        "current", help="print the database's revision and whether it is head"
    )
    current.add_argument("--database-url", help=database_help)
    current.set_defaults(run=_db_current)

    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    # Alembic tells of its dialect on every connection; joblib logs what it did.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        return int(args.run(args))
    except _Failed as exc:
        print(f"joblib-server: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
