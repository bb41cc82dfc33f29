"""Identities and the pluggable authentication backend shared by REST and Socket.IO."""

from __future__ import annotations

import json
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

try:
    import fcntl
except ImportError:  # not on Windows: token writes there are not locked
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger("joblib_server.auth")

SHOWN_PREFIX = 6
"""Characters of a token that `token list` shows: enough to tell tokens apart
and to revoke one by its prefix, far too few to guess the rest."""

MIN_PREFIX = 4
"""The shortest prefix `token revoke` takes for a token."""


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


@dataclass(frozen=True)
class TokenTable:
    """The standalone server's token table: who each token stands for, and where.

    On disk and in `JOBLIB_TOKENS` it is one JSON object,
    `{"<token>": {"id": "<identity>", "admin": true, "rooms": ["lab-*"]}}`;
    `admin` and `rooms` may be left out. An identity whose tokens carry `rooms` may
    act only in rooms matching one of them (see `policy.RoomPatterns`).
    """

    identities: Mapping[str, Identity]
    """Each token's identity."""
    rooms: Mapping[str, tuple[str, ...]]
    """The room patterns of each restricted identity id; others may use any room."""

    @classmethod
    def parse(cls, data: Any, source: str) -> TokenTable:
        """Read the JSON object of tokens; a `ValueError` naming `source` if bad."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a JSON object of tokens")
        identities: dict[str, Identity] = {}
        rooms: dict[str, tuple[str, ...] | None] = {}
        for token, entry in data.items():
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                raise ValueError(f"{source}: token entries need an 'id' string")
            identity = Identity(id=entry["id"], is_admin=bool(entry.get("admin")))
            patterns = _room_patterns(entry.get("rooms"), source, identity.id)
            if rooms.setdefault(identity.id, patterns) != patterns:
                # Rooms restrict an identity, not a token: two lists would leave
                # the identity's reach up to whichever token it happened to use.
                raise ValueError(
                    f"{source}: the tokens of {identity.id!r} give different 'rooms'"
                )
            identities[token] = identity
        restricted = {ident: p for ident, p in rooms.items() if p is not None}
        return cls(identities, restricted)

    @classmethod
    def from_json(cls, value: str, source: str = "JOBLIB_TOKENS") -> TokenTable:
        """Parse a whole table given as JSON text (`JOBLIB_TOKENS`)."""
        return cls.parse(json.loads(value), source)


def _room_patterns(raw: Any, source: str, identity: str) -> tuple[str, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(p, str) and p for p in raw):
        raise ValueError(
            f"{source}: 'rooms' of {identity!r} must be a list of room patterns"
        )
    return tuple(sorted(set(raw)))


class TokenStore:
    """The standalone server's tokens: a JSON file, or `JOBLIB_TOKENS` given whole."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Identity]:
        """Read the tokens file; an absent file holds no tokens."""
        return dict(self.table().identities)

    def table(self) -> TokenTable:
        """Read the tokens file with the identities' rooms; absent, it is empty."""
        return TokenTable.parse(self._raw(), str(self.path))

    def entries(self) -> dict[str, dict[str, Any]]:
        """The file's entries as stored, each token's; checked like `table()`."""
        raw = self._raw()
        TokenTable.parse(raw, str(self.path))
        return dict(raw)

    def _raw(self) -> Any:
        if not self.path.exists():
            return {}
        text = self.path.read_text()
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{self.path}: not JSON ({exc})") from None

    def stamp(self) -> tuple[int, int, int] | None:
        """What tells a changed file: its mtime, size and inode; None when absent.

        Every write replaces the file, so a new token changes the inode even
        within the clock's resolution.
        """
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return (stat.st_mtime_ns, stat.st_size, stat.st_ino)

    def revoke(self, which: str) -> dict[str, dict[str, Any]]:
        """Remove the tokens `which` names; return them with their entries.

        `which` is a whole token, an identity (all its tokens), or a token's first
        characters (at least `MIN_PREFIX`). `LookupError` when it names none,
        `ValueError` when a prefix fits several identities' tokens.
        """
        with self._locked():
            raw = self._raw()
            TokenTable.parse(raw, str(self.path))
            chosen = select_tokens(raw, which)
            for token in chosen:
                del raw[token]
            self._replace(raw)
        return chosen

    def create(self, identity: Identity, rooms: Sequence[str] | None = None) -> str:
        """Make a new token for `identity` (held to `rooms`, if given), store it.

        Refused with a `ValueError` when the identity's other tokens give other
        rooms: rooms belong to the identity, and the file must stay readable.
        """
        token = new_token()
        entry: dict[str, Any] = {"id": identity.id, "admin": identity.is_admin}
        if rooms is not None:
            entry["rooms"] = list(rooms)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Read, add, write back, as one: two `joblib-server token` at once
        # would otherwise each write the file without the other's token.
        with self._locked():
            raw = self._raw()
            raw[token] = entry
            TokenTable.parse(raw, str(self.path))
            self._replace(raw)
        return token

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold an exclusive lock on `<file>.lock` beside the tokens file."""
        lock = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # and with it the lock

    def _replace(self, raw: Any) -> None:
        """Write a new file beside the old one, then put it in its place at once.

        The new file has a name of its own (a leftover from a crash cannot be
        reused with its mode) and mode 0600 whatever the old file's was: tokens
        are secrets, readable by their owner only.
        """
        fd, tmp = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
        )
        try:
            with os.fdopen(fd, "w") as handle:
                os.fchmod(handle.fileno(), 0o600)
                json.dump(raw, handle, indent=2)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def new_token() -> str:
    """A new random token (256 bits), never starting with `-`.

    URL-safe base64 starts one token in 64 with `-`, which command lines take
    for an option: `joblib-server token revoke -x…` or `joblib --token -x…`.
    """
    while True:
        token = secrets.token_urlsafe(32)
        if not token.startswith("-"):
            return token


def select_tokens(raw: Mapping[str, Any], which: str) -> dict[str, dict[str, Any]]:
    """The entries of `raw` (a tokens file) that `which` names; see `revoke`."""
    if which in raw:
        return {which: raw[which]}
    by_identity = {t: e for t, e in raw.items() if e.get("id") == which}
    by_prefix = (
        {t: e for t, e in raw.items() if t.startswith(which)}
        if len(which) >= MIN_PREFIX
        else {}
    )
    if by_identity and not by_prefix.keys() <= by_identity.keys():
        raise ValueError(
            f"{which!r} is an identity and the start of another identity's token; "
            "give the whole token"
        )
    if by_identity:
        return by_identity
    owners = {entry.get("id") for entry in by_prefix.values()}
    if len(owners) > 1:
        shown = ", ".join(sorted(mask(token) for token in by_prefix))
        raise ValueError(
            f"{which!r} is the start of several tokens ({shown}); give more of it"
        )
    if not by_prefix:
        hint = f" (a prefix needs {MIN_PREFIX} characters)" if which else ""
        raise LookupError(f"no token or identity matches {which!r}{hint}")
    return by_prefix


def mask(token: str) -> str:
    """A token as `token list` shows it: its first characters only."""
    return token[:SHOWN_PREFIX] + "…"


class TokenFileAuth:
    """`TokenAuth` over a tokens file that follows the file as it changes.

    A changed file (a token added or revoked by `joblib-server token`) is read
    again: at once when a token comes that is not known, else at most every
    `check_seconds` (a `stat`, a few µs). So a new token works on its first
    request and a revoked one is refused within `check_seconds`, for requests
    and for new socket connections; sockets already open stay open. A file that
    cannot be read keeps the tokens read before (logged once); a removed file
    holds no tokens. `on_change` hears each new table (the CLI updates the room
    patterns with it).
    """

    def __init__(
        self,
        store: TokenStore,
        table: TokenTable | None = None,
        *,
        check_seconds: float = 1.0,
        on_change: Callable[[TokenTable], None] | None = None,
    ) -> None:
        self.store = store
        self.check_seconds = check_seconds
        self.on_change = on_change
        self._stamp = store.stamp()
        self.table = table if table is not None else store.table()
        self._auth = TokenAuth(self.table.identities)
        self._checked = time.monotonic()
        self._failed: tuple[int, int, int] | None = None

    async def authenticate(
        self, headers: Mapping[str, str], auth: Mapping[str, Any] | None = None
    ) -> Identity | None:
        """Look the bearer token up in the file as it is now (see the class)."""
        if bearer_token(headers, auth) is None:
            return None
        if time.monotonic() - self._checked >= self.check_seconds:
            self.refresh()
        identity = await self._auth.authenticate(headers, auth)
        if identity is None and self.refresh():
            identity = await self._auth.authenticate(headers, auth)
        return identity

    def refresh(self) -> bool:
        """Read the file again if it changed; True when the tokens changed."""
        self._checked = time.monotonic()
        stamp = self.store.stamp()
        if stamp == self._stamp or (stamp is not None and stamp == self._failed):
            return False
        try:
            table = self.store.table()
        except (OSError, ValueError) as exc:
            self._failed = stamp
            logger.warning(
                "tokens file %s cannot be read (%s); keeping the tokens read before",
                self.store.path,
                exc,
            )
            return False
        if stamp is None:
            logger.warning(
                "tokens file %s is gone: no token is accepted until it is back",
                self.store.path,
            )
        self._stamp, self._failed, self.table = stamp, None, table
        self._auth = TokenAuth(table.identities)
        logger.info(
            "tokens file %s read again: %d tokens",
            self.store.path,
            len(table.identities),
            extra={"tokens": len(table.identities)},
        )
        if self.on_change is not None:
            self.on_change(table)
        return True


def tokens_from_env(value: str) -> dict[str, Identity]:
    """The identities of `JOBLIB_TOKENS` (`TokenTable.from_json` adds the rooms)."""
    return dict(TokenTable.from_json(value).identities)
