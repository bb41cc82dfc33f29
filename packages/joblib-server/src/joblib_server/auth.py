"""Identities and the pluggable authentication backend shared by REST and Socket.IO."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Identity:
    """The authenticated caller."""

    id: str
    is_admin: bool = False


@runtime_checkable
class AuthBackend(Protocol):
    """Turns the credentials of a request or socket handshake into an identity.

    `headers` are the HTTP headers (of the request, or of the Socket.IO handshake);
    `auth` is the Socket.IO `auth` payload, or None for REST requests. Return None
    when the caller is not authenticated.
    """

    async def authenticate(
        self, headers: Mapping[str, str], auth: Mapping[str, Any] | None = None
    ) -> Identity | None:
        """Return the caller's identity, or None."""
        ...


def bearer_token(
    headers: Mapping[str, str], auth: Mapping[str, Any] | None = None
) -> str | None:
    """Return the token of `Authorization: Bearer …`, else of the `auth` payload."""
    header = headers.get("authorization") or headers.get("Authorization") or ""
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if auth is not None:
        candidate = auth.get("token")
        if isinstance(candidate, str) and candidate:
            return candidate
    return None


class TokenAuth:
    """Bearer tokens, each mapped to an identity id and an admin flag."""

    def __init__(self, tokens: Mapping[str, Identity]) -> None:
        self._tokens = dict(tokens)

    async def authenticate(
        self, headers: Mapping[str, str], auth: Mapping[str, Any] | None = None
    ) -> Identity | None:
        """Look the bearer token up."""
        token = bearer_token(headers, auth)
        if token is None:
            return None
        for known, identity in self._tokens.items():
            # Compare every token in constant time so timing reveals nothing.
            if secrets.compare_digest(known.encode(), token.encode()):
                return identity
        return None

    def add(self, token: str, identity: Identity) -> None:
        """Accept one more token."""
        self._tokens[token] = identity


def _parse_tokens(data: Any, source: str) -> dict[str, Identity]:
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a JSON object of tokens")
    tokens: dict[str, Identity] = {}
    for token, entry in data.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            raise ValueError(f"{source}: token entries need an 'id' string")
        tokens[token] = Identity(id=entry["id"], is_admin=bool(entry.get("admin")))
    return tokens


class TokenStore:
    """The standalone server's tokens: a JSON file, or `JOBLIB_TOKENS` given whole."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Identity]:
        """Read the tokens file; an absent file holds no tokens."""
        if not self.path.exists():
            return {}
        return _parse_tokens(json.loads(self.path.read_text()), str(self.path))

    def create(self, identity: Identity) -> str:
        """Make a new token for `identity`, store it, and return it."""
        raw: dict[str, Any] = {}
        if self.path.exists():
            raw = json.loads(self.path.read_text())
        token = secrets.token_urlsafe(32)
        raw[token] = {"id": identity.id, "admin": identity.is_admin}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        # Tokens are secrets: the file is readable by its owner only.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(raw, handle, indent=2)
        tmp.replace(self.path)
        return token


def tokens_from_env(value: str) -> dict[str, Identity]:
    """Parse `JOBLIB_TOKENS`: `{"<token>": {"id": "<identity>", "admin": true}}`."""
    return _parse_tokens(json.loads(value), "JOBLIB_TOKENS")
