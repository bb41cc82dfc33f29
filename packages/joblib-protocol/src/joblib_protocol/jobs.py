"""REST models of jobs."""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from joblib_protocol.tasks import TimeoutSeconds

DisconnectAction = Literal["fail", "requeue"]


class DisconnectPolicyRequest(BaseModel):
    """Ours: what happens to a job's tasks when their worker goes away.

    Fields left out take the server's defaults.
    """

    model_config = ConfigDict(extra="forbid")

    action: DisconnectAction | None = None
    max_attempts: int | None = Field(default=None, ge=1, le=1000)
    grace_seconds: float | None = Field(default=None, ge=0, le=86400)


class DisconnectPolicy(BaseModel):
    """Ours: the disconnect policy in force for a job."""

    action: DisconnectAction = Field(
        description="`fail` the lost task, or `requeue` it at its place in the queue."
    )
    max_attempts: int = Field(
        ge=1, description="With `requeue`: runs allowed before the task fails."
    )
    grace_seconds: float = Field(
        ge=0,
        description="How long a worker whose socket dropped may take to come back "
        "before the policy applies.",
    )


class JobRegisterRequest(BaseModel):
    """Body of `PUT /rooms/{room_id}/jobs`."""

    model_config = ConfigDict(populate_by_name=True)

    category: str
    name: str
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    worker_id: UUID | None = None
    on_disconnect: DisconnectPolicyRequest | None = None
    # Ours: limits every task of the job gets unless its submit overrides them.
    timeout_seconds: TimeoutSeconds | None = Field(
        default=None, description="Longest a task may run once started."
    )
    pending_timeout_seconds: TimeoutSeconds | None = Field(
        default=None, description="Longest a task may wait to be claimed."
    )


class JobResponse(BaseModel):
    """A job with the workers serving it."""

    model_config = ConfigDict(populate_by_name=True)

    id: UUID
    room_id: str
    category: str
    name: str
    full_name: str
    schema_: dict[str, Any] = Field(alias="schema")
    workers: list[UUID]
    worker_id: UUID | None = None
    on_disconnect: DisconnectPolicy | None = None
    timeout_seconds: float | None = None
    pending_timeout_seconds: float | None = None


class JobSummary(BaseModel):
    """A job as listed in a room."""

    full_name: str
    category: str
    name: str
    workers: list[UUID]
