"""A submit's statements: one on PostgreSQL, in autocommit, against the job as
this process remembers it (`known_jobs`); the job changing meanwhile is noticed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import anyio
import httpx
import pytest
import sqlalchemy as sa

from joblib_server import JobLib
from joblib_server.tables import JOB_TABLE, TASK_TABLE
from tests.support.rest import ROOM, assert_problem, serving_job, submit
from tests.support.waiting import aeventually

pytestmark = pytest.mark.anyio


@contextmanager
def _statements(joblib: JobLib) -> Iterator[list[tuple[str, bool]]]:
    """Each statement run meanwhile: (its SQL, whether it ran in autocommit)."""
    seen: list[tuple[str, bool]] = []
    engine = joblib.database.engine.sync_engine

    def record(conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        level = conn.get_execution_options().get("isolation_level")
        seen.append((sql.strip(), level == "AUTOCOMMIT"))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def _writes(seen: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """The statements that change rows (the wake bus's NOTIFY aside)."""
    return [
        (sql, auto)
        for sql, auto in seen
        if sql.split(None, 1)[0].upper() in ("WITH", "INSERT", "UPDATE", "DELETE")
    ]


async def _change_job(joblib: JobLib, job_name: str, **values: Any) -> None:
    """Change the job's row behind this process's back (another server did)."""
    room, category, name = job_name.split(":")
    job = JOB_TABLE
    async with joblib.database.write() as session:
        await session.execute(
            sa.update(job)
            .where(job.c.room_id == room, job.c.category == category)
            .where(job.c.name == name)
            .values(**values)
        )


async def test_a_submit_is_one_statement_on_postgresql(
    alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    _, job_name = await serving_job(alice)
    await submit(alice, job_name)  # the job is read once, then remembered
    for path, body in (
        (f"/rooms/{ROOM}/tasks/{job_name}", {"payload": {"angle": 1}}),
        (f"/rooms/{ROOM}/tasks/{job_name}/batch", {"payloads": [{}, {}, {}]}),
    ):
        with _statements(joblib) as seen:
            answer = await alice.post(path, json=body)
            assert answer.status_code == 202, answer.text
        writes = _writes(seen)
        if joblib.database.backend.name == "postgresql":
            assert len(writes) == 1, seen
            assert writes[0][0].startswith("WITH job AS")
            assert writes[0][1], "ran inside BEGIN/COMMIT"
            # Nothing else but the wake bus's NOTIFY (and no read of the job).
            assert [sql for sql, _ in seen if "pg_notify" not in sql] == [writes[0][0]]
        else:
            # SQLite: reserve, insert, head, in its BEGIN IMMEDIATE.
            assert [sql.split(None, 1)[0] for sql, _ in seen] == [
                "BEGIN",
                "UPDATE",
                "INSERT",
                "SELECT",
            ]


async def test_a_schema_changed_elsewhere_is_the_one_checked(
    alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    _, job_name = await serving_job(alice)
    await submit(alice, job_name, payload={"angle": 1})
    strict = {
        "type": "object",
        "properties": {"angle": {"type": "string"}},
        "required": ["angle"],
    }
    await _change_job(joblib, job_name, schema=strict)
    path = f"/rooms/{ROOM}/tasks/{job_name}"
    assert_problem(
        await alice.post(path, json={"payload": {"angle": 1}}), 422, "invalid-payload"
    )
    assert (await alice.post(path, json={"payload": {"angle": "x"}})).status_code == 202
    # And back: a payload the remembered (strict) schema refuses but the job's
    # current one takes is stored.
    await _change_job(joblib, job_name, schema={})
    answer = await alice.post(f"{path}/batch", json={"payloads": [{"angle": 2}]})
    assert answer.status_code == 202, answer.text
    assert answer.json()["items"][0]["queue_position"] == 3


async def test_limits_changed_elsewhere_apply(
    alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    _, job_name = await serving_job(alice)
    first = await submit(alice, job_name)
    assert first["expires_at"] is None
    await _change_job(joblib, job_name, timeout_seconds=7.0, pending_timeout_seconds=90)
    task = await submit(alice, job_name)
    assert task["timeout_seconds"] == 7.0
    created = datetime.fromisoformat(task["created_at"])
    expires = datetime.fromisoformat(task["expires_at"])
    assert (expires - created).total_seconds() == 90
    assert task["queue_position"] == 2


async def test_a_job_deleted_elsewhere_is_404(
    alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    _, job_name = await serving_job(alice)
    await submit(alice, job_name)
    await _change_job(joblib, job_name, deleted=True)
    answer = await alice.post(f"/rooms/{ROOM}/tasks/{job_name}", json={"payload": {}})
    assert_problem(answer, 404, "job-not-found")
    answer = await alice.post(
        f"/rooms/{ROOM}/tasks/{job_name}/batch", json={"payloads": [{}]}
    )
    assert_problem(answer, 404, "job-not-found")


async def test_a_submit_that_waited_for_the_job_counts_the_tasks_before_it(
    alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    """The statement's snapshot predates the lock wait; the head is read again."""
    if joblib.database.backend.name != "postgresql":
        pytest.skip("SQLite writers take turns before their first statement")
    _, job_name = await serving_job(alice)
    await submit(alice, job_name)  # remembered; the queue is then emptied
    room, category, name = job_name.split(":")
    job, task = JOB_TABLE, TASK_TABLE
    async with joblib.database.write() as session:
        await session.execute(sa.delete(task))
    answers: list[httpx.Response] = []

    async def submit_now() -> None:
        answers.append(
            await alice.post(
                f"/rooms/{ROOM}/tasks/{job_name}", json={"payload": {"angle": 2}}
            )
        )

    async def waiting_for_a_lock() -> bool:
        async with joblib.database.read() as session:
            waiting = await session.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND query LIKE '%WITH job AS%'"
                )
            )
            return bool(waiting.scalar_one())

    # Another submit, in steps: it holds the job's row while our submit waits.
    async with joblib.database.write() as other:
        reserved = (
            await other.execute(
                sa.update(job)
                .where(job.c.room_id == room, job.c.category == category)
                .where(job.c.name == name)
                .values(task_seq=job.c.task_seq + 1)
                .returning(job.c.id, job.c.task_seq)
            )
        ).one()
        async with anyio.create_task_group() as group:
            group.start_soon(submit_now)
            await aeventually(waiting_for_a_lock, what="the submit to wait")
            await other.execute(
                sa.insert(task).values(
                    id=uuid.uuid4(),
                    job_id=reserved.id,
                    room_id=ROOM,
                    submitted_by="other",
                    status="pending",
                    payload={"angle": 1},
                    seq=reserved.task_seq,
                    created_at=datetime.now(UTC),
                )
            )
            await other.commit()
    (answer,) = answers
    assert answer.status_code == 202, answer.text
    # Its statement's snapshot saw an empty queue: without the second look it
    # would have said 1.
    assert answer.json()["queue_position"] == 2
