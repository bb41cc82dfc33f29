"""What a server process remembers of the jobs it queues tasks for.

Where a submit is one statement (`Backend.queue_statement`, PostgreSQL), the job's
schema and time limits must be known before it runs: the payloads are checked
first, and nothing is stored when one fails. Reading the job each time would be
a second round trip, so the process remembers it. A remembered job may be out of
date (registered again with another schema, deleted): the statement names the
schema and limits it was checked against and stores nothing unless the job still
has them, and the caller then reads the job again.
"""

from __future__ import annotations

import uuid
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from joblib_protocol import JobFullName
from joblib_server.backends import Backend
from joblib_server.tables import JOB_TABLE

_job = JOB_TABLE

_READ_JOB = sa.select(
    _job.c.id,
    _job.c.schema,
    # The stored text itself: the statement compares it, not a re-encoding.
    sa.cast(_job.c.schema, sa.Text).label("schema_text"),
    _job.c.timeout_seconds,
    _job.c.pending_timeout_seconds,
).where(
    _job.c.room_id == sa.bindparam("b_room"),
    _job.c.category == sa.bindparam("b_category"),
    _job.c.name == sa.bindparam("b_name"),
    _job.c.deleted.is_(False),
)


@dataclass(frozen=True, slots=True)
class KnownJob:
    """A job as this process last read it."""

    id: uuid.UUID
    schema: dict[str, Any]
    schema_text: str
    timeout_seconds: float | None
    pending_timeout_seconds: float | None


class KnownJobs:
    """The jobs of one database this process submitted to lately, at most `size`."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._jobs: OrderedDict[JobFullName, KnownJob] = OrderedDict()

    def get(self, name: JobFullName) -> KnownJob | None:
        """The job as last read, or None."""
        job = self._jobs.get(name)
        if job is not None:
            self._jobs.move_to_end(name)
        return job

    def forget(self, name: JobFullName) -> None:
        """Drop what was remembered of `name`: it is out of date."""
        self._jobs.pop(name, None)

    async def read(
        self, connection: AsyncConnection, name: JobFullName
    ) -> KnownJob | None:
        """Read the job from the database and remember it; None if there is none."""
        params = {"b_room": name.room_id, "b_category": name.category}
        row = (
            await connection.execute(_READ_JOB, {**params, "b_name": name.name})
        ).first()
        if row is None:
            self.forget(name)
            return None
        job = KnownJob(
            row.id,
            row.schema,
            row.schema_text,
            row.timeout_seconds,
            row.pending_timeout_seconds,
        )
        self._jobs[name] = job
        self._jobs.move_to_end(name)
        while len(self._jobs) > self.size:
            self._jobs.popitem(last=False)
        return job


_by_backend: weakref.WeakKeyDictionary[Backend, KnownJobs] = weakref.WeakKeyDictionary()


def known_jobs(backend: Backend) -> KnownJobs:
    """The jobs this process remembers for `backend`'s database."""
    known = _by_backend.get(backend)
    if known is None:
        known = _by_backend[backend] = KnownJobs()
    return known
