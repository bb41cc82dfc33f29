"""The test identities: one token each for an admin, alice and bob."""

from __future__ import annotations

from joblib_server.auth import Identity

ADMIN = "admin-token"
ALICE = "alice-token"
BOB = "bob-token"
TOKENS = {
    ADMIN: Identity("admin", is_admin=True),
    ALICE: Identity("alice"),
    BOB: Identity("bob"),
}
# The same tokens as `JOBLIB_TOKENS` takes them, for servers in their own process.
TOKENS_JSON = (
    '{"admin-token": {"id": "admin", "admin": true}, '
    '"alice-token": {"id": "alice"}, "bob-token": {"id": "bob"}}'
)


def bearer(token: str | None) -> dict[str, str]:
    """The `Authorization` header for `token` (none for `None`)."""
    return {"Authorization": f"Bearer {token}"} if token else {}
