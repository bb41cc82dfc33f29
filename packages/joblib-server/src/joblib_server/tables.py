"""The database tables: jobs, workers, their links, tasks, and providers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import registry
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from joblib_protocol import join_job_name
from joblib_server.backends import keeps_time_zones

METADATA = sa.MetaData()
"""joblib's tables and nothing else: never `SQLModel.metadata`, which also holds
every SQLModel table of a host that imports joblib."""


def utcnow() -> datetime:
    """Return the current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> Any:
        """Store as UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value if keeps_time_zones(dialect) else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> Any:
        """Read back timezone-aware."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


job_full_name = join_job_name
"""The wire name of a stored job's parts (already valid: no checks)."""


class JoblibModel(SQLModel, registry=registry(metadata=METADATA)):
    """Base of joblib's table models: they register on `METADATA` only."""


class Job(JoblibModel, table=True):
    """A named capability with the JSON Schema of its parameters."""

    __tablename__ = "joblib_job"
    __table_args__ = (
        sa.UniqueConstraint("room_id", "category", "name", name="uq_joblib_job_name"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    room_id: str = Field(sa_type=sa.String(255))
    category: str = Field(sa_type=sa.String(255))
    name: str = Field(sa_type=sa.String(255))
    schema_: dict[str, Any] = Field(
        default_factory=dict, sa_column=sa.Column("schema", sa.JSON, nullable=False)
    )
    deleted: bool = Field(default=False)
    # Per-job counter handed to each submitted task; queue positions derive from it.
    task_seq: int = Field(default=0, sa_type=sa.BigInteger)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False)
    )
    # The identity that registered it first; NULL for jobs older than 0.2.0.
    owner_id: str | None = Field(default=None, sa_type=sa.String(255))
    # The disconnect policy its registration set; NULL takes the server default.
    disconnect_action: str | None = Field(default=None, sa_type=sa.String(16))
    max_attempts: int | None = Field(default=None)
    grace_seconds: float | None = Field(default=None, sa_type=sa.Float)
    # The limits its tasks get unless a submit overrides them; NULL: none.
    timeout_seconds: float | None = Field(default=None, sa_type=sa.Float)
    pending_timeout_seconds: float | None = Field(default=None, sa_type=sa.Float)

    @property
    def full_name(self) -> str:
        """The job's wire name `<room_id>:<category>:<name>`."""
        return job_full_name(self.room_id, self.category, self.name)


class Worker(JoblibModel, table=True):
    """One running worker process, owned by an identity."""

    __tablename__ = "joblib_worker"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    owner_id: str = Field(sa_type=sa.String(255), index=True)
    last_heartbeat: datetime = Field(
        default_factory=utcnow,
        sa_column=sa.Column(UTCDateTime(), nullable=False, index=True),
    )
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False)
    )
    # When its socket dropped; it keeps its tasks for the grace time (see workers).
    disconnected_at: datetime | None = Field(
        default=None, sa_column=sa.Column(UTCDateTime(), nullable=True, index=True)
    )
    # Bumped by every join: a socket that closes after a newer join cleans nothing.
    socket_epoch: int = Field(
        default=0,
        sa_column=sa.Column(sa.BigInteger, nullable=False, server_default=sa.text("0")),
    )


class WorkerJobLink(JoblibModel, table=True):
    """A worker serves a job."""

    __tablename__ = "joblib_worker_job"

    worker_id: uuid.UUID = Field(
        sa_column=sa.Column(
            sa.Uuid,
            sa.ForeignKey("joblib_worker.id", ondelete="CASCADE"),
            primary_key=True,
        )
    )
    job_id: uuid.UUID = Field(
        sa_column=sa.Column(
            sa.Uuid,
            sa.ForeignKey("joblib_job.id", ondelete="CASCADE"),
            primary_key=True,
            index=True,
        )
    )


