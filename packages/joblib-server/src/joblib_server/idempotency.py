"""Idempotency keys of submits: a submit sent again gets the task its first try made.

A client whose submit met a timeout or a 503 cannot tell whether the task was
made; without a key, sending it again could make a second one. With
`Idempotency-Key: <key>` the same identity's same key, within
`Settings.idempotency_key_ttl_seconds` (a day), answers the task the first
submit made, as it is now, however often and however concurrently it is sent.

The key is recorded in the submit's own transaction, before the task: on
PostgreSQL a concurrent submit with the same key waits at the key's unique
index until the first commits, then finds its task; on SQLite writes take turns.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from joblib_protocol import TaskResponse
from joblib_server.auth import Identity
from joblib_server.backends import backend_of
from joblib_server.outcome import Outcome
from joblib_server.queueing import NO_LIMITS, TaskLimits
from joblib_server.settings import settings_of
from joblib_server.tables import IDEMPOTENCY_TABLE, TASK_TABLE, utcnow
from joblib_server.tasks import get_task, submit_task

MAX_KEY_LENGTH = 255

_keys = IDEMPOTENCY_TABLE

_REUSE_EXPIRED = (
    # A key older than the time to live is free again: the new submit takes it.
    sa.update(_keys)
    .where(
        _keys.c.owner_id == sa.bindparam("b_owner"),
        _keys.c.key == sa.bindparam("b_key"),
        _keys.c.created_at < sa.bindparam("b_cutoff"),
    )
    .values(task_id=sa.bindparam("b_task"), created_at=sa.bindparam("b_now"))
)

_TASK_OF_KEY = (
    sa.select(_keys.c.task_id, TASK_TABLE.c.id.label("kept"))
    .outerjoin(TASK_TABLE, TASK_TABLE.c.id == _keys.c.task_id)
    .where(
        _keys.c.owner_id == sa.bindparam("b_owner"),
        _keys.c.key == sa.bindparam("b_key"),
    )
)

_TAKE_OVER = (
    # The key's task is gone (deleted after `task_retention_seconds`): the new
    # submit takes the key. A concurrent submit that took it first changed
    # `task_id`, so this one finds nothing to update and answers that task.
    sa.update(_keys)
    .where(
        _keys.c.owner_id == sa.bindparam("b_owner"),
        _keys.c.key == sa.bindparam("b_key"),
        _keys.c.task_id == sa.bindparam("b_gone"),
    )
    .values(task_id=sa.bindparam("b_task"), created_at=sa.bindparam("b_now"))
)


def check_key(key: str) -> str:
    """`key` if it can be one (1-255 visible characters, quotes around it dropped)."""
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]  # the structured-field string the IETF draft spells
    if not key or len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"must hold 1 to {MAX_KEY_LENGTH} characters")
    if any(not 0x20 <= ord(ch) < 0x7F for ch in key):
        raise ValueError("must hold visible ASCII characters only")
    return key


async def earlier_task(
    session: AsyncSession,
    owner_id: str,
    key: str,
    task_id: uuid.UUID,
    now: datetime,
    ttl_seconds: float,
) -> uuid.UUID | None:
    """Record that `key` makes `task_id`; or return the task it made before.

    A key whose task was deleted since (see `retention`) is taken over: the
    submit makes a new task, as if the key had expired.
    """
    connection = await session.connection()
    values: dict[str, Any] = {
        "owner_id": owner_id,
        "key": key,
        "task_id": task_id,
        "created_at": now,
    }
    insert = backend_of(session).insert_ignoring_conflicts(
        _keys, values, "owner_id", "key"
    )
    if (await connection.execute(insert)).rowcount == 1:
        return None
    params = {"b_owner": owner_id, "b_key": key, "b_task": task_id, "b_now": now}
    cutoff = now - timedelta(seconds=ttl_seconds)
    reused = await connection.execute(_REUSE_EXPIRED, {**params, "b_cutoff": cutoff})
    if reused.rowcount == 1:
        return None
    earlier = (await connection.execute(_TASK_OF_KEY, params)).first()
    if earlier is not None and earlier.kept is None:
        gone = {**params, "b_gone": earlier.task_id}
        if (await connection.execute(_TAKE_OVER, gone)).rowcount == 1:
            return None
        earlier = (await connection.execute(_TASK_OF_KEY, params)).first()
    found: uuid.UUID | None = None if earlier is None else earlier.task_id
    return found


async def submit_once(
    session: AsyncSession,
    identity: Identity,
    room_id: str,
    full_name: str,
    payload: dict[str, Any],
    key: str,
    *,
    internal_jobs: bool = False,
    limits: TaskLimits = NO_LIMITS,
) -> Outcome[tuple[TaskResponse, bool]]:
    """`submit_task` under an idempotency key: (the task, whether it existed before)."""
    task_id = uuid.uuid4()
    ttl = settings_of(session).idempotency_key_ttl_seconds
    earlier = await earlier_task(session, identity.id, key, task_id, utcnow(), ttl)
    if earlier is not None:
        return Outcome((await get_task(session, earlier), True))
    made = await submit_task(
        session,
        identity,
        room_id,
        full_name,
        payload,
        internal_jobs=internal_jobs,
        task_id=task_id,
        limits=limits,
    )
    return Outcome(
        (made.value, False), made.emissions, made.removed_workers, made.dispatches
    )


async def forget_expired_keys(
    session: AsyncSession, ttl_seconds: float, batch: int = 500
) -> Outcome[int]:
    """Delete up to `batch` keys older than the time to live; how many went."""
    cutoff = utcnow() - timedelta(seconds=ttl_seconds)
    connection = await session.connection()
    expired = (
        await connection.execute(
            sa.select(_keys.c.owner_id, _keys.c.key)
            .where(_keys.c.created_at < cutoff)
            .limit(batch)
        )
    ).all()
    if not expired:
        return Outcome(0)
    await connection.execute(
        sa.delete(_keys).where(
            sa.tuple_(_keys.c.owner_id, _keys.c.key).in_(
                [tuple(row) for row in expired]
            ),
            _keys.c.created_at < cutoff,
        )
    )
    return Outcome(len(expired))
