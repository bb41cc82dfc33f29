"""`joblib-server`: run the standalone server, manage tokens, upgrade the database."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import anyio
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from joblib_server.auth import (
    AuthBackend,
    Identity,
    TokenAuth,
    TokenFileAuth,
    TokenStore,
    TokenTable,
    mask,
)
from joblib_server.backends import database_file
from joblib_server.database import create_engine
from joblib_server.errors import JobLibError, SchemaNotCurrent
from joblib_server.logs import LEVELS, configure_logging
from joblib_server.policy import RoomPatterns
from joblib_server.preflight import (
    StartupError,
    check_database,
    check_database_url,
    check_executor,
    check_folder,
    check_redis,
    check_sqlite_file,
    check_wake_bus,
    listening_socket,
    one_line,
    read_settings,
)
from joblib_server.schema import (
    current_revision,
    ensure_schema,
    head_revision,
    upgrade_schema,
)
from joblib_server.settings import Settings, StandaloneSettings

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


class _NotFound(Exception):
    """Nothing matched what the command was given; the exit status is 1."""


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, like every other startup mistake."""

    def error(self, message: str) -> NoReturn:
        """Print `prog: error: message` and a pointer to --help; exit 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def default_tokens_file(database_url: str) -> Path:
    """The tokens file next to an SQLite database, else in the working directory."""
    path = database_file(database_url)
    if path is not None:
        return path.expanduser().resolve().parent / TOKENS_FILE_NAME
    return Path.cwd() / TOKENS_FILE_NAME


def _tokens_file(args: argparse.Namespace, settings: StandaloneSettings) -> Path:
    given = getattr(args, "tokens_file", None) or settings.tokens_file
    return (
        Path(given).resolve() if given else default_tokens_file(settings.database_url)
    )


def _settings(args: argparse.Namespace) -> StandaloneSettings:
    try:
        settings = read_settings(database_url=getattr(args, "database_url", None))
        check_database_url(settings.database_url)
        check_wake_bus(settings)
    except StartupError as exc:
        raise _Failed(str(exc)) from exc
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
        raise _Failed(one_line(exc)) from exc


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from joblib_server.app import JobLibServer, create_app

    settings = _settings(args)
    configure_logging(args.log_level, args.log_format or settings.log_format)
    # Everything that can be wrong is found before anything is written: the
    # tokens file and the SQLite database are made only once it all holds.
    try:
        check_sqlite_file(settings.database_url)
        # Imports the host's code: a wrong name is told before a token is made.
        executor = check_executor(settings)
        tokens = _read_tokens(args, settings)
        sock = listening_socket(args.host, args.port)
        anyio.run(_reachable, settings)
    except StartupError as exc:
        raise _Failed(str(exc)) from exc
    if not settings.joblib.upgrade_schema:
        # The lifespan would refuse as well, but inside uvicorn's traceback.
        _on_database(settings, lambda engine: ensure_schema(engine, upgrade=False))
    auth, policy, where = _token_auth(tokens)
    app = create_app(settings, auth, policy=policy, executor=executor)
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
        # Logging is configured above (configure_logging), uvicorn's loggers too.
        log_config=None,
        # An idle keep-alive connection is closed after this (uvicorn's own
        # deadline; JobLibServer adds those for headers and bodies).
        timeout_keep_alive=settings.keep_alive_seconds,
        # Connections still open this long after SIGTERM are closed anyway.
        timeout_graceful_shutdown=settings.graceful_shutdown_seconds,
    )
    JobLibServer(config, app.joblib).run(sockets=[sock])
    return 0


async def _reachable(settings: StandaloneSettings) -> None:
    await check_database(settings.database_url)
    if settings.redis_url:
        await check_redis(settings.redis_url)


def _read_tokens(
    args: argparse.Namespace, settings: StandaloneSettings
) -> TokenTable | TokenStore:
    """`JOBLIB_TOKENS` read, or the tokens file checked; a `StartupError` if bad."""
    if settings.tokens is not None and settings.tokens.get_secret_value():
        try:
            return TokenTable.from_json(settings.tokens.get_secret_value())
        except ValueError as exc:
            raise StartupError(f"JOBLIB_TOKENS: {exc}") from None
    store = TokenStore(_tokens_file(args, settings))
    check_folder(store.path, "tokens file")
    try:
        store.table()
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise StartupError(
            f"cannot read the tokens file {store.path}: {reason}"
        ) from None
    except ValueError as exc:
        raise StartupError(f"bad tokens file: {exc}") from None
    return store


def _token_auth(
    tokens: TokenTable | TokenStore,
) -> tuple[AuthBackend, RoomPatterns, str]:
    """The auth backend and room policy of the tokens; where they come from."""
    if isinstance(tokens, TokenTable):
        # Tokens with "rooms" hold their identities to those rooms.
        return (
            TokenAuth(tokens.identities),
            RoomPatterns(tokens.rooms),
            "the JOBLIB_TOKENS environment variable",
        )
    table = tokens.table()
    if not table.identities:
        tokens.create(Identity(id="admin", is_admin=True))
        table = tokens.table()
        logger.warning("no tokens yet: created an admin token in %s", tokens.path)
    policy = RoomPatterns(table.rooms)

    def follow(new: TokenTable) -> None:
        policy.rooms = {who: tuple(rooms) for who, rooms in new.rooms.items()}

    # Tokens added or revoked in the file count without a restart.
    return TokenFileAuth(tokens, table, on_change=follow), policy, str(tokens.path)


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
    if args.name is None:
        raise _Failed("give --name to create a token, or use token list / revoke")
    settings = _settings(args)
    store = TokenStore(_tokens_file(args, settings))
    try:
        token = store.create(Identity(id=args.name, is_admin=args.admin), args.room)
    except ValueError as exc:
        raise _Failed(str(exc)) from exc
    print(token)
    print(f"stored in {store.path}", file=sys.stderr)
    return 0


def _token_list(args: argparse.Namespace) -> int:
    settings = _settings(args)
    store = TokenStore(_tokens_file(args, settings))
    try:
        raw = store.entries()
    except (OSError, ValueError) as exc:
        raise _Failed(one_line(exc)) from exc
    rows = [
        {
            "token": mask(token),
            "identity": entry["id"],
            "admin": bool(entry.get("admin")),
            "rooms": entry.get("rooms"),
        }
        for token, entry in raw.items()
    ]
    if settings.tokens is not None:
        print(
            "note: JOBLIB_TOKENS is set; serve uses it, not this file", file=sys.stderr
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no tokens in {store.path}", file=sys.stderr)
        return 0
    table = [("TOKEN", "IDENTITY", "ADMIN", "ROOMS")] + [
        (
            row["token"],
            row["identity"],
            "yes" if row["admin"] else "no",
            "all" if row["rooms"] is None else ",".join(row["rooms"]),
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(3)]
    for line in table:
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=False)]
        print("  ".join([*cells, line[3]]))
    print(f"({len(rows)} tokens in {store.path})", file=sys.stderr)
    return 0


def _token_revoke(args: argparse.Namespace) -> int:
    settings = _settings(args)
    store = TokenStore(_tokens_file(args, settings))
    if not store.path.exists():
        raise _NotFound(f"no tokens file at {store.path}")
    try:
        revoked = store.revoke(args.which)
    except LookupError as exc:
        raise _NotFound(str(exc).strip("'\"")) from exc
    except (OSError, ValueError) as exc:
        raise _Failed(one_line(exc)) from exc
    for token, entry in revoked.items():
        print(f"revoked {mask(token)} of {entry['id']!r}")
    print(
        f"{store.path}: a running server refuses these tokens within a second",
        file=sys.stderr,
    )
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


def environment_help() -> str:
    """Each `JOBLIB_*` variable with its default and meaning, from the settings."""
    lines = ["environment variables (flags win over them):"]
    fields = {
        **{k: v for k, v in StandaloneSettings.model_fields.items() if k != "joblib"},
        **Settings.model_fields,
    }
    for name, field in fields.items():
        default = field.get_default(call_default_factory=True)
        meaning = re.split(r"(?<=\.)\s", " ".join((field.description or "").split()))[0]
        lines.append(f"  JOBLIB_{name.upper()} (default: {_shown(default)})")
        lines.append(f"      {meaning}")
    return "\n".join(lines)


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1-65535)")
    return port


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="joblib-server",
        epilog="`joblib-server serve --help` lists the JOBLIB_* variables.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"joblib-server {version('joblib-server')}",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="{serve,token,db}"
    )
    database_help = "default: $JOBLIB_DATABASE_URL or ./joblib.db"

    serve = sub.add_parser(
        "serve",
        help="run the standalone server",
        epilog=environment_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_port, default=8000)
    serve.add_argument("--database-url", help=database_help)
    serve.add_argument(
        "--tokens-file", help="default: joblib-tokens.json by the database"
    )
    serve.add_argument("--log-level", default="info", choices=LEVELS)
    serve.add_argument(
        "--log-format",
        choices=("text", "json"),
        help="text lines, or one JSON object per line (default: $JOBLIB_LOG_FORMAT "
        "or text)",
    )
    serve.set_defaults(run=_serve)

    token = sub.add_parser(
        "token",
        help="create an access token and print it; list or revoke tokens",
        description="With --name: create a token and print it. `token list` and "
        "`token revoke` show and remove tokens; a running server follows the file.",
    )
    token.add_argument("--name", help="the identity the token stands for")
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
    token_sub = token.add_subparsers(dest="token_command")
    listing = token_sub.add_parser(
        "list", help="the tokens: identity, admin, rooms; each token masked"
    )
    listing.add_argument("--json", action="store_true", help="as a JSON list")
    revoke = token_sub.add_parser(
        "revoke",
        help="remove tokens (exit 1 when none matches)",
        description="Remove a token given whole, every token of an identity, or "
        "the token starting with a prefix (4 characters or more; refused when "
        "several identities' tokens start with it). Exit 1 when nothing matches.",
    )
    revoke.add_argument("which", metavar="TOKEN-OR-PREFIX-OR-IDENTITY")
    for command, run in ((listing, _token_list), (revoke, _token_revoke)):
        # SUPPRESS: the same options given before `list` must not be reset.
        command.add_argument(
            "--database-url", default=argparse.SUPPRESS, help="as for token"
        )
        command.add_argument("--tokens-file", default=argparse.SUPPRESS)
        command.set_defaults(run=run)

    db = sub.add_parser("db", help="joblib's tables: upgrade them, show their revision")
    db_sub = db.add_subparsers(
        dest="db_command", required=True, metavar="{upgrade,current}"
    )
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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line."""
    args = _parser().parse_args(argv)
    if args.command != "serve":
        configure_logging("info")  # serve sets up its own, once it read its settings
    try:
        return int(args.run(args))
    except _Failed as exc:
        print(f"joblib-server: error: {exc}", file=sys.stderr)
        return 2
    except _NotFound as exc:
        print(f"joblib-server: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
