"""Pages of lists: how far a client may page, and counts that stop there.

A list request used to cost the server in proportion to the list: `OFFSET n`
walks n rows, and `count(*)` walks them all. Over 300,000 tasks in one room,
`?limit=500&offset=2147483647` took 315 ms of the event loop (SQLite). Now an
offset beyond `Settings.max_list_offset` is refused, and the count stops at
the last item a client can page to (`count_limit`), so no list reads more than
`max_list_offset` + 500 rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from joblib_protocol import MAX_PAGE_LIMIT


def count_limit(max_offset: int) -> int:
    """The largest `total` a list answers: the items reachable by paging."""
    return max_offset + MAX_PAGE_LIMIT


async def bounded_count(
    session: AsyncSession, entity: Any, where: Sequence[Any], limit: int | None
) -> int:
    """The number of `entity` rows matching `where`, counted up to `limit` at most."""
    if limit is None:
        statement = sa.select(sa.func.count()).select_from(entity).where(*where)
    else:
        rows = sa.select(sa.literal(1)).select_from(entity).where(*where).limit(limit)
        statement = sa.select(sa.func.count()).select_from(rows.subquery())
    return int((await session.execute(statement)).scalar_one())