class Task(JoblibModel, table=True):
    """One request to run a job with a payload, submitted in a room."""

    __tablename__ = "joblib_task"
    __table_args__ = (
        # The claim and queue-position queries read only pending rows.
        sa.Index(
            "ix_joblib_task_pending",
            "job_id",
            "created_at",
            "seq",
            "id",
            postgresql_where=sa.text("status = 'pending'"),
            sqlite_where=sa.text("status = 'pending'"),
        ),
        sa.Index("ix_joblib_task_job_seq", "job_id", "status", "seq"),
        sa.Index("ix_joblib_task_room", "room_id", "created_at"),
        sa.Index("ix_joblib_task_worker", "worker_id", "status"),
        # The deadline timers load the due tasks from these (at startup too).
        sa.Index(
            "ix_joblib_task_deadline",
            "deadline_at",
            postgresql_where=sa.text("status = 'running'"),
            sqlite_where=sa.text("status = 'running'"),
        ),
        sa.Index(
            "ix_joblib_task_expiry",
            "expires_at",
            postgresql_where=sa.text("status = 'pending'"),
            sqlite_where=sa.text("status = 'pending'"),
        ),
        # The sweeper deletes finished tasks past their retention (`retention`).
        sa.Index(
            "ix_joblib_task_completed",
            "completed_at",
            postgresql_where=sa.text("completed_at IS NOT NULL"),
            sqlite_where=sa.text("completed_at IS NOT NULL"),
        ),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    job_id: uuid.UUID = Field(
        sa_column=sa.Column(sa.Uuid, sa.ForeignKey("joblib_job.id"), nullable=False)
    )
    room_id: str = Field(sa_type=sa.String(255))
    submitted_by: str = Field(sa_type=sa.String(255))
    status: str = Field(default="pending", sa_type=sa.String(16))
    payload: dict[str, Any] = Field(
        default_factory=dict, sa_column=sa.Column(sa.JSON, nullable=False)
    )
    # Position of the task in its job's submission order (see queue positions).
    seq: int = Field(default=0, sa_type=sa.BigInteger)
    # Deliberately not a foreign key: a failed task keeps the id of the worker that
    # ran it after that worker row is deleted.
    worker_id: uuid.UUID | None = Field(default=None, sa_type=sa.Uuid)
    error: str | None = Field(default=None, sa_type=sa.Text)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False)
    )
    # 1 for a first run; a requeue after a lost worker adds one.
    attempt: int = Field(
        default=1,
        sa_column=sa.Column(sa.Integer, nullable=False, server_default=sa.text("1")),
    )
    error_code: str | None = Field(default=None, sa_type=sa.String(32))
    # When and by which claim request it was claimed (a retried claim finds it).
    claimed_at: datetime | None = Field(
        default=None, sa_column=sa.Column(UTCDateTime(), nullable=True)
    )
    claim_request_id: str | None = Field(default=None, sa_type=sa.String(64))
    started_at: datetime | None = Field(
        default=None, sa_column=sa.Column(UTCDateTime(), nullable=True)
    )
    completed_at: datetime | None = Field(
        default=None, sa_column=sa.Column(UTCDateTime(), nullable=True)
    )
    # What the job returned (completed tasks), and the latest reported progress.
    result: Any = Field(default=None, sa_column=sa.Column(sa.JSON, nullable=True))
    progress: dict[str, Any] | None = Field(
        default=None, sa_column=sa.Column(sa.JSON, nullable=True)
    )
    # Its running time limit; `deadline_at` is set from it when the task starts.
    timeout_seconds: float | None = Field(default=None, sa_type=sa.Float)
    deadline_at: datetime | None = Field(
        default=None, sa_column=sa.Column(UTCDateTime(), nullable=True)
    )
    # When it fails as `expired` if still pending.
    expires_at: datetime | None = Field(
        default=None, sa_column=sa.Column(UTCDateTime(), nullable=True)
    )

    def fail(self, error: str, error_code: str, now: datetime) -> None:
        """Mark the task failed with `error` and `error_code` at `now`."""
        self.status = "failed"
        self.error = error
        self.error_code = error_code
        self.completed_at = now


class IdempotencyKey(JoblibModel, table=True):
    """The task a submitter's `Idempotency-Key` made; kept for a day."""

    __tablename__ = "joblib_idempotency_key"

    owner_id: str = Field(sa_type=sa.String(255), primary_key=True)
    key: str = Field(sa_type=sa.String(255), primary_key=True)
    task_id: uuid.UUID = Field(sa_type=sa.Uuid)
    created_at: datetime = Field(
        default_factory=utcnow,
        sa_column=sa.Column(UTCDateTime(), nullable=False, index=True),
    )


class Provider(JoblibModel, table=True):
    """A worker's provider: it answers reads (`providers`), it runs nothing."""

    __tablename__ = "joblib_provider"
    __table_args__ = (
        sa.UniqueConstraint(
            "room_id", "category", "name", name="uq_joblib_provider_name"
        ),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    room_id: str = Field(sa_type=sa.String(255))
    category: str = Field(sa_type=sa.String(255))
    name: str = Field(sa_type=sa.String(255))
    schema_: dict[str, Any] = Field(
        default_factory=dict, sa_column=sa.Column("schema", sa.JSON, nullable=False)
    )
    content_type: str = Field(sa_type=sa.String(255))
    # The worker serving it: its cleanup removes the provider.
    worker_id: uuid.UUID = Field(
        sa_column=sa.Column(
            sa.Uuid,
            sa.ForeignKey("joblib_worker.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        )
    )
    # The identity whose worker serves it: the one that may upload its results.
    owner_id: str = Field(sa_type=sa.String(255))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False)
    )

    @property
    def full_name(self) -> str:
        """The provider's wire name `<room_id>:<category>:<name>`."""
        return job_full_name(self.room_id, self.category, self.name)


# The Core tables behind the models, for the prebuilt statements of the hot paths.
JOB_TABLE: sa.Table = Job.__table__  # type: ignore[attr-defined]
WORKER_TABLE: sa.Table = Worker.__table__  # type: ignore[attr-defined]
LINK_TABLE: sa.Table = WorkerJobLink.__table__  # type: ignore[attr-defined]
TASK_TABLE: sa.Table = Task.__table__  # type: ignore[attr-defined]
IDEMPOTENCY_TABLE: sa.Table = IdempotencyKey.__table__  # type: ignore[attr-defined]
PROVIDER_TABLE: sa.Table = Provider.__table__  # type: ignore[attr-defined]
