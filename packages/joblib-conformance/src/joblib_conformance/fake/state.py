"""The fake server's world: workers, jobs and tasks in memory, by the protocol's rules.

Plain synchronous code without I/O; the app calls it from its one event loop.
Each change returns what it announces as `(event, room)` pairs. Time limits are
kept as due times: the app asks `next_due()` when to call `expire_due()`.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from joblib_protocol import (
    GLOBAL_ROOM,
    INTERNAL_ROOM,
    RESERVED_ROOMS,
    CancelReason,
    DisconnectPolicy,
    Emission,
    ErrorCode,
    Event,
    Forbidden,
    InternalJobNotConfigured,
    InvalidCategory,
    InvalidJobName,
    InvalidPayload,
    InvalidRoomId,
    InvalidSchema,
    InvalidTaskTransition,
    JobFullName,
    JobNotFound,
    JobRegisterRequest,
    JobResponse,
    JobsInvalidate,
    JobSummary,
    PayloadTooLarge,
    ProblemType,
    SchemaConflict,
    TaskAvailable,
    TaskCancelled,
    TaskNotFound,
    TaskNotRunning,
    TaskProgress,
    TaskProgressEvent,
    TaskProgressRequest,
    TaskResponse,
    TaskStatus,
    TaskStatusEvent,
    TaskSubmitRequest,
    TaskUpdateRequest,
    TaskWorkerMismatch,
    ValidationFailed,
    WorkerCleanupResponse,
    WorkerNotFound,
    WorkerResponse,
    WorkerSummary,
    is_terminal,
    is_valid_transition,
    job_channel,
    room_channel,
    validate_job_name,
    validate_room_id,
    worker_channel,
)

CATEGORIES = ("modifiers", "selections", "analysis")
DISCONNECTED = "Worker disconnected"
EXPIRED = "Task waited in the queue past its time limit"
MAX_RESULT_BYTES = 1_048_576
"""The largest result kept, as compact JSON (our server's default)."""


class Problem(Exception):
    """A refusal, answered as the problem document of `kind` (with field `errors`)."""

    def __init__(
        self,
        kind: type[ProblemType],
        detail: str,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.errors = errors


@dataclass(frozen=True)
class Identity:
    """Who a token stands for."""

    id: str
    is_admin: bool = False


def now() -> datetime:
    """The current time, in UTC."""
    return datetime.now(UTC)


_ORDER = itertools.count(1)


@dataclass
class Worker:
    """A worker: its owner, its heartbeat, the jobs it serves."""

    id: uuid.UUID
    owner: str
    last_heartbeat: datetime
    jobs: set[str] = field(default_factory=set)
    order: int = field(default_factory=lambda: next(_ORDER))


@dataclass
class Job:
    """A job; `workers` are the ids linked to it, `seq` numbers its tasks."""

    id: uuid.UUID
    room_id: str
    category: str
    name: str
    schema: dict[str, Any]
    owner: str
    policy: DisconnectPolicy
    timeout_seconds: float | None = None
    pending_timeout_seconds: float | None = None
    workers: set[uuid.UUID] = field(default_factory=set)
    deleted: bool = False
    seq: int = 0
    order: int = field(default_factory=lambda: next(_ORDER))

    @property
    def full_name(self) -> str:
        """`<room_id>:<category>:<name>`."""
        return f"{self.room_id}:{self.category}:{self.name}"


@dataclass
class Task:
    """A task and everything the wire shows of it."""

    id: uuid.UUID
    job: Job
    room_id: str
    submitted_by: str
    payload: dict[str, Any]
    created_at: datetime
    seq: int
    status: TaskStatus = TaskStatus.PENDING
    started_at: datetime | None = None
    completed_at: datetime | None = None
    worker_id: uuid.UUID | None = None
    error: str | None = None
    attempt: int = 1
    error_code: ErrorCode | None = None
    claim_request_id: str | None = None
    result: Any = None
    progress: TaskProgress | None = None
    timeout_seconds: float | None = None
    deadline_at: datetime | None = None
    expires_at: datetime | None = None
    order: int = field(default_factory=lambda: next(_ORDER))


Emissions = list[Emission]


class World:
    """Every worker, job and task the fake server knows."""

    def __init__(self, categories: Iterable[str] = CATEGORIES) -> None:
        self.categories = tuple(categories)
        self.workers: dict[uuid.UUID, Worker] = {}
        self.jobs: dict[str, Job] = {}
        self.tasks: dict[uuid.UUID, Task] = {}

    # reading

    def position(self, task: Task) -> int | None:
        """A pending task's place in its job's queue, from 1."""
        if task.status != TaskStatus.PENDING:
            return None
        head = min(
            t.seq
            for t in self.tasks.values()
            if t.job is task.job and t.status == TaskStatus.PENDING
        )
        return task.seq - head + 1

    def task_response(self, task: Task) -> TaskResponse:
        """The REST shape of a task."""
        return TaskResponse(
            id=task.id,
            job_name=task.job.full_name,
            room_id=task.room_id,
            status=task.status,
            created_at=task.created_at,
            started_at=task.started_at,
            completed_at=task.completed_at,
            worker_id=task.worker_id,
            error=task.error,
            payload=task.payload,
            queue_position=self.position(task),
            attempt=task.attempt,
            error_code=task.error_code,
            result=task.result,
            progress=task.progress,
            timeout_seconds=task.timeout_seconds,
            deadline_at=task.deadline_at,
            expires_at=task.expires_at,
        )

    def _status(self, task: Task) -> Emission:
        event = TaskStatusEvent(
            id=str(task.id),
            name=task.job.full_name,
            room_id=task.room_id,
            status=task.status,
            created_at=task.created_at,
            started_at=task.started_at,
            completed_at=task.completed_at,
            queue_position=self.position(task),
            worker_id=str(task.worker_id) if task.worker_id else None,
            error=task.error,
            attempt=task.attempt,
            error_code=task.error_code,
            deadline_at=task.deadline_at,
            expires_at=task.expires_at,
        )
        return Emission(event, room_channel(task.room_id))

    def _cancelled(self, task: Task, reason: CancelReason) -> list[Emission]:
        """`task_cancelled` to the sockets of the worker holding `task`, if any."""
        if task.worker_id is None:
            return []
        event = TaskCancelled(
            task_id=str(task.id), job_name=task.job.full_name, reason=reason
        )
        return [Emission(event, worker_channel(task.worker_id))]

    def _available(self, task: Task) -> list[Emission]:
        if task.job.room_id == INTERNAL_ROOM:
            return []
        event: Event = TaskAvailable(
            job_name=task.job.full_name, room_id=task.room_id, task_id=str(task.id)
        )
        return [Emission(event, job_channel(task.job.full_name))]

    def job_response(self, job: Job, worker_id: uuid.UUID | None = None) -> JobResponse:
        """The REST shape of a job."""
        return JobResponse(
            id=job.id,
            room_id=job.room_id,
            category=job.category,
            name=job.name,
            full_name=job.full_name,
            schema_=job.schema,
            workers=sorted(job.workers),
            worker_id=worker_id,
            on_disconnect=job.policy,
            timeout_seconds=job.timeout_seconds,
            pending_timeout_seconds=job.pending_timeout_seconds,
        )

    def worker(self, worker_id: uuid.UUID, identity: Identity) -> Worker:
        """The caller's own worker: 404 unknown, 403 another's."""
        worker = self.workers.get(worker_id)
        if worker is None:
            raise Problem(WorkerNotFound, f"no worker {worker_id}")
        if worker.owner != identity.id:
            raise Problem(Forbidden, f"worker {worker_id} belongs to another identity")
        return worker

    def job_in_room(self, room_id: str, full_name: str) -> Job:
        """A live job visible from `room_id`, or 404."""
        check_room(room_id)
        try:
            parts = JobFullName.parse(full_name)
        except ValueError:
            raise Problem(JobNotFound, f"no job {full_name}") from None
        visible = (
            (GLOBAL_ROOM,) if room_id == GLOBAL_ROOM else (room_id, *RESERVED_ROOMS)
        )
        job = self.jobs.get(full_name)
        if parts.room_id not in visible or job is None or job.deleted:
            raise Problem(JobNotFound, f"no job {full_name} in room {room_id}")
        return job

    def task(self, task_id: uuid.UUID) -> Task:
        """A task by id, or 404."""
        task = self.tasks.get(task_id)
        if task is None:
            raise Problem(TaskNotFound, f"no task {task_id}")
        return task

    def list_jobs(self, room_id: str) -> list[JobSummary]:
        """The live jobs visible from a room, newest first."""
        check_room(room_id)
        visible = (
            (GLOBAL_ROOM,) if room_id == GLOBAL_ROOM else (room_id, *RESERVED_ROOMS)
        )
        jobs = [j for j in self.jobs.values() if j.room_id in visible and not j.deleted]
        return [
            JobSummary(
                full_name=j.full_name,
                category=j.category,
                name=j.name,
                workers=sorted(j.workers),
            )
            for j in sorted(jobs, key=lambda j: -j.order)
        ]

    def list_workers(self, room_id: str | None = None) -> list[WorkerSummary]:
        """Workers, newest first; with a room, those serving jobs visible from it."""
        workers = list(self.workers.values())
        if room_id is not None:
            visible = {s.full_name for s in self.list_jobs(room_id)}
            workers = [w for w in workers if w.jobs & visible]
        return [
            WorkerSummary(
                id=w.id, last_heartbeat=w.last_heartbeat, job_count=len(w.jobs)
            )
            for w in sorted(workers, key=lambda w: -w.order)
        ]

    def list_tasks(
        self, room_id: str, full_name: str | None, status: TaskStatus | None
    ) -> list[TaskResponse]:
        """A room's tasks (of one job), newest first."""
        check_room(room_id)
        tasks = [t for t in self.tasks.values() if t.room_id == room_id]
        if full_name is not None:
            job = self.jobs.get(full_name)
            if job is None:
                raise Problem(JobNotFound, f"no job {full_name}")
            tasks = [t for t in tasks if t.job is job]
        if status is not None:
            tasks = [t for t in tasks if t.status == status]
        return [self.task_response(t) for t in sorted(tasks, key=lambda t: -t.order)]

    # changing

    def create_worker(self, identity: Identity) -> tuple[WorkerResponse, Emissions]:
        """`POST /workers`."""
        worker = Worker(uuid.uuid4(), identity.id, now())
        self.workers[worker.id] = worker
        return WorkerResponse(id=worker.id, last_heartbeat=worker.last_heartbeat), []

    def heartbeat(
        self,
        identity: Identity,
        worker_id: uuid.UUID,
        held: list[uuid.UUID] | None = None,
    ) -> tuple[WorkerResponse, Emissions]:
        """`PATCH /workers/{id}`; `cancelled` lists the `held` tasks that are not
        the worker's to run any more (the fake releases none it left out)."""
        worker = self.worker(worker_id, identity)
        worker.last_heartbeat = now()
        stop = sorted(
            task_id
            for task_id in set(held or ())
            if not (
                (task := self.tasks.get(task_id)) is not None
                and task.worker_id == worker.id
                and task.status in (TaskStatus.CLAIMED, TaskStatus.RUNNING)
            )
        )
        beat = WorkerResponse(
            id=worker.id, last_heartbeat=worker.last_heartbeat, cancelled=stop
        )
        return beat, []

    def register(
        self,
        identity: Identity,
        room_id: str,
        request: JobRegisterRequest,
        defaults: DisconnectPolicy,
    ) -> tuple[tuple[JobResponse, bool], Emissions]:
        """`PUT /rooms/{room_id}/jobs`: (the job, whether it is new)."""
        check_room(room_id)
        if room_id in RESERVED_ROOMS and not identity.is_admin:
            raise Problem(Forbidden, f"only admins may register jobs in {room_id}")
        if request.category not in self.categories:
            raise Problem(InvalidCategory, f"category {request.category!r} unknown")
        try:
            validate_job_name(request.name)
        except ValueError as exc:
            raise Problem(InvalidJobName, str(exc)) from None
        check_schema(request.schema_)
        if request.worker_id is None:
            worker, _ = self.create_worker(identity)
            linked = self.workers[worker.id]
        else:
            found = self.workers.get(request.worker_id)
            if found is None or found.owner != identity.id:
                raise Problem(WorkerNotFound, f"no worker {request.worker_id} of yours")
            linked = found
        full_name = f"{room_id}:{request.category}:{request.name}"
        given = (
            request.on_disconnect.model_dump(exclude_none=True)
            if request.on_disconnect
            else {}
        )
        job = self.jobs.get(full_name)
        created = job is None or job.deleted
        limits = request.model_dump(
            include={"timeout_seconds", "pending_timeout_seconds"}, exclude_none=True
        )
        if job is None:
            job = Job(
                uuid.uuid4(),
                room_id,
                request.category,
                request.name,
                request.schema_,
                identity.id,
                defaults.model_copy(update=given),
            )
            self.jobs[full_name] = job
        elif job.owner != identity.id and not identity.is_admin:
            raise Problem(Forbidden, f"job {full_name} belongs to another identity")
        elif job.deleted:
            job.deleted = False
            job.schema = request.schema_
            job.policy = defaults.model_copy(update=given)
        elif job.schema != request.schema_:
            raise Problem(SchemaConflict, f"job {full_name} has another schema")
        else:
            job.policy = job.policy.model_copy(update=given)
        for name, value in limits.items():
            setattr(job, name, value)
        emissions: Emissions = []
        if created or linked.id not in job.workers:
            emissions.append(Emission(JobsInvalidate(), room_channel(room_id)))
        job.workers.add(linked.id)
        linked.jobs.add(full_name)
        return (self.job_response(job, linked.id), created), emissions

    def submit(
        self,
        identity: Identity,
        room_id: str,
        full_name: str,
        request: TaskSubmitRequest,
    ) -> tuple[TaskResponse, Emissions]:
        """`POST /rooms/{room_id}/tasks/{full_name}`."""
        job = self.job_in_room(room_id, full_name)
        if job.room_id == INTERNAL_ROOM:
            raise Problem(InternalJobNotConfigured, "the fake server runs no jobs")
        check_payload(job.schema, request.payload)
        job.seq += 1
        created = now()
        task = Task(
            uuid.uuid4(), job, room_id, identity.id, request.payload, created, job.seq
        )
        task.timeout_seconds = request.timeout_seconds or job.timeout_seconds
        pending = request.pending_timeout_seconds or job.pending_timeout_seconds
        if pending is not None:
            task.expires_at = created + timedelta(seconds=pending)
        self.tasks[task.id] = task
        return self.task_response(task), [self._status(task), *self._available(task)]

    def claim(
        self,
        identity: Identity,
        worker_id: uuid.UUID,
        *,
        start: bool = False,
        request_id: str | None = None,
    ) -> tuple[TaskResponse | None, Emissions]:
        """`POST /tasks/claim`: the oldest pending task of the worker's jobs."""
        worker = self.worker(worker_id, identity)
        worker.last_heartbeat = now()
        if request_id is not None:
            for task in self.tasks.values():
                if (
                    task.worker_id == worker.id
                    and task.claim_request_id == request_id
                    and task.status in (TaskStatus.CLAIMED, TaskStatus.RUNNING)
                ):
                    return self.task_response(task), []
        pending = [
            t
            for t in self.tasks.values()
            if t.status == TaskStatus.PENDING and t.job.full_name in worker.jobs
        ]
        if not pending:
            return None, []
        task = min(pending, key=lambda t: (t.created_at, t.seq))
        task.status, task.worker_id = TaskStatus.CLAIMED, worker.id
        task.claim_request_id = request_id
        emissions = [self._status(task)]
        if start:
            self._start(task)
            emissions.append(self._status(task))
        return self.task_response(task), emissions

    def update(
        self, identity: Identity, task_id: uuid.UUID, request: TaskUpdateRequest
    ) -> tuple[TaskResponse, Emissions]:
        """`PATCH /tasks/{task_id}`."""
        status, error = request.status, request.error
        task = self.task(task_id)
        self._fence(task, request.worker_id)
        holder = self.workers.get(task.worker_id) if task.worker_id else None
        allowed = (
            identity.is_admin
            or (holder is not None and holder.owner == identity.id)
            or (status == TaskStatus.CANCELLED and task.submitted_by == identity.id)
        )
        if not allowed:
            raise Problem(Forbidden, f"task {task_id} is not yours to update")
        if status == TaskStatus.CLAIMED or not is_valid_transition(task.status, status):
            raise Problem(
                InvalidTaskTransition, f"{task.status.value} → {status.value}"
            )
        if error is not None and not is_terminal(status):
            raise Problem(
                ValidationFailed,
                "an error needs a terminal status",
                [{"loc": ["body", "error"], "msg": "only with a terminal status"}],
            )
        if "result" in request.model_fields_set:
            check_result(request)
        held = task.status in (TaskStatus.CLAIMED, TaskStatus.RUNNING)
        if status == TaskStatus.RUNNING:
            self._start(task)
        else:
            task.status = status
            task.completed_at = now()
            task.error = error
            task.error_code = (
                ErrorCode.JOB_FAILED if status == TaskStatus.FAILED else None
            )
            task.result = request.result
        emissions = [self._status(task)]
        if status == TaskStatus.CANCELLED and held:
            emissions += self._cancelled(task, CancelReason.CANCELLED)
        if is_terminal(status):
            emissions += self._hide_orphans([task.job])
        return self.task_response(task), emissions

    def _fence(self, task: Task, worker_id: uuid.UUID | None) -> None:
        """409 unless the reporting worker (if named) still holds the task."""
        if worker_id is not None and (
            worker_id != task.worker_id or worker_id not in self.workers
        ):
            raise Problem(TaskWorkerMismatch, f"{worker_id} does not hold {task.id}")

    def _start(self, task: Task) -> None:
        task.status, task.started_at = TaskStatus.RUNNING, now()
        if task.timeout_seconds is not None:
            task.deadline_at = task.started_at + timedelta(seconds=task.timeout_seconds)

    def report_progress(
        self, identity: Identity, task_id: uuid.UUID, request: TaskProgressRequest
    ) -> tuple[None, Emissions]:
        """`PUT /tasks/{task_id}/progress`: keep a running task's latest report."""
        task = self.task(task_id)
        self._fence(task, request.worker_id)
        holder = self.workers.get(task.worker_id) if task.worker_id else None
        if not identity.is_admin and (holder is None or holder.owner != identity.id):
            raise Problem(Forbidden, f"task {task_id} is not yours to report on")
        if task.status != TaskStatus.RUNNING:
            raise Problem(
                TaskNotRunning, f"task {task_id} is {task.status.value}: stop it"
            )
        task.progress = TaskProgress(**request.model_dump(exclude={"worker_id"}))
        event = TaskProgressEvent(
            id=str(task.id), room_id=task.room_id, progress=task.progress
        )
        return None, [Emission(event, room_channel(task.room_id))]

    def next_due(self) -> datetime | None:
        """The earliest deadline of a running task or expiry of a pending one."""
        due = [
            t.deadline_at if t.status == TaskStatus.RUNNING else t.expires_at
            for t in self.tasks.values()
            if t.status in (TaskStatus.RUNNING, TaskStatus.PENDING)
        ]
        known = [d for d in due if d is not None]
        return min(known) if known else None

    def expire_due(self, at: datetime) -> Emissions:
        """Fail the tasks past their deadline (telling their worker) or expiry."""
        emissions: Emissions = []
        jobs = []
        for task in self.tasks.values():
            running = task.status == TaskStatus.RUNNING
            due = task.deadline_at if running else task.expires_at
            if task.status not in (TaskStatus.RUNNING, TaskStatus.PENDING):
                continue
            if due is None or due > at:
                continue
            task.status, task.completed_at = TaskStatus.FAILED, at
            if running:
                task.error = (
                    f"Task ran past its time limit of {task.timeout_seconds:g} s"
                )
                task.error_code = ErrorCode.DEADLINE_EXCEEDED
            else:
                task.error, task.error_code = EXPIRED, ErrorCode.EXPIRED
            emissions.append(self._status(task))
            if running:
                emissions += self._cancelled(task, CancelReason.DEADLINE_EXCEEDED)
            jobs.append(task.job)
        return emissions + self._hide_orphans(jobs)

    def remove_worker(
        self, worker_id: uuid.UUID, code: ErrorCode
    ) -> tuple[WorkerCleanupResponse, Emissions]:
        """Fail or requeue the worker's open tasks, unlink it, drop it."""
        worker = self.workers.pop(worker_id)
        receipt = WorkerCleanupResponse(worker_id=worker_id)
        emissions: Emissions = []
        jobs = [self.jobs[name] for name in sorted(worker.jobs)]
        for task in list(self.tasks.values()):
            if task.worker_id != worker_id or task.status not in (
                TaskStatus.CLAIMED,
                TaskStatus.RUNNING,
            ):
                continue
            policy = task.job.policy
            if policy.action == "requeue" and task.attempt < policy.max_attempts:
                task.status, task.worker_id = TaskStatus.PENDING, None
                task.started_at, task.claim_request_id = None, None
                task.deadline_at, task.expires_at, task.progress = None, None, None
                task.attempt += 1
                receipt.requeued.append(task.id)
                emissions += [self._status(task), *self._available(task)]
            else:
                task.status, task.completed_at = TaskStatus.FAILED, now()
                task.error, task.error_code = DISCONNECTED, code
                receipt.failed.append(task.id)
                emissions.append(self._status(task))
        for job in jobs:
            job.workers.discard(worker_id)
        hidden = self._hide_orphans(jobs)
        receipt.jobs_removed.extend(job.full_name for job in jobs if job.deleted)
        for job in jobs:
            if not job.deleted:
                emissions.append(Emission(JobsInvalidate(), room_channel(job.room_id)))
        return receipt, emissions + hidden

    def delete_worker(
        self, identity: Identity, worker_id: uuid.UUID
    ) -> tuple[WorkerCleanupResponse, Emissions]:
        """`DELETE /workers/{id}` as its owner or an admin."""
        worker = self.workers.get(worker_id)
        if worker is None:
            raise Problem(WorkerNotFound, f"no worker {worker_id}")
        if worker.owner != identity.id and not identity.is_admin:
            raise Problem(Forbidden, f"worker {worker_id} belongs to another identity")
        return self.remove_worker(worker_id, ErrorCode.WORKER_REMOVED)

    def _hide_orphans(self, jobs: Iterable[Job]) -> Emissions:
        emissions: Emissions = []
        for job in jobs:
            if job.deleted or job.workers:
                continue
            if any(
                t.job is job and not is_terminal(t.status) for t in self.tasks.values()
            ):
                continue
            job.deleted = True
            emissions.append(Emission(JobsInvalidate(), room_channel(job.room_id)))
        return emissions


def check_room(room_id: str) -> str:
    """`room_id` if it is a valid room id, else the 400 problem."""
    try:
        return validate_room_id(room_id)
    except ValueError as exc:
        raise Problem(InvalidRoomId, str(exc)) from None


def check_schema(schema: Any) -> None:
    """422 `invalid-schema` unless `schema` is a JSON Schema (2020-12)."""
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        loc = ["body", "schema", *exc.absolute_path]
        raise Problem(
            InvalidSchema,
            f"not a valid JSON Schema (2020-12): {exc.message}",
            [{"loc": loc, "msg": exc.message}],
        ) from None


def check_payload(schema: dict[str, Any], payload: dict[str, Any]) -> None:
    """422 `invalid-payload` listing each error, unless `payload` fits `schema`."""
    try:
        validator = Draft202012Validator(schema)
        errors = sorted(
            validator.iter_errors(payload), key=lambda e: (e.json_path, e.message)
        )
    except Exception:  # a schema that cannot be applied checks nothing
        return
    if errors:
        raise Problem(
            InvalidPayload,
            f"the payload does not match the job's schema: {errors[0].message}",
            [
                {"loc": ["body", "payload", *e.absolute_path], "msg": e.message}
                for e in errors
            ],
        )


def check_result(request: TaskUpdateRequest) -> None:
    """A result only with `completed` (422), at most `MAX_RESULT_BYTES` (413)."""
    if request.status != TaskStatus.COMPLETED:
        raise Problem(
            ValidationFailed,
            "a result may only be given with status 'completed'",
            [{"loc": ["body", "result"], "msg": "only with status 'completed'"}],
        )
    text = json.dumps(request.result, ensure_ascii=False, separators=(",", ":"))
    if len(text.encode()) > MAX_RESULT_BYTES:
        raise Problem(PayloadTooLarge, f"the result is over {MAX_RESULT_BYTES} bytes")
