"""Worker cleanup, soft delete, and the sweeper of dead workers and stuck tasks."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import anyio
import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from joblib_protocol import Emission, JobsInvalidate, TaskStatusEvent
from joblib_server import (
    CleanupReceipt,
    Database,
    Job,
    JobLib,
    RecordingEmitter,
    Settings,
    TokenAuth,
    Worker,
    WorkerJobLink,
    cleanup_stale_workers,
    cleanup_stuck_internal_tasks,
    cleanup_worker,
    cleanup_worker_by_id,
    run_sweeper,
    sweep_once,
)
from joblib_server.tables import Task, utcnow
from tests.support import aeventually
from tests.support.rest import (
    claim,
    create_worker,
    get_task,
    parse_time,
    register,
    serving_job,
    submit,
)
from tests.support.rows import job_row, row_counts, task_row
from tests.support.servers import make_settings
from tests.support.services import pg_exec as _pg_exec

pytestmark = pytest.mark.anyio

LONG_AGO = timedelta(hours=1)


async def _age_worker(joblib: JobLib, worker_id: str) -> None:
    """Make a worker look as if it stopped heartbeating an hour ago."""
    async with joblib.database.write() as session:
        worker = await session.get_one(Worker, uuid.UUID(worker_id))
        worker.last_heartbeat = utcnow() - LONG_AGO


async def _age_task(joblib: JobLib, task_id: str) -> None:
    """Make a running task look as if it started an hour ago."""
    async with joblib.database.write() as session:
        task = await session.get_one(Task, uuid.UUID(task_id))
        task.started_at = utcnow() - LONG_AGO


async def _cleanup(joblib: JobLib, worker_id: str) -> set[Emission]:
    async with joblib.database.write() as session:
        worker = await session.get_one(Worker, uuid.UUID(worker_id))
        return await cleanup_worker(session, worker)


def _status_events(emissions: set[Emission]) -> dict[str, TaskStatusEvent]:
    return {
        e.event.id: e.event for e in emissions if isinstance(e.event, TaskStatusEvent)
    }


def _invalidated_rooms(emissions: set[Emission]) -> set[str]:
    return {e.room for e in emissions if isinstance(e.event, JobsInvalidate)}


async def test_cleanup_worker_fails_in_flight_tasks_and_tidies_jobs(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, joblib: JobLib
) -> None:
    worker_id = await create_worker(alice)
    rotate = (await register(alice, "room1", "Rotate", worker_id=worker_id))[
        "full_name"
    ]
    scale = (await register(alice, "room2", "Scale", worker_id=worker_id))["full_name"]
    claimed = await submit(bob, rotate)
    running = await submit(bob, scale, "room2")
    finished = await submit(bob, scale, "room2")
    await claim(alice, worker_id)
    await claim(alice, worker_id, start=True)
    await claim(alice, worker_id, start=True)
    await alice.patch(f"/tasks/{finished['id']}", json={"status": "completed"})
    pending = await submit(bob, rotate)

    emissions = await _cleanup(joblib, worker_id)

    for task in (claimed, running):
        row = await task_row(joblib, task["id"])
        assert (row.status, row.error) == ("failed", "Worker disconnected")
        assert row.completed_at is not None
        assert str(row.worker_id) == worker_id  # kept after the worker row is gone
    assert (await task_row(joblib, finished["id"])).status == "completed"
    untouched = await get_task(bob, pending["id"])
    assert (untouched["status"], untouched["worker_id"]) == ("pending", None)
    assert untouched["queue_position"] == 1

    counts = await row_counts(joblib)
    assert (counts["joblib_worker"], counts["joblib_worker_job"]) == (0, 0)
    # Rotate still has a pending task, so it waits for a new worker; Scale is done.
    assert not (await job_row(joblib, "Rotate", "room1")).deleted
    assert (await job_row(joblib, "Scale", "room2")).deleted

    events = _status_events(emissions)
    assert set(events) == {claimed["id"], running["id"]}
    for event in events.values():
        assert event.status == "failed"
        assert event.error == "Worker disconnected"
        assert event.worker_id == worker_id
    rooms = {e.room for e in emissions if isinstance(e.event, TaskStatusEvent)}
    assert rooms == {"room:room1", "room:room2"}
    assert _invalidated_rooms(emissions) == {"room:room1", "room:room2"}
    assert len(emissions) == 4


async def test_cleanup_worker_does_not_commit(
    alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    worker_id, _ = await serving_job(alice)
    # A host's own session on the same engine, in a transaction of its own.
    async with AsyncSession(joblib.database.engine) as session, session.begin():
        worker = await session.get_one(Worker, uuid.UUID(worker_id))
        assert await cleanup_worker(session, worker)
        await session.rollback()
    assert (await alice.patch(f"/workers/{worker_id}")).status_code == 200


async def test_cleanup_is_idempotent(
    alice: httpx.AsyncClient, joblib: JobLib, emitter: RecordingEmitter
) -> None:
    worker_id, job_name = await serving_job(alice)
    task = await submit(alice, job_name)
    await claim(alice, worker_id)
    emitter.clear()
    first = await joblib.execute(cleanup_worker_by_id, uuid.UUID(worker_id))
    assert first == CleanupReceipt(
        uuid.UUID(worker_id), failed=(uuid.UUID(task["id"]),), jobs_removed=(job_name,)
    )
    assert _status_events(set(emitter.sent)).keys() == {task["id"]}
    emitter.clear()
    again = await joblib.execute(cleanup_worker_by_id, uuid.UUID(worker_id))
    assert again == CleanupReceipt(uuid.UUID(worker_id))
    unknown = uuid.uuid4()
    assert await joblib.execute(cleanup_worker_by_id, unknown) == CleanupReceipt(
        unknown
    )
    assert emitter.sent == []


async def test_worker_with_another_worker_keeps_the_job(
    alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    first, job_name = await serving_job(alice)
    # A second worker of the job's owner (another identity may not link to it).
    second = (await register(alice, expect=200))["worker_id"]
    emissions = await _cleanup(joblib, first)
    assert emissions == {Emission(JobsInvalidate(), "room:room1")}
    job = (await alice.get(f"/rooms/room1/jobs/{job_name}")).json()
    assert job["workers"] == [second]


async def test_foreign_keys_are_enforced(
    alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    await serving_job(alice)
    job = await job_row(joblib, "Rotate")
    with pytest.raises(IntegrityError):
        async with joblib.database.write() as session:
            session.add(WorkerJobLink(worker_id=uuid.uuid4(), job_id=job.id))
    with pytest.raises(IntegrityError):
        async with joblib.database.write() as session:
            await session.execute(
                sa.insert(Task).values(
                    id=uuid.uuid4(),
                    job_id=uuid.uuid4(),
                    room_id="room1",
                    submitted_by="alice",
                    status="pending",
                    payload={},
                    seq=1,
                    created_at=utcnow(),
                )
            )
    assert (await row_counts(joblib))["joblib_worker_job"] == 1


async def test_stale_workers_are_cleaned_and_fresh_ones_kept(
    alice: httpx.AsyncClient,
    bob: httpx.AsyncClient,
    joblib: JobLib,
    emitter: RecordingEmitter,
) -> None:
    stale, job_name = await serving_job(alice)
    fresh, _ = await serving_job(bob, "room2")
    task = await submit(bob, job_name)
    await claim(alice, stale)
    await _age_worker(joblib, stale)

    emitter.clear()
    [receipt] = await joblib.execute(cleanup_stale_workers, timeout_seconds=60)
    assert receipt.worker_id == uuid.UUID(stale)
    assert _status_events(set(emitter.sent)).keys() == {task["id"]}
    assert (await alice.patch(f"/workers/{stale}")).status_code == 404
    assert (await bob.patch(f"/workers/{fresh}")).status_code == 200
    assert (await get_task(bob, task["id"]))["error"] == "Worker disconnected"


async def test_the_timeout_decides_who_is_stale(
    alice: httpx.AsyncClient, joblib: JobLib
) -> None:
    await serving_job(alice)
    assert await joblib.execute(cleanup_stale_workers, timeout_seconds=60) == []
    later = utcnow() + timedelta(seconds=61)
    assert await joblib.execute(cleanup_stale_workers, 60, now=later)
    assert (await row_counts(joblib))["joblib_worker"] == 0


async def _internal_running_tasks(
    admin: httpx.AsyncClient, joblib: JobLib, count: int
) -> list[str]:
    joblib.internal_jobs = True
    worker_id, job_name = await serving_job(admin, "@internal", "Export")
    tasks = [(await submit(admin, job_name))["id"] for _ in range(count)]
    for _ in tasks:
        await claim(admin, worker_id, start=True)
    return tasks


async def test_stuck_internal_tasks_are_failed(
    admin: httpx.AsyncClient,
    alice: httpx.AsyncClient,
    joblib: JobLib,
    emitter: RecordingEmitter,
) -> None:
    stuck, recent = await _internal_running_tasks(admin, joblib, 2)
    await _age_task(joblib, stuck)
    # Ordinary jobs may run as long as they like.
    worker_id, job_name = await serving_job(alice)
    ordinary = await submit(alice, job_name)
    await claim(alice, worker_id, start=True)
    await _age_task(joblib, ordinary["id"])

    emitter.clear()
    ids = await joblib.execute(cleanup_stuck_internal_tasks, timeout_seconds=60)
    assert ids == [uuid.UUID(stuck)]
    emissions = set(emitter.sent)
    failed = await get_task(admin, stuck)
    assert (failed["status"], failed["error"]) == ("failed", "Internal task timed out")
    assert parse_time(failed["completed_at"])
    assert set(_status_events(emissions)) == {stuck}
    assert (await get_task(admin, recent))["status"] == "running"
    assert (await get_task(alice, ordinary["id"]))["status"] == "running"


async def test_sweep_once_does_both(
    admin: httpx.AsyncClient,
    alice: httpx.AsyncClient,
    joblib: JobLib,
    emitter: RecordingEmitter,
) -> None:
    [stuck] = await _internal_running_tasks(admin, joblib, 1)
    await _age_task(joblib, stuck)
    stale, _ = await serving_job(alice)
    await _age_worker(joblib, stale)
    joblib.settings = make_settings(
        worker_timeout_seconds=60, internal_task_timeout_seconds=60
    )
    emitter.clear()
    sweep = await sweep_once(joblib)
    assert [r.worker_id for r in sweep.workers] == [uuid.UUID(stale)]
    assert sweep.internal_tasks == [uuid.UUID(stuck)]
    emissions = set(emitter.sent)
    assert set(_status_events(emissions)) == {stuck}
    assert "room:room1" in _invalidated_rooms(emissions)
    assert (await alice.patch(f"/workers/{stale}")).status_code == 404


class FlakyEmitter(RecordingEmitter):
    """Records what it sends, and fails its first `failures` batches."""

    def __init__(self, failures: int = 0) -> None:
        super().__init__()
        self.failures = failures
        self.batches = 0

    async def emit(self, emissions: Iterable[Emission]) -> None:
        self.batches += 1
        if self.batches <= self.failures:
            raise RuntimeError("the emitter is down")
        await super().emit(emissions)


def _sweeper_settings() -> Settings:
    return make_settings(sweeper_interval_seconds=0.05, worker_timeout_seconds=60)


async def test_sweeper_survives_a_failing_emitter(
    alice: httpx.AsyncClient,
    joblib: JobLib,
    caplog: pytest.LogCaptureFixture,
) -> None:
    joblib.settings = _sweeper_settings()
    first, _ = await serving_job(alice, "room1")
    second, _ = await serving_job(alice, "room2")
    await _age_worker(joblib, first)
    joblib.emitter = emitter = FlakyEmitter(failures=1)
    async with anyio.create_task_group() as group:
        group.start_soon(run_sweeper, joblib)
        await aeventually(lambda: emitter.batches >= 1, what="the first sweep")
        await _age_worker(joblib, second)
        await aeventually(lambda: emitter.sent, what="the second sweep's events")
        group.cancel_scope.cancel()
    assert _invalidated_rooms(set(emitter.sent)) == {"room:room2"}
    assert "emitting 1 events failed" in caplog.text
    assert (await row_counts(joblib))["joblib_worker"] == 0


@asynccontextmanager
async def _tableless_database(
    database_url: str, tmp_path: Path
) -> AsyncIterator[Database]:
    """A database where joblib's tables do not exist (yet)."""
    if database_url.startswith("sqlite"):
        database = Database.from_url(f"sqlite:///{tmp_path / 'empty.db'}")
        try:
            yield database
        finally:
            await database.dispose()
        return
    schema = f"empty_{uuid.uuid4().hex[:8]}"
    await _pg_exec(database_url, f'CREATE SCHEMA "{schema}"')
    database = Database.from_url(
        database_url, connect_args={"server_settings": {"search_path": schema}}
    )
    try:
        yield database
    finally:
        await database.dispose()
        await _pg_exec(database_url, f'DROP SCHEMA "{schema}" CASCADE')


async def test_sweeper_survives_a_failing_sweep(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    emitter = RecordingEmitter()
    async with _tableless_database(database_url, tmp_path) as database:
        joblib = JobLib(
            database=database,
            auth=TokenAuth({}),
            settings=_sweeper_settings(),
            emitter=emitter,
        )
        async with anyio.create_task_group() as group:
            group.start_soon(run_sweeper, joblib)
            # The first sweep runs at once, and fails: there are no tables.
            await aeventually(lambda: "sweep failed" in caplog.text)
            await database.create_tables()
            async with database.write() as session:
                worker = Worker(owner_id="alice", last_heartbeat=utcnow() - LONG_AGO)
                job = Job(room_id="room1", category="modifiers", name="Rotate")
                session.add_all([worker, job])
                await session.flush()
                session.add(WorkerJobLink(worker_id=worker.id, job_id=job.id))
            await aeventually(lambda: emitter.sent, what="the sweep after the fix")
            group.cancel_scope.cancel()
        async with database.read() as session:
            left = await session.execute(sa.select(sa.func.count()).select_from(Worker))
            assert left.scalar_one() == 0
    assert emitter.sent == [Emission(JobsInvalidate(), "room:room1")]
