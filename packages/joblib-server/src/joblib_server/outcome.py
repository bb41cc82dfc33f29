"""`Outcome`: what every change returns, so the after-commit work cannot be forgotten.

An operation is an async function `(session, *args) -> Outcome[T]` that changes
rows in the transaction it is given and never commits. `JobLib.execute` runs it,
commits, and only then acts on the outcome: releases the held claims of removed
workers and publishes the emissions (long-polls, held claims, Socket.IO).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from joblib_protocol import Emission

T = TypeVar("T")
P = ParamSpec("P")


@dataclass(frozen=True, slots=True)
class Dispatch:
    """A task of an `@internal` job, claimed for the executor that runs it."""

    task_id: uuid.UUID
    job_name: str
    room_id: str
    payload: dict[str, Any]
    attempt: int
    claim_id: str
    """The executor's claim: a report carrying another one is refused (409), like
    a stale worker's; it starts with the executor's name."""


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T]):
    """An operation's value and the after-commit work its change calls for."""

    value: T
    emissions: AbstractSet[Emission] = field(default_factory=frozenset)
    """Events to publish once the change is committed."""
    removed_workers: AbstractSet[uuid.UUID] = field(default_factory=frozenset)
    """Workers the change deleted: their held claims are answered at once."""
    dispatches: Sequence[Dispatch] = ()
    """`@internal` tasks the change claimed: handed to the executor once committed."""


Operation = Callable[Concatenate[AsyncSession, P], Awaitable[Outcome[T]]]
"""A change: runs in the given write transaction and returns its `Outcome`."""


OperationT = TypeVar("OperationT", bound=Callable[..., Any])

_ONE_STATEMENT: set[Callable[..., Any]] = set()


def one_statement(operation: OperationT) -> OperationT:
    """Mark an operation whose change is a single statement (reads aside).

    `JobLib.execute` runs it in `Database.write_one()`: on PostgreSQL in
    autocommit, without BEGIN and COMMIT around the statement.
    """
    _ONE_STATEMENT.add(operation)
    return operation


def is_one_statement(operation: Callable[..., Any]) -> bool:
    """Whether `operation` was marked with `one_statement`."""
    return operation in _ONE_STATEMENT
