"""What both example hosts share: their own token auth, joblib's parts, a command line.

The host's authentication is HMAC-signed bearer tokens. A real host would verify its
JWTs or session cookies instead: joblib only needs an object with
`async authenticate(headers, auth) -> Identity | None`; REST hands it the request
headers, Socket.IO the handshake headers and the `auth` payload.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import socketio
import uvicorn

from joblib_server import (
    Database,
    Identity,
    JobLib,
    Settings,
    attach_joblib,
    bearer_token,
    create_socketio_server,
)

SECRET = os.environ.get("HOST_SECRET", "change-me").encode()


def mint_token(user: str, *, admin: bool = False) -> str:
    """Sign `user` into a token the host hands to its users (and their workers)."""
    claims = base64.urlsafe_b64encode(
        json.dumps({"sub": user, "admin": admin}).encode()
    )
    signature = hmac.new(SECRET, claims, hashlib.sha256).hexdigest()
    return f"{claims.decode()}.{signature}"


class SignedTokenAuth:
    """Accepts tokens made by `mint_token`, from the header or the socket payload."""

    async def authenticate(
        self, headers: Mapping[str, str], auth: Mapping[str, Any] | None = None
    ) -> Identity | None:
        """Verify the signature and return who the token names."""
        token = bearer_token(headers, auth)
        if token is None or "." not in token:
            return None
        claims, _, signature = token.rpartition(".")
        expected = hmac.new(SECRET, claims.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature, expected):
            return None
        data = json.loads(base64.urlsafe_b64decode(claims))
        return Identity(id=data["sub"], is_admin=bool(data["admin"]))


def build_joblib(database_url: str) -> tuple[JobLib, socketio.AsyncServer]:
    """joblib on the host's database and auth, with its Socket.IO handlers attached."""
    joblib = JobLib(
        database=Database.from_url(database_url),
        auth=SignedTokenAuth(),
        settings=Settings(worker_timeout_seconds=30, sweeper_interval_seconds=5),
    )
    sio = create_socketio_server(ping_interval=5, ping_timeout=5)
    attach_joblib(sio, joblib)  # joblib's emitter, connect/disconnect, room events
    return joblib, sio


def run(build_app: Callable[[str], Any], port: int, database: str) -> None:
    """Serve the app, or print a token with `--print-token USER [--admin]`."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=port)
    parser.add_argument("--database-url", default=f"sqlite:///{database}")
    parser.add_argument("--print-token", metavar="USER")
    parser.add_argument("--admin", action="store_true")
    args = parser.parse_args()
    if args.print_token:
        print(mint_token(args.print_token, admin=args.admin))
        return
    uvicorn.run(build_app(args.database_url), host="127.0.0.1", port=args.port)
