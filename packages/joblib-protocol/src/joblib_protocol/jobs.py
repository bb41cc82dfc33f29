"""REST models of jobs."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field


class JobRegisterRequest(BaseModel):
    """Body of `PUT /rooms/{room_id}/jobs`."""

    model_config = ConfigDict(populate_by_name=True)

    category: str
    name: str
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    worker_id: UUID | None = None


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


class JobSummary(BaseModel):
    """A job as listed in a room."""

    full_name: str
    category: str
    name: str
    workers: list[UUID]
