"""The REST endpoints: parse a protocol model, execute one operation, answer."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from joblib_protocol import (
    REQUEST_HASH_HEADER,
    Emission,
    JobRegisterRequest,
    PaginatedResponse,
    ProviderErrorRequest,
    ProviderFailed,
    ProviderRegisterRequest,
    ProviderRequest,
    ProviderResultReady,
    ProviderTimeout,
    ValidationFailed,
    WorkerCleanupResponse,
    WorkerHeartbeatRequest,
    canonical_params,
    provider_channel,
    request_hash,
    room_channel,
)
from joblib_server import (
    disconnects,
    jobs,
    providers,
    rooms,
    stranded,
    workers,
)
from joblib_server.auth import Identity
from joblib_server.endpoints import (
    Endpoints,
    answer,
    format_wait,
    path_uuid,
    prefer_wait,
    route,
)
from joblib_server.errors import ProblemError, forbidden
from joblib_server.policy import Action, authorize, restricts
from joblib_server.provider_results import Failure, result_key
from joblib_server.settings import default_policy
from joblib_server.task_routes import TaskRoutes

if TYPE_CHECKING:
    from joblib_server.runtime import JobLib


class RestApi(Endpoints):
    """The `/v1/joblib` endpoints of one `JobLib`."""

    def __init__(self, joblib: JobLib) -> None:
        super().__init__(joblib)
        self.tasks = TaskRoutes(joblib)

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
                PUT=self.register_provider,
                GET=self.list_providers,
            ),
            route("/rooms/{room_id}/providers/{full_name}", GET=self.read_provider),
            route(
                "/rooms/{room_id}/providers/{full_name}/info", GET=self.provider_info
            ),
            route("/providers/{provider_id}", DELETE=self.delete_provider),
            route("/providers/{provider_id}/results", POST=self.provider_result),
            route("/providers/{provider_id}/errors", POST=self.provider_error),
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

    # providers

    async def register_provider(self, request: Request) -> Response:
        """`PUT /rooms/{room_id}/providers`."""
        identity = await self.identity(request)
        room_id = await self.in_room(request, identity, Action.REGISTER)
        body = await self.body(request, ProviderRegisterRequest)
        registration = await self.joblib.execute(
            providers.register_provider,
            identity,
            room_id,
            body,
            self.joblib.settings.allowed_provider_categories,
        )
        return answer(registration.provider, 201 if registration.created else 200)

    async def list_providers(self, request: Request) -> Response:
        """`GET /rooms/{room_id}/providers`."""
        room_id = await self.in_room(request, await self.identity(request), Action.READ)
        limit, offset = self.page(request)
        async with self.joblib.database.read(slow=True) as session:
            items, total = await providers.list_providers(
                session, room_id, limit, offset, count_limit=self.count_limit
            )
        return answer(
            PaginatedResponse(items=items, total=total, limit=limit, offset=offset)
        )

    async def provider_info(self, request: Request) -> Response:
        """`GET /rooms/{room_id}/providers/{full_name}/info`."""
        room_id = await self.in_room(request, await self.identity(request), Action.READ)
        async with self.joblib.database.read() as session:
            provider = await providers.find_provider(
                session, room_id, request.path_params["full_name"]
            )
        return answer(providers.provider_response(provider))

    async def read_provider(self, request: Request) -> Response:
        """`GET /rooms/{room_id}/providers/{full_name}?<params>`: the result's bytes.

        From the cache at once; else one `provider_request` for identical reads
        in flight, and a wait (`Prefer: wait=N`) for the worker's answer.
        """
        room_id = await self.in_room(request, await self.identity(request), Action.READ)
        full_name = request.path_params["full_name"]
        async with self.joblib.database.read() as session:
            provider = await providers.find_provider(session, room_id, full_name)
        params = dict(request.query_params)
        providers.check_params(provider.schema_, params)
        digest = request_hash(params)
        key = result_key(provider.id, digest)
        results = self.joblib.provider_results
        media = provider.content_type
        cached = await results.get(key)
        if cached is not None:
            return Response(cached, media_type=media)
        settings = self.joblib.settings
        asked = prefer_wait(
            request.headers.get("prefer"), settings.provider_long_poll_max_seconds
        )
        wait = asked
        if wait is None:
            wait = min(
                settings.provider_long_poll_default_seconds,
                settings.provider_long_poll_max_seconds,
            )
        if self.joblib.stopping:
            wait = 0  # a stopping server holds no one (see `begin_shutdown`)
        ask = Emission(
            ProviderRequest(
                request_id=digest,
                provider_name=provider.full_name,
                params=canonical_params(params),
            ),
            provider_channel(provider.full_name),
        )

        async def dispatch() -> None:
            if await results.acquire(key, settings.provider_inflight_ttl_seconds):
                await self.joblib.emitter.emit([ask])

        answer = await results.wait(key, wait, dispatch)
        if isinstance(answer, Failure):
            raise ProblemError(ProviderFailed, answer.message)
        if answer is None:
            raise ProblemError(
                ProviderTimeout,
                f"provider {provider.full_name!r} did not answer within "
                f"{format_wait(wait)} s",
                headers={"Retry-After": "2"},
            )
        applied = (
            None
            if asked is None
            else {"Preference-Applied": f"wait={format_wait(wait)}"}
        )
        return Response(answer, media_type=media, headers=applied)

    async def _own_provider(
        self, request: Request, identity: Identity
    ) -> tuple[Any, str]:
        """The path's provider, which the caller must own; and `X-Request-Hash`."""
        provider_id = path_uuid(request, "provider_id")
        async with self.joblib.database.read() as session:
            provider = await providers.get_provider(session, provider_id)
        if provider.owner_id != identity.id:
            raise forbidden(f"provider {provider_id} belongs to another identity")
        if restricts(self.joblib.policy, identity):
            await authorize(
                self.joblib.policy, identity, provider.room_id, Action.SERVE
            )
        return provider, request.headers.get(REQUEST_HASH_HEADER.lower(), "")

    async def provider_result(self, request: Request) -> Response:
        """`POST /providers/{provider_id}/results`: the raw bytes of one answer."""
        identity = await self.identity(request)
        provider, digest = await self._own_provider(request, identity)
        if not 0 < len(digest) <= 128:
            raise ProblemError(
                ValidationFailed,
                f"send the hash of the read in {REQUEST_HASH_HEADER}",
                errors=[{"loc": ["header", REQUEST_HASH_HEADER], "msg": "1-128 chars"}],
            )
        settings = self.joblib.settings
        data = await self.raw_body(request, settings.max_provider_result_bytes)
        await self.joblib.provider_results.store(
            result_key(provider.id, digest), data, settings.provider_result_ttl_seconds
        )
        ready = ProviderResultReady(
            provider_name=provider.full_name, request_hash=digest
        )
        await self.joblib.emitter.emit(
            [Emission(ready, room_channel(provider.room_id))]
        )
        return Response(status_code=204)

    async def provider_error(self, request: Request) -> Response:
        """`POST /providers/{provider_id}/errors` (ours): a read that failed."""
        identity = await self.identity(request)
        provider, _ = await self._own_provider(request, identity)
        body = await self.body(request, ProviderErrorRequest)
        await self.joblib.provider_results.fail(
            result_key(provider.id, body.request_hash), body.error
        )
        return Response(status_code=204)

    async def delete_provider(self, request: Request) -> Response:
        """`DELETE /providers/{provider_id}`."""
        identity = await self.identity(request)
        provider_id = path_uuid(request, "provider_id")
        await self.joblib.execute(providers.delete_provider, identity, provider_id)
        return Response(status_code=204)

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
