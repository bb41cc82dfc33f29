"""The REST endpoints: parse a protocol model, execute one operation, answer.

`RestApi` holds the one route table and the worker, room and job endpoints; the
task endpoints live in `task_routes`, the provider endpoints in `provider_routes`,
and what they all share (identity, room, body, parameters) in `endpoints`.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from joblib_protocol import (
    JobRegisterRequest,
    PaginatedResponse,
    WorkerCleanupResponse,
    WorkerHeartbeatRequest,
)
from joblib_server import disconnects, jobs, rooms, stranded, workers
from joblib_server.endpoints import Endpoints, answer, path_uuid, route
from joblib_server.policy import Action
from joblib_server.provider_routes import ProviderRoutes
from joblib_server.settings import default_policy
from joblib_server.task_routes import TaskRoutes

if TYPE_CHECKING:
    from joblib_server.runtime import JobLib


class RestApi(Endpoints):
    """The `/v1/joblib` endpoints of one `JobLib`."""

    def __init__(self, joblib: JobLib) -> None:
        super().__init__(joblib)
        self.tasks = TaskRoutes(joblib)
        self.providers = ProviderRoutes(joblib)

    @property
    def routes(self) -> list[BaseRoute]:
        """Starlette routes, relative to the mount point (`/v1/joblib`)."""
        # Starlette tries them in this order: `/tasks/claim` before `/tasks/{task_id}`.
        return [
            route("/workers", POST=self.create_worker, GET=self.list_workers),
            route(
                "/workers/{worker_id}", PATCH=self.heartbeat, DELETE=self.delete_worker
            ),
            route("/rooms", GET=self.list_rooms),
            route("/rooms/{room_id}/jobs", PUT=self.register_job, GET=self.list_jobs),
            route("/rooms/{room_id}/jobs/{full_name}", GET=self.get_job),
            route(
                "/rooms/{room_id}/jobs/{full_name}/tasks", GET=self.tasks.list_job_tasks
            ),
            route("/rooms/{room_id}/workers", GET=self.list_room_workers),
            route("/rooms/{room_id}/tasks", GET=self.tasks.list_room_tasks),
            route("/rooms/{room_id}/tasks/{full_name}", POST=self.tasks.submit_task),
            route(
                "/rooms/{room_id}/tasks/{full_name}/batch", POST=self.tasks.submit_batch
            ),
            route("/tasks/claim", POST=self.tasks.claim_task),
            route(
                "/tasks/{task_id}",
                name="get_task",
                GET=self.tasks.get_task,
                PATCH=self.tasks.update_task,
            ),
            route("/tasks/{task_id}/progress", PUT=self.tasks.report_progress),
            route(
                "/rooms/{room_id}/providers",
                PUT=self.providers.register_provider,
                GET=self.providers.list_providers,
            ),
            route(
                "/rooms/{room_id}/providers/{full_name}",
                GET=self.providers.read_provider,
            ),
            route(
                "/rooms/{room_id}/providers/{full_name}/info",
                GET=self.providers.provider_info,
            ),
            route("/providers/{provider_id}", DELETE=self.providers.delete_provider),
            route(
                "/providers/{provider_id}/results", POST=self.providers.provider_result
            ),
            route(
                "/providers/{provider_id}/errors", POST=self.providers.provider_error
            ),
            route("/openapi.json", GET=self.openapi),
        ]

    # workers

    async def create_worker(self, request: Request) -> Response:
        """`POST /workers`."""
        identity = await self.identity(request)
        worker = await self.joblib.execute(workers.create_worker, identity)
        return answer(worker, 201)

    async def list_workers(self, request: Request) -> Response:
        """`GET /workers`."""
        await self.identity(request)
        limit, offset = self.page(request)
        async with self.joblib.database.read(slow=True) as session:
            items, total = await workers.list_workers(
                session, limit, offset, count_limit=self.count_limit
            )
        return answer(
            PaginatedResponse(items=items, total=total, limit=limit, offset=offset)
        )

    async def heartbeat(self, request: Request) -> Response:
        """`PATCH /workers/{worker_id}`; a body listing its tasks releases lost ones."""
        identity = await self.identity(request)
        worker_id = path_uuid(request, "worker_id")
        body = await self.body(request, WorkerHeartbeatRequest, optional=True)
        beat = await self.joblib.execute(
            stranded.heartbeat, worker_id, identity, body.tasks
        )
        return answer(beat)

    async def delete_worker(self, request: Request) -> Response:
        """`DELETE /workers/{worker_id}`."""
        identity = await self.identity(request)
        worker_id = path_uuid(request, "worker_id")
        receipt = await self.joblib.execute(
            disconnects.delete_worker, worker_id, identity
        )
        if not _wants_representation(request.headers.get("prefer")):
            return Response(status_code=204)
        body = WorkerCleanupResponse(
            worker_id=receipt.worker_id,
            failed=list(receipt.failed),
            requeued=list(receipt.requeued),
            jobs_removed=list(receipt.jobs_removed),
        )
        return answer(body, 200, {"Preference-Applied": "return=representation"})

    # rooms

    async def list_rooms(self, request: Request) -> Response:
        """`GET /rooms` (ours): the rooms with jobs or tasks the caller may read."""
        identity = await self.identity(request)
        limit, offset = self.page(request)
        async with self.joblib.database.read(slow=True) as session:
            found = await rooms.list_rooms(session)
        found = await rooms.readable(self.joblib.policy, identity, found)
        return answer(
            PaginatedResponse(
                items=found[offset : offset + limit],
                total=min(len(found), self.count_limit),
                limit=limit,
                offset=offset,
            )
        )

    # jobs

    async def register_job(self, request: Request) -> Response:
        """`PUT /rooms/{room_id}/jobs`."""
        identity = await self.identity(request)
        room_id = await self.in_room(request, identity, Action.REGISTER)
        body = await self.body(request, JobRegisterRequest)
        registration = await self.joblib.execute(
            jobs.register_job,
            identity,
            room_id,
            body,
            self.joblib.settings.allowed_categories,
        )
        return answer(registration.job, 201 if registration.created else 200)

    async def list_jobs(self, request: Request) -> Response:
        """`GET /rooms/{room_id}/jobs`."""
        room_id = await self.in_room(request, await self.identity(request), Action.READ)
        limit, offset = self.page(request)
        async with self.joblib.database.read(slow=True) as session:
            items, total = await jobs.list_jobs(
                session, room_id, limit, offset, count_limit=self.count_limit
            )
        return answer(
            PaginatedResponse(items=items, total=total, limit=limit, offset=offset)
        )

    async def get_job(self, request: Request) -> Response:
        """`GET /rooms/{room_id}/jobs/{full_name}`."""
        room_id = await self.in_room(request, await self.identity(request), Action.READ)
        async with self.joblib.database.read() as session:
            job = await jobs.get_job(
                session,
                room_id,
                request.path_params["full_name"],
                default_policy(self.joblib.settings),
            )
        return answer(job)

    async def list_room_workers(self, request: Request) -> Response:
        """`GET /rooms/{room_id}/workers`."""
        room_id = await self.in_room(request, await self.identity(request), Action.READ)
        limit, offset = self.page(request)
        async with self.joblib.database.read(slow=True) as session:
            items, total = await workers.list_workers(
                session, limit, offset, room_id=room_id, count_limit=self.count_limit
            )
        return answer(
            PaginatedResponse(items=items, total=total, limit=limit, offset=offset)
        )

    async def openapi(self, request: Request) -> Response:
        """`GET /openapi.json`: the OpenAPI description of these routes."""
        await self.identity(request)
        from joblib_server.openapi import openapi_document

        return Response(
            json.dumps(openapi_document(self.joblib.settings)),
            media_type="application/json",
        )


_RETURN_REPRESENTATION = re.compile(
    r"(?:^|[,;\s])return\s*=\s*\"?representation\b", re.IGNORECASE
)


def _wants_representation(header: str | None) -> bool:
    """Whether a `Prefer` header asks for `return=representation` (RFC 7240)."""
    return bool(header and _RETURN_REPRESENTATION.search(header))
