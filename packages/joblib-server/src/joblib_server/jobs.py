"""Operations on jobs: register, look up, list, and soft-delete the orphans."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from joblib_protocol import (
    GLOBAL_ROOM,
    INTERNAL_ROOM,
    RESERVED_ROOMS,
    TERMINAL_STATUSES,
    DisconnectPolicy,
    Emission,
    InvalidCategory,
    InvalidJobName,
    InvalidRoomId,
    JobFullName,
    JobRegisterRequest,
    JobResponse,
    JobSummary,
    SchemaConflict,
    validate_job_name,
    validate_room_id,
)
from joblib_server.auth import Identity
from joblib_server.backends import backend_of
from joblib_server.errors import (
    ProblemError,
    forbidden,
    job_not_found,
    worker_not_found,
)
from joblib_server.outcome import Outcome
from joblib_server.pages import bounded_count
from joblib_server.payloads import check_schema
from joblib_server.settings import default_policy, settings_of
from joblib_server.tables import (
    JOB_TABLE,
    LINK_TABLE,
    Job,
    Task,
    Worker,
    WorkerJobLink,
    utcnow,
)
from joblib_server.views import job_response, job_summary, jobs_invalidate

_INTERNAL_KEY = "joblib_internal_jobs"


def bind_internal_jobs(session: AsyncSession, executors: Mapping[str, str]) -> None:
    """Let the operations run in `session` know the `@internal` jobs run here.

    `executors` maps each job's full name to the name of the executor running it.
    """
    session.info[_INTERNAL_KEY] = executors


def internal_jobs_of(session: AsyncSession) -> Mapping[str, str]:
    """The `@internal` jobs the `JobLib` of `session` runs, and their executors."""
    executors = session.info.get(_INTERNAL_KEY)
    return executors if isinstance(executors, Mapping) else {}


def check_room_id(room_id: str) -> str:
    """Return `room_id` if valid, else raise the `invalid-room-id` problem."""
    try:
        return validate_room_id(room_id)
    except ValueError as exc:
        raise ProblemError(InvalidRoomId, str(exc)) from None


def visible_rooms(room_id: str) -> tuple[str, ...]:
    """The job rooms whose jobs can be seen and used from `room_id`."""
    if room_id == GLOBAL_ROOM:
        return (GLOBAL_ROOM,)
    return tuple(dict.fromkeys((room_id, GLOBAL_ROOM, INTERNAL_ROOM)))


@dataclass(frozen=True, slots=True)
class Registration:
    """What `register_job` did."""

    job: JobResponse
    created: bool


async def register_job(
    session: AsyncSession,
    identity: Identity,
    room_id: str,
    request: JobRegisterRequest,
    allowed_categories: Sequence[str],
) -> Outcome[Registration]:
    """Register (or revive) a job and link the worker that serves it."""
    backend = backend_of(session)
    check_room_id(room_id)
    if room_id in RESERVED_ROOMS and not identity.is_admin:
        raise forbidden(f"only admins may register jobs in {room_id}")
    if request.category not in allowed_categories:
        raise ProblemError(
            InvalidCategory,
            f"category {request.category!r} is not one of {list(allowed_categories)}",
        )
    try:
        validate_job_name(request.name)
    except ValueError as exc:
        raise ProblemError(InvalidJobName, str(exc)) from None
    check_schema(request.schema_)

    worker = await registering_worker(session, identity, request.worker_id)

    inserted = await session.execute(
        backend.insert_ignoring_conflicts(
            JOB_TABLE,
            {
                "id": uuid.uuid4(),
                "room_id": room_id,
                "category": request.category,
                "name": request.name,
                "schema": request.schema_,
                "deleted": False,
                "task_seq": 0,
                "created_at": utcnow(),
                "owner_id": identity.id,
            },
            "room_id",
            "category",
            "name",
        )
    )
    created = inserted.rowcount == 1  # type: ignore[attr-defined]
    job = (
        await session.execute(
            backend.locked(
                select(Job).where(
                    Job.room_id == room_id,
                    Job.category == request.category,
                    Job.name == request.name,
                )
            ).execution_options(populate_existing=True)
        )
    ).scalar_one()
    if not created:
        # Another identity's job is refused before its state or schema matter.
        await _check_owner(session, job, identity)
    if job.deleted:
        job.deleted = False
        job.schema_ = request.schema_
        created = True
        # A revived job starts from the server's policy unless this one sets its own.
        job.disconnect_action = job.max_attempts = job.grace_seconds = None
        job.timeout_seconds = job.pending_timeout_seconds = None
    elif not created and job.schema_ != request.schema_:
        raise ProblemError(
            SchemaConflict,
            f"job {job.full_name!r} is registered with a different schema",
        )

    if request.on_disconnect is not None:
        # The latest registration that sets a field decides it.
        given = request.on_disconnect.model_dump(exclude_none=True)
        job.disconnect_action = given.get("action", job.disconnect_action)
        job.max_attempts = given.get("max_attempts", job.max_attempts)
        job.grace_seconds = given.get("grace_seconds", job.grace_seconds)
    # Likewise for the time limits: one left out keeps what it was.
    if request.timeout_seconds is not None:
        job.timeout_seconds = request.timeout_seconds
    if request.pending_timeout_seconds is not None:
        job.pending_timeout_seconds = request.pending_timeout_seconds

    linked = await session.execute(
        backend.insert_ignoring_conflicts(
            LINK_TABLE,
            {"worker_id": worker.id, "job_id": job.id},
            "worker_id",
            "job_id",
        )
    )
    emissions: set[Emission] = set()
    if created or linked.rowcount == 1:  # type: ignore[attr-defined]
        emissions.add(jobs_invalidate(job.room_id))
    workers = await job_workers(session, [job.id])
    policy = job_policy(job, default_policy(settings_of(session)))
    registration = Registration(
        job=job_response(job, workers.get(job.id, []), policy, worker.id),
        created=created,
    )
    return Outcome(registration, emissions)


async def registering_worker(
    session: AsyncSession, identity: Identity, worker_id: uuid.UUID | None
) -> Worker:
    """The worker a registration is for: a new one of the caller's, or its own.

    A given worker is locked: one deleted meanwhile must answer 404, not break
    the foreign key of what the registration inserts for it. Another identity's
    worker is reported as unknown, not as forbidden.
    """
    if worker_id is None:
        worker = Worker(owner_id=identity.id)
        session.add(worker)
        await session.flush()
        return worker
    found = (
        await session.execute(
            backend_of(session).locked(select(Worker).where(Worker.id == worker_id))
        )
    ).scalar_one_or_none()
    if found is None or found.owner_id != identity.id:
        raise worker_not_found(worker_id)
    return found


async def _check_owner(session: AsyncSession, job: Job, identity: Identity) -> None:
    """Refuse to link another identity's worker to a job (admins may).

    A job belongs to the identity that first registered it, soft-deleted or not. A
    job from before 0.2.0 has no owner: the identity of one of the workers linked
    to it, or anyone when none is, may register it and so becomes its owner.
    """
    if job.owner_id is None:
        holders = set(
            (
                await session.execute(
                    select(Worker.owner_id)
                    .join(WorkerJobLink, col(WorkerJobLink.worker_id) == Worker.id)
                    .where(WorkerJobLink.job_id == job.id)
                )
            ).scalars()
        )
        if not holders or identity.id in holders:
            job.owner_id = identity.id
            return
    elif job.owner_id == identity.id:
        return
    if not identity.is_admin:
        raise forbidden(f"job {job.full_name!r} belongs to another identity")


async def job_workers(
    session: AsyncSession, job_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, list[uuid.UUID]]:
    """The ids of the workers serving each of `job_ids`."""
    ids = list(job_ids)
    if not ids:
        return {}
    rows = await session.execute(
        select(WorkerJobLink.job_id, WorkerJobLink.worker_id)
        .where(col(WorkerJobLink.job_id).in_(ids))
        .order_by(col(WorkerJobLink.worker_id))
    )
    result: dict[uuid.UUID, list[uuid.UUID]] = {}
    for job_id, worker_id in rows:
        result.setdefault(job_id, []).append(worker_id)
    return result


def job_name_in_room(room_id: str, full_name: str) -> JobFullName:
    """The parts of `full_name` if its room is visible from `room_id`; else 404."""
    check_room_id(room_id)
    try:
        name = JobFullName.parse(full_name)
    except ValueError:
        raise job_not_found(full_name, room_id) from None
    if name.room_id not in visible_rooms(room_id):
        raise job_not_found(full_name, room_id)
    return name


async def find_job(
    session: AsyncSession,
    room_id: str,
    full_name: str,
    *,
    include_deleted: bool = False,
) -> Job:
    """The job `full_name` as seen from `room_id`, or the `job-not-found` problem."""
    name = job_name_in_room(room_id, full_name)
    job = (
        await session.execute(
            select(Job).where(
                Job.room_id == name.room_id,
                Job.category == name.category,
                Job.name == name.name,
            )
        )
    ).scalar_one_or_none()
    if job is None or (job.deleted and not include_deleted):
        raise job_not_found(full_name, room_id)
    return job


async def get_job(
    session: AsyncSession, room_id: str, full_name: str, defaults: DisconnectPolicy
) -> JobResponse:
    """A live job as seen from a room, with its policy (`defaults` where unset)."""
    job = await find_job(session, room_id, full_name)
    workers = await job_workers(session, [job.id])
    return job_response(job, workers.get(job.id, []), job_policy(job, defaults))


def job_policy(job: Any, defaults: DisconnectPolicy) -> DisconnectPolicy:
    """The disconnect policy in force for a job row: its own fields, else defaults."""
    action = job.disconnect_action
    return DisconnectPolicy(
        action=defaults.action if action is None else action,
        max_attempts=(
            defaults.max_attempts if job.max_attempts is None else job.max_attempts
        ),
        grace_seconds=(
            defaults.grace_seconds if job.grace_seconds is None else job.grace_seconds
        ),
    )


async def list_jobs(
    session: AsyncSession,
    room_id: str,
    limit: int,
    offset: int,
    count_limit: int | None = None,
) -> tuple[list[JobSummary], int]:
    """A page of the live jobs visible from a room, newest first, and their count.

    The count stops at `count_limit` (see `pages`).
    """
    check_room_id(room_id)
    where = (col(Job.room_id).in_(visible_rooms(room_id)), col(Job.deleted).is_(False))
    total = await bounded_count(session, Job, where, count_limit)
    jobs = (
        (
            await session.execute(
                select(Job)
                .where(*where)
                .order_by(col(Job.created_at).desc(), col(Job.id).desc())
                .limit(limit)
                .offset(offset)
            )
        )
        .scalars()
        .all()
    )
    workers = await job_workers(session, [job.id for job in jobs])
    return [job_summary(job, workers.get(job.id, [])) for job in jobs], total


async def soft_delete_orphan_jobs(
    session: AsyncSession, job_ids: Iterable[uuid.UUID]
) -> set[Emission]:
    """Hide the jobs among `job_ids` that no worker serves and no open task needs."""
    _hidden, emissions = await hide_orphan_jobs(session, job_ids)
    return emissions


async def hide_orphan_jobs(
    session: AsyncSession, job_ids: Iterable[uuid.UUID]
) -> tuple[list[Job], set[Emission]]:
    """Soft-delete the orphans among `job_ids`; return them and the emissions."""
    backend = backend_of(session)
    hidden: list[Job] = []
    emissions: set[Emission] = set()
    run_here = internal_jobs_of(session)
    for job_id in sorted(set(job_ids)):
        if await _served(session, job_id):
            continue  # the common case, and safe without a lock: we delete nothing
        # Lock first, check after: on PostgreSQL the checks below then run in a
        # fresh snapshot and see a task or link committed while we waited.
        job = (
            await session.execute(
                backend.locked(select(Job).where(Job.id == job_id)).execution_options(
                    populate_existing=True
                )
            )
        ).scalar_one_or_none()
        if job is None or job.deleted or job.full_name in run_here:
            # An `@internal` job the executor runs needs no worker.
            continue
        if await _served(session, job_id):
            continue
        open_task = (
            await session.execute(
                select(Task.id)
                .where(
                    Task.job_id == job_id,
                    col(Task.status).not_in([s.value for s in TERMINAL_STATUSES]),
                )
                .limit(1)
            )
        ).first()
        if open_task is not None:
            continue
        job.deleted = True
        hidden.append(job)
        emissions.add(jobs_invalidate(job.room_id))
    return hidden, emissions


_SERVED = (
    sa.select(LINK_TABLE.c.job_id)
    .where(LINK_TABLE.c.job_id == sa.bindparam("b_job"))
    .limit(1)
)


async def _served(session: AsyncSession, job_id: uuid.UUID) -> bool:
    connection = await session.connection()
    linked = await connection.execute(_SERVED, {"b_job": job_id})
    return linked.first() is not None


async def register_internal_jobs(
    session: AsyncSession, schemas: Mapping[str, dict[str, Any]]
) -> Outcome[list[str]]:
    """Create, revive or update the `@internal` jobs an executor runs; their names.

    `schemas` maps each full name to its JSON Schema. The latest registration's
    schema wins: the host's code is the job's only implementation.
    """
    backend = backend_of(session)
    emissions: set[Emission] = set()
    for full_name, schema in sorted(schemas.items()):
        name = JobFullName.parse(full_name)
        check_schema(schema)
        inserted = await session.execute(
            backend.insert_ignoring_conflicts(
                JOB_TABLE,
                {
                    "id": uuid.uuid4(),
                    "room_id": name.room_id,
                    "category": name.category,
                    "name": name.name,
                    "schema": schema,
                    "deleted": False,
                    "task_seq": 0,
                    "created_at": utcnow(),
                    "owner_id": INTERNAL_ROOM,
                },
                "room_id",
                "category",
                "name",
            )
        )
        if inserted.rowcount == 1:  # type: ignore[attr-defined]
            emissions.add(jobs_invalidate(name.room_id))
            continue
        job = (
            await session.execute(
                backend.locked(
                    select(Job).where(
                        Job.room_id == name.room_id,
                        Job.category == name.category,
                        Job.name == name.name,
                    )
                ).execution_options(populate_existing=True)
            )
        ).scalar_one()
        if job.deleted or job.schema_ != schema:
            job.deleted = False
            job.schema_ = schema
            emissions.add(jobs_invalidate(name.room_id))
    return Outcome(sorted(schemas), emissions)
