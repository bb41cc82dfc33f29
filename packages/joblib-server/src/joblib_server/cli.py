"""`joblib-server`: run the standalone server, or create access tokens."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from sqlalchemy.engine import make_url

from joblib_server.auth import Identity, TokenAuth, TokenStore, tokens_from_env
from joblib_server.settings import Settings

logger = logging.getLogger("joblib_server")

TOKENS_FILE_NAME = "joblib-tokens.json"


def default_tokens_file(database_url: str) -> Path:
    """The tokens file next to an SQLite database, else in the working directory."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (
        None,
        "",
        ":memory:",
    ):
        return Path(str(url.database)).expanduser().resolve().parent / TOKENS_FILE_NAME
    return Path.cwd() / TOKENS_FILE_NAME


def _tokens_file(args: argparse.Namespace, settings: Settings) -> Path:
    given = args.tokens_file or os.environ.get("JOBLIB_TOKENS_FILE")
    return (
        Path(given).resolve() if given else default_tokens_file(settings.database_url)
    )


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from joblib_server.app import create_app

    settings = Settings.from_env(database_url=args.database_url)
    from_env = os.environ.get("JOBLIB_TOKENS")
    if from_env:
        auth = TokenAuth(tokens_from_env(from_env))
        where = "the JOBLIB_TOKENS environment variable"
    else:
        store = TokenStore(_tokens_file(args, settings))
        tokens = store.load()
        if not tokens:
            store.create(Identity(id="admin", is_admin=True))
            tokens = store.load()
            logger.warning("no tokens yet: created an admin token in %s", store.path)
        auth = TokenAuth(tokens)
        where = str(store.path)
    app = create_app(settings, auth)
    shown = make_url(settings.database_url).render_as_string(hide_password=True)
    logger.info(
        "joblib-server on http://%s:%d/v1/joblib (database %s; tokens in %s)",
        args.host,
        args.port,
        shown,
        where,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _token(args: argparse.Namespace) -> int:
    settings = Settings.from_env(database_url=args.database_url)
    store = TokenStore(_tokens_file(args, settings))
    token = store.create(Identity(id=args.name, is_admin=args.admin))
    print(token)
    print(f"stored in {store.path}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line."""
    parser = argparse.ArgumentParser(prog="joblib-server")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the standalone server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--database-url", help="default: $JOBLIB_DATABASE_URL or ./joblib.db"
    )
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
    token.add_argument("--database-url", help="locates the tokens file, as for serve")
    token.add_argument("--tokens-file")
    token.set_defaults(run=_token)

    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    return int(args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
