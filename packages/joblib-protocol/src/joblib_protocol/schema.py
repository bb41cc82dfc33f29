"""JSON Schemas of every wire model, for implementations in other languages."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from joblib_protocol.events import CLIENT_EVENTS, SERVER_EVENTS, JoinAck
from joblib_protocol.jobs import JobRegisterRequest, JobResponse, JobSummary
from joblib_protocol.pages import PaginatedResponse
from joblib_protocol.problems import ProblemDetail
from joblib_protocol.providers import (
    ProviderErrorRequest,
    ProviderRegisterRequest,
    ProviderResponse,
)
from joblib_protocol.rooms import RoomSummary
from joblib_protocol.tasks import (
    TaskBatchRequest,
    TaskBatchResponse,
    TaskClaimRequest,
    TaskClaimResponse,
    TaskProgress,
    TaskProgressRequest,
    TaskResponse,
    TaskSubmitRequest,
    TaskUpdateRequest,
)
from joblib_protocol.workers import (
    WorkerCleanupResponse,
    WorkerHeartbeatRequest,
    WorkerResponse,
    WorkerSummary,
)

REST_MODELS: tuple[type[BaseModel], ...] = (
    JobRegisterRequest,
    JobResponse,
    JobSummary,
    WorkerResponse,
    WorkerSummary,
    WorkerCleanupResponse,
    WorkerHeartbeatRequest,
    TaskSubmitRequest,
    TaskBatchRequest,
    TaskBatchResponse,
    TaskResponse,
    TaskClaimRequest,
    TaskClaimResponse,
    TaskUpdateRequest,
    TaskProgressRequest,
    TaskProgress,
    RoomSummary,
    ProviderRegisterRequest,
    ProviderResponse,
    ProviderErrorRequest,
    PaginatedResponse[JobSummary],
    PaginatedResponse[WorkerSummary],
    PaginatedResponse[TaskResponse],
    PaginatedResponse[RoomSummary],
    PaginatedResponse[ProviderResponse],
    ProblemDetail,
)


def json_schemas() -> dict[str, Any]:
    """Return `{"rest": {model: schema}, "events": {...}, "acks": {...}}`.

    `events` by event name; `acks`, the answers a server gives to client events,
    by the event they answer.
    """
    rest = {
        model.__name__: model.model_json_schema(by_alias=True) for model in REST_MODELS
    }
    events = {
        event.event_name(): event.model_json_schema(by_alias=True)
        for event in (*SERVER_EVENTS, *CLIENT_EVENTS)
    }
    join = JoinAck.model_json_schema(by_alias=True)
    acks = {"join_job_room": join, "join_provider_room": join}
    return {"rest": rest, "events": events, "acks": acks}
