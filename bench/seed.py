"""Seeding a large pending backlog straight into the database (section 5 only).

Submitting 100,000 tasks over HTTP would take this machine many minutes, so the
backlog section inserts them in bulk through joblib_server's own table definitions.
This is the only place the benchmark touches the database or joblib_server's
internals; every measured request still goes through the public wire API. The rows
are what `submit_task` would write (pending, consecutive `seq` numbers, the job's
`task_seq` advanced to match), so queue positions and FIFO claims stay correct.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import sqlalchemy as sa

from joblib_server.database import create_engine
from joblib_server.tables import Job, Task, utcnow

BATCH = 5_000

_job = Job.__table__  # type: ignore[attr-defined]
_task = Task.__table__  # type: ignore[attr-defined]


async def seed_pending(
    database_url: str, room_id: str, category: str, name: str, count: int
) -> float:
    """Insert `count` pending tasks for job room_id:category:name; seconds taken."""
    started = time.perf_counter()
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            job_id, last_seq = (
                await connection.execute(
                    sa.select(_job.c.id, _job.c.task_seq).where(
                        _job.c.room_id == room_id,
                        _job.c.category == category,
                        _job.c.name == name,
                    )
                )
            ).one()
            now = utcnow()
            for first in range(0, count, BATCH):
                rows = [
                    {
                        "id": uuid.uuid4(),
                        "job_id": job_id,
                        "room_id": room_id,
                        "submitted_by": "bench-seed",
                        "status": "pending",
                        "payload": {"seeded": index},
                        "seq": last_seq + index + 1,
                        "created_at": now + timedelta(microseconds=index),
                    }
                    for index in range(first, min(first + BATCH, count))
                ]
                await connection.execute(sa.insert(_task), rows)
            await connection.execute(
                sa.update(_job)
                .where(_job.c.id == job_id)
                .values(task_seq=last_seq + count)
            )
        if engine.dialect.name == "postgresql":
            # Autovacuum would have analyzed a backlog that grew over minutes; a
            # bulk insert outruns it, and stale statistics would skew the plans.
            async with engine.connect() as connection:
                await connection.execute(sa.text("ANALYZE joblib_task"))
                await connection.commit()
    finally:
        await engine.dispose()
    return time.perf_counter() - started
