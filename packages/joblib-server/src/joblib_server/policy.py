"""Who may do what in which room: the one access policy every entry point asks.

A host hands one policy to `JobLib(policy=...)`. Every REST route that concerns a
room and every Socket.IO event that enters one asks it, with the caller's
identity, the room and the action, before anything changes; a refusal changes
nothing. joblib never asks it inside a database transaction, so a policy may do
its own I/O (look up room members, read a lock from Redis).

Some rules hold whatever the policy says, because they are about ownership, not
rooms: a worker acts only for the identity that created it, a room job links only
the workers of the identity that registered it (admins excepted), `@global` and
`@internal` jobs are registered by admins only, and a task is updated only by its
worker's owner, an admin, or (to cancel it) its submitter.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Protocol, runtime_checkable

from joblib_protocol import Forbidden, RoomLocked
from joblib_server.auth import Identity
from joblib_server.errors import ProblemError


class Action(StrEnum):
    """What an identity wants to do in a room."""

    READ = "read"
    """See the room: its jobs, workers and tasks (payloads included), one task of it."""
    SUBMIT = "submit"
    """Submit a task in the room (to one of its jobs, or an `@global` one)."""
    REGISTER = "register"
    """Register a job in the room, which links a worker to it."""
    SERVE = "serve"
    """Run the room's jobs: join their Socket.IO rooms, claim their tasks."""
    OBSERVE = "observe"
    """Receive the room's Socket.IO events (`join_room`)."""


WRITES = frozenset({Action.SUBMIT, Action.REGISTER})
"""The actions that a locked room refuses (zndraw-joblib's writable-room check)."""


@runtime_checkable
class AccessPolicy(Protocol):
    """Decides, per identity, room and action, what joblib lets a caller do.

    A policy may also define `restricts(identity) -> bool` (plain, not async):
    False promises that it allows `identity` everything and locks nothing for it,
    and lets joblib skip the reads it makes only to ask the policy (the rooms of a
    claiming worker's jobs, the room of a reported task). Without it, joblib asks.
    """

    async def allows(self, identity: Identity, room_id: str, action: Action) -> bool:
        """Whether `identity` may do `action` in `room_id`; False answers 403."""
        ...

    async def locked(self, identity: Identity, room_id: str) -> bool:
        """Whether `room_id` refuses writes from `identity` now; True answers 423.

        Asked only for the actions in `WRITES`, and only once `allows` said yes.
        """
        ...


class OpenRooms:
    """The default: every identity may do everything in every room; none is locked.

    The ownership rules still hold (see the module's docstring), so a room job
    stays its registrant's even in an open room.
    """

    def restricts(self, identity: Identity) -> bool:
        """Never: joblib need not ask."""
        return False

    async def allows(self, identity: Identity, room_id: str, action: Action) -> bool:
        """Always."""
        return True

    async def locked(self, identity: Identity, room_id: str) -> bool:
        """Never."""
        return False


class RoomPatterns:
    """Identities held to the rooms matching their patterns; everyone else is free.

    `rooms` maps an identity id to glob patterns (`fnmatch`, case-sensitive:
    `"lab-*"`, `"alice-r"`). Such an identity may do anything in a matching room
    and nothing elsewhere; identities not in `rooms`, and admins, may act in every
    room. The reserved rooms are matched like any other: `@global` jobs stay
    reachable from every room the identity may use, but the `@global` room itself
    only with a pattern that matches it. No room is locked.
    """

    def __init__(self, rooms: Mapping[str, Iterable[str]]) -> None:
        self.rooms = {identity: tuple(patterns) for identity, patterns in rooms.items()}

    def restricts(self, identity: Identity) -> bool:
        """Whether `identity` is held to patterns (a non-admin with an entry)."""
        return not identity.is_admin and identity.id in self.rooms

    def permits(self, identity: Identity, room_id: str) -> bool:
        """Whether `identity` may act in `room_id` (the same for every action)."""
        if identity.is_admin:
            return True
        patterns = self.rooms.get(identity.id)
        if patterns is None:
            return True
        return any(fnmatch.fnmatchcase(room_id, pattern) for pattern in patterns)

    async def allows(self, identity: Identity, room_id: str, action: Action) -> bool:
        """Whether the room matches one of the identity's patterns (if it has any)."""
        return self.permits(identity, room_id)

    async def locked(self, identity: Identity, room_id: str) -> bool:
        """Never."""
        return False


def restricts(policy: AccessPolicy, identity: Identity) -> bool:
    """Whether `policy` may refuse `identity` anything; True unless it says not."""
    says = getattr(policy, "restricts", None)
    return True if says is None else bool(says(identity))


async def authorize(
    policy: AccessPolicy, identity: Identity, room_id: str, action: Action
) -> None:
    """Ask `policy`; raise 403 `forbidden` or, for a write, 423 `room-locked`."""
    if not await policy.allows(identity, room_id, action):
        raise ProblemError(
            Forbidden, f"{identity.id!r} may not {action.value} in room {room_id!r}"
        )
    if action in WRITES and await policy.locked(identity, room_id):
        raise ProblemError(RoomLocked, f"room {room_id!r} is locked")
