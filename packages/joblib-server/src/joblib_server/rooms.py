"""Rooms (ours): the rooms that have jobs or tasks, with what is in them.

There is no room table: a room exists while a live job is registered in it or a
task was submitted in it. `GET /rooms` lists the ones the caller may read, for
the dashboard and for hosts that show a room picker.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from joblib_protocol import RoomSummary, TaskStatus
from joblib_server.auth import Identity
from joblib_server.policy import AccessPolicy, Action, restricts
from joblib_server.tables import JOB_TABLE, TASK_TABLE

_IN_HAND = (TaskStatus.CLAIMED.value, TaskStatus.RUNNING.value)


def _count_if(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
    return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)


_JOBS = (
    sa.select(JOB_TABLE.c.room_id, sa.func.count())
    .where(JOB_TABLE.c.deleted.is_(False))
    .group_by(JOB_TABLE.c.room_id)
)
# Over 300,000 tasks (SQLite, one in five open) these two took 25 and 70 ms; one
# grouped pass over every task took 470 ms. The first reads only the room index;
# the second only the open tasks, through the (job_id, status) index.
_TASK_ROOMS = sa.select(TASK_TABLE.c.room_id).distinct()
_OPEN = (
    sa.select(
        TASK_TABLE.c.room_id,
        _count_if(TASK_TABLE.c.status == TaskStatus.PENDING.value),
        _count_if(TASK_TABLE.c.status.in_(_IN_HAND)),
    )
    .where(
        TASK_TABLE.c.job_id.in_(sa.select(JOB_TABLE.c.id)),
        TASK_TABLE.c.status.in_((TaskStatus.PENDING.value, *_IN_HAND)),
    )
    .group_by(TASK_TABLE.c.room_id)
)


async def list_rooms(session: AsyncSession) -> list[RoomSummary]:
    """Every room with a live job or a task, by room id, with its counts."""
    jobs = {room: int(n) for room, n in await session.execute(_JOBS)}
    rooms = set((await session.execute(_TASK_ROOMS)).scalars()) | jobs.keys()
    open_ = {
        room: (int(pending), int(running))
        for room, pending, running in await session.execute(_OPEN)
    }
    return [
        RoomSummary(
            room_id=room,
            jobs=jobs.get(room, 0),
            pending=open_.get(room, (0, 0))[0],
            running=open_.get(room, (0, 0))[1],
        )
        for room in sorted(rooms)
    ]


async def readable(
    policy: AccessPolicy, identity: Identity, rooms: Sequence[RoomSummary]
) -> list[RoomSummary]:
    """The rooms among `rooms` the policy lets `identity` read (asked outside any
    transaction, once per room, unless the policy restricts nothing for it)."""
    if not restricts(policy, identity):
        return list(rooms)
    return [r for r in rooms if await policy.allows(identity, r.room_id, Action.READ)]
