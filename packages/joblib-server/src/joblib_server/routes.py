"""The REST endpoints: parse a protocol model, execute one operation, answer."""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from joblib_protocol import (
    DEFAULT_PAGE_LIMIT,
    MAX_PAGE_LIMIT,
    REQUEST_HASH_HEADER,
    Emission,
    JobRegisterRequest,
    PaginatedResponse,
    PayloadTooLarge,
    ProviderErrorRequest,
    ProviderFailed,
    ProviderRegisterRequest,
    ProviderRequest,
    ProviderResultReady,
    ProviderTimeout,
    RequestTimeout,
    TaskBatchRequest,
    TaskClaimRequest,
    TaskClaimResponse,
    TaskProgressRequest,
    TaskResponse,
    TaskStatus,
    TaskSubmitRequest,
    TaskUpdateRequest,
    Unauthorized,
    ValidationFailed,
    WorkerCleanupResponse,
    WorkerHeartbeatRequest,
    canonical_params,
    is_terminal,
    provider_channel,
    request_hash,
    room_channel,
)
from joblib_server import (
    batches,
    disconnects,
    dispatch,
    idempotency,
    jobs,
    pages,
    progress,
    providers,
    rooms,
    stranded,
    tasks,
    workers,
)
from joblib_server.auth import Identity
from joblib_server.errors import ProblemError, forbidden
from joblib_server.policy import Action, authorize, restricts
from joblib_server.problems import validation_problem
from joblib_server.provider_results import Failure, result_key
from joblib_server.settings import default_policy

if TYPE_CHECKING:
    from joblib_server.runtime import JobLib

ModelT = TypeVar("ModelT", bound=BaseModel)
Endpoint = Callable[[Request], Awaitable[Response]]

MAX_JSON_DEPTH = 100
"""Deepest nesting of arrays and objects accepted in a request body."""

_SURROGATE = re.compile("[\ud800-\udfff]")

_PREFER_WAIT = re.compile(
    r"(?:^|[,;\s])wait\s*=\s*\"?(\d+(?:\.\d+)?)\"?", re.IGNORECASE
)


def _json(
    model: BaseModel, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        model.model_dump_json(by_alias=True),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )


def _invalid(where: str, msg: str) -> ProblemError:
    return ProblemError(
        ValidationFailed, f"{where}: {msg}", errors=[{"loc": [where], "msg": msg}]
    )


def _route(path: str, *, name: str | None = None, **handlers: Endpoint) -> Route:
    """One route per path, so a 405 answer's `Allow` names all of the path's methods."""

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return Route(path, endpoint, methods=list(handlers), name=name)


def _unstorable(data: Any) -> str | None:
    """Why parsed JSON could not be stored and sent back as JSON, or None if it can.

    Python's JSON reader accepts what neither the databases nor the JSON writers
    take: NaN and infinities, lone surrogates, and nesting deeper than pydantic
    serializes (about 250 levels) or a client parses (200).
    """
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return "strings must not hold lone surrogates"
        elif isinstance(value, float):
            if not math.isfinite(value):
                return "numbers must be finite (no NaN or Infinity)"
        elif isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                return f"nested deeper than {MAX_JSON_DEPTH} levels"
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                stack.append((key, depth))
                stack.append((item, depth + 1))
    return None


def _uuid(request: Request, name: str) -> uuid.UUID:
    raw = request.path_params[name]
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise _invalid(name, f"{raw!r} is not a UUID") from None


def _int_query(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _invalid(name, f"{raw!r} is not an integer") from None
    if not low <= value <= high:
        raise _invalid(name, f"must be between {low} and {high}")
    return value


def _page(request: Request, max_offset: int) -> tuple[int, int]:
    limit = _int_query(request, "limit", DEFAULT_PAGE_LIMIT, 0, MAX_PAGE_LIMIT)
    # The database walks every skipped row: a large offset costs as much as
    # reading them all (see `pages`).
    offset = _int_query(request, "offset", 0, 0, 2**63 - 1)
    if offset > max_offset:
        raise _invalid(
            "offset",
            f"must be at most {max_offset}: narrow the list instead "
            "(`?status=`, or one job's tasks)",
        )
    return limit, offset


def _idempotency_key(request: Request) -> str | None:
    raw = request.headers.get("idempotency-key")
    if raw is None:
        return None
    try:
        return idempotency.check_key(raw)
    except ValueError as exc:
        msg = str(exc)
        raise ProblemError(
            ValidationFailed,
            f"Idempotency-Key: {msg}",
            errors=[{"loc": ["header", "Idempotency-Key"], "msg": msg}],
        ) from None


def _status_filter(request: Request) -> TaskStatus | None:
    raw = request.query_params.get("status")
    if raw is None:
        return None
    try:
        return TaskStatus(raw)
    except ValueError:
        raise _invalid(
            "status", f"{raw!r} is not one of {[s.value for s in TaskStatus]}"
        ) from None


def prefer_wait(header: str | None, cap: float) -> float | None:
    """The `wait=N` of a `Prefer` header, capped; None when absent or unreadable."""
    if not header:
        return None
    match = _PREFER_WAIT.search(header)
    if match is None:
        return None
    value = float(match.group(1))
    if not math.isfinite(value):
        return None
    return min(value, cap)


class RestApi:
    """The `/v1/joblib` endpoints of one `JobLib`."""

    def __init__(self, joblib: JobLib) -> None:
        self.joblib = joblib

    @property
    def routes(self) -> list[BaseRoute]:
        """Starlette routes, relative to the mount point (`/v1/joblib`)."""
        return [
            _route("/workers", POST=self.create_worker, GET=self.list_workers),
            _route(
                "/workers/{worker_id}", PATCH=self.heartbeat, DELETE=self.delete_worker
            ),
            _route("/rooms", GET=self.list_rooms),
            _route("/rooms/{room_id}/jobs", PUT=self.register_job, GET=self.list_jobs),
            _route("/rooms/{room_id}/jobs/{full_name}", GET=self.get_job),
            _route("/rooms/{room_id}/jobs/{full_name}/tasks", GET=self.list_job_tasks),
            _route("/rooms/{room_id}/workers", GET=self.list_room_workers),
            _route("/rooms/{room_id}/tasks", GET=self.list_room_tasks),
            _route("/rooms/{room_id}/tasks/{full_name}", POST=self.submit_task),
            _route("/rooms/{room_id}/tasks/{full_name}/batch", POST=self.submit_batch),
            _route("/tasks/claim", POST=self.claim_task),
            _route(
                "/tasks/{task_id}",
                name="get_task",
                GET=self.get_task,
                PATCH=self.update_task,
            ),
            _route("/tasks/{task_id}/progress", PUT=self.report_progress),
            _route(
                "/rooms/{room_id}/providers",
                PUT=self.register_provider,
                GET=self.list_providers,
            ),
            _route("/rooms/{room_id}/providers/{full_name}", GET=self.read_provider),
            _route(
                "/rooms/{room_id}/providers/{full_name}/info", GET=self.provider_info
            ),
            _route("/providers/{provider_id}", DELETE=self.delete_provider),
            _route("/providers/{provider_id}/results", POST=self.provider_result),
            _route("/providers/{provider_id}/errors", POST=self.provider_error),
            _route("/openapi.json", GET=self.openapi),
        ]

    def page(self, request: Request) -> tuple[int, int]:
        """`?limit=` and `?offset=`, within their caps (422 beyond)."""
        return _page(request, self.joblib.settings.max_list_offset)

    @property
    def count_limit(self) -> int:
        """Where a list's count stops: the last item a client can page to."""
        return pages.count_limit(self.joblib.settings.max_list_offset)

    async def identity(self, request: Request) -> Identity:
        """The caller's identity, or the 401 problem."""
        identity = await self.joblib.auth.authenticate(request.headers)
        if identity is None:
            raise ProblemError(
                Unauthorized, "send a valid `Authorization: Bearer` token"
            )
        return identity

    async def in_room(
        self, request: Request, identity: Identity, action: Action
    ) -> str:
        """The path's `room_id`: 400 if malformed, 403/423 if the policy refuses."""
        room_id = jobs.check_room_id(request.path_params["room_id"])
        await authorize(self.joblib.policy, identity, room_id, action)
        return room_id

    async def raw_body(self, request: Request, limit: int) -> bytes:
        """Read the body as it is, within `limit` bytes (413) and the body timeout."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ProblemError(PayloadTooLarge, f"the body is over {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        timeout = self.joblib.settings.body_timeout_seconds
        try:
            # A body sent a byte at a time (slow-loris) must not hold a request
            # open for as long as its sender likes.
            with anyio.fail_after(timeout):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise ProblemError(
                            PayloadTooLarge, f"the body is over {limit} bytes"
                        )
                    chunks.append(chunk)
        except TimeoutError:
            raise ProblemError(
                RequestTimeout,
                f"the body did not arrive within {timeout:g} s",
                headers={"Connection": "close"},
            ) from None
        return b"".join(chunks)

    async def body(
        self,
        request: Request,
        model: type[ModelT],
        *,
        optional: bool = False,
        limit: int | None = None,
    ) -> ModelT:
        """Read and validate the JSON body, within `limit` bytes (`max_body_bytes`).

        With `optional`, an empty body stands for `{}`.
        """
        limit = self.joblib.settings.max_body_bytes if limit is None else limit
        raw = await self.raw_body(request, limit)
        try:
            data: Any = json.loads(raw) if raw.strip() else None
        except ValueError as exc:
            # Also bad UTF-8 and integers too long to read: both are ValueErrors.
            raise _invalid("body", f"not valid JSON: {exc}") from None
        except RecursionError:
            raise _invalid(
                "body", f"nested deeper than {MAX_JSON_DEPTH} levels"
            ) from None
        if data is None and optional:
            data = {}
        if not isinstance(data, dict):
            raise _invalid("body", "must be a JSON object")
        unstorable = _unstorable(data)
        if unstorable is not None:
            raise _invalid("body", unstorable)
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise validation_problem(exc, "body") from None

    # workers

    async def create_worker(self, request: Request) -> Response:
        """`POST /workers`."""
        identity = await self.identity(request)
        worker = await self.joblib.execute(workers.create_worker, identity)
        return _json(worker, 201)

    async def list_workers(self, request: Request) -> Response:
        """`GET /workers`."""
        await self.identity(request)
        limit, offset = self.page(request)
        async with self.joblib.database.read(slow=True) as session:
            items, total = await workers.list_workers(
                session, limit, offset, count_limit=self.count_limit
            )
        return _json(
            PaginatedResponse(items=items, total=total, limit=limit, offset=offset)
        )

    async def heartbeat(self, request: Request) -> Response:
        """`PATCH /workers/{worker_id}`; a body listing its tasks releases lost ones."""
        identity = await self.identity(request)
        worker_id = _uuid(request, "worker_id")
        body = await self.body(request, WorkerHeartbeatRequest, optional=True)
        beat = await self.joblib.execute(
            stranded.heartbeat, worker_id, identity, body.tasks
        )
        return _json(beat)

    async def delete_worker(self, request: Request) -> Response:
        """`DELETE /workers/{worker_id}`."""
        identity = await self.identity(request)
        worker_id = _uuid(request, "worker_id")
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
        return _json(body, 200, {"Preference-Applied": "return=representation"})

    # rooms

    async def list_rooms(self, request: Request) -> Response:
        """`GET /rooms` (ours): the rooms with jobs or tasks the caller may read."""
        identity = await self.identity(request)
        limit, offset = self.page(request)
        async with self.joblib.database.read(slow=True) as session:
            found = await rooms.list_rooms(session)
        found = await rooms.readable(self.joblib.policy, identity, found)
        return _json(
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
        return _json(registration.job, 201 if registration.created else 200)

    async def list_jobs(self, request: Request) -> Response:
        """`GET /rooms/{room_id}/jobs`."""
        room_id = await self.in_room(request, await self.identity(request), Action.READ)
        limit, offset = self.page(request)
        async with self.joblib.database.read(slow=True) as session:
            items, total = await jobs.list_jobs(
                session, room_id, limit, offset, count_limit=self.count_limit
            )
        return _json(
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
        return _json(job)

    async def list_room_workers(self, request: Request) -> Response:
        """`GET /rooms/{room_id}/workers`."""
        room_id = await self.in_room(request, await self.identity(request), Action.READ)
        limit, offset = self.page(request)
        async with self.joblib.database.read(slow=True) as session:
            items, total = await workers.list_workers(
                session, limit, offset, room_id=room_id, count_limit=self.count_limit
            )
        return _json(
            PaginatedResponse(items=items, total=total, limit=limit, offset=offset)
        )

    # tasks

    async def list_room_tasks(self, request: Request) -> Response:
        """`GET /rooms/{room_id}/tasks`."""
        return await self._list_tasks(request, None)

    async def list_job_tasks(self, request: Request) -> Response:
        """`GET /rooms/{room_id}/jobs/{full_name}/tasks`."""
        return await self._list_tasks(request, request.path_params["full_name"])

    async def _list_tasks(self, request: Request, full_name: str | None) -> Response:
        room_id = await self.in_room(request, await self.identity(request), Action.READ)
        limit, offset = self.page(request)
        status = _status_filter(request)
        async with self.joblib.database.read(slow=True) as session:
            items, total = await tasks.list_tasks(
                session,
                room_id,
                limit,
                offset,
                full_name=full_name,
                status=status,
                count_limit=self.count_limit,
            )
        return _json(
            PaginatedResponse(items=items, total=total, limit=limit, offset=offset)
        )

    async def submit_task(self, request: Request) -> Response:
        """`POST /rooms/{room_id}/tasks/{full_name}`."""
        identity = await self.identity(request)
        room_id = await self.in_room(request, identity, Action.SUBMIT)
        body = await self.body(request, TaskSubmitRequest)
        key = _idempotency_key(request)
        full_name = request.path_params["full_name"]
        internal = self.joblib.internal_jobs
        limits = tasks.TaskLimits(body.timeout_seconds, body.pending_timeout_seconds)
        replayed = False
        if key is None:
            task = await self.joblib.execute(
                tasks.submit_task,
                identity,
                room_id,
                full_name,
                body.payload,
                internal_jobs=internal,
                limits=limits,
            )
        else:
            task, replayed = await self.joblib.execute(
                idempotency.submit_once,
                identity,
                room_id,
                full_name,
                body.payload,
                key,
                internal_jobs=internal,
                limits=limits,
            )
        # What url_for("get_task") gives, without matching the route table again:
        # root_path holds the mount point (and any proxy prefix).
        location = f"{request.scope.get('root_path', '')}/tasks/{task.id}"
        headers = {"Location": location, "Retry-After": "1"}
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        return _json(task, 202, headers)

    async def submit_batch(self, request: Request) -> Response:
        """`POST /rooms/{room_id}/tasks/{full_name}/batch` (ours): many tasks."""
        identity = await self.identity(request)
        room_id = await self.in_room(request, identity, Action.SUBMIT)
        settings = self.joblib.settings
        if "idempotency-key" in request.headers:
            # One key names one task; a batch would need a record of its own.
            msg = "not taken by a batch submit: send the batch again only when "
            msg += "the tasks it made are not listed (GET /rooms/{room_id}/tasks)"
            raise ProblemError(
                ValidationFailed,
                f"Idempotency-Key: {msg}",
                errors=[{"loc": ["header", "Idempotency-Key"], "msg": msg}],
            )
        limit = settings.max_body_bytes * batches.BODY_FACTOR
        body = await self.body(request, TaskBatchRequest, limit=limit)
        batches.check_batch_size(len(body.payloads), settings.max_batch_size)
        made = await self.joblib.execute(
            batches.submit_batch,
            identity,
            room_id,
            request.path_params["full_name"],
            body.payloads,
            internal_jobs=self.joblib.internal_jobs,
            limits=tasks.TaskLimits(body.timeout_seconds, body.pending_timeout_seconds),
        )
        return _json(made, 202)

    async def claim_task(self, request: Request) -> Response:
        """`POST /tasks/claim`; with `Prefer: wait=N`, held until a task comes."""
        identity = await self.identity(request)
        body = await self.body(request, TaskClaimRequest)
        settings = self.joblib.settings
        wait = prefer_wait(
            request.headers.get("prefer"), settings.long_poll_max_wait_seconds
        )

        skip_rooms: frozenset[str] = frozenset()
        if restricts(self.joblib.policy, identity):
            skip_rooms = await self._unservable_rooms(identity, body.worker_id)

        async def claim() -> dispatch.Claim:
            return await self.joblib.execute(
                tasks.claim_task,
                identity,
                body.worker_id,
                start=body.start,
                request_id=body.request_id,
                skip_rooms=skip_rooms,
            )

        if not wait:
            # No wait asked, or the server caps it at nothing: answer at once,
            # without Preference-Applied, so the client knows to pause itself.
            return _json(TaskClaimResponse(task=(await claim()).task))
        held = await dispatch.hold_claim(
            claim,
            self.joblib.claims,
            body.worker_id,
            wait=wait,
            recheck=settings.long_poll_recheck_seconds,
            client_gone=request.is_disconnected,
        )
        if held is None:
            return Response(status_code=204)
        applied = {"Preference-Applied": f"wait={_format_wait(wait)}"}
        return _json(TaskClaimResponse(task=held.task), 200, applied)

    async def _unservable_rooms(
        self, identity: Identity, worker_id: uuid.UUID
    ) -> frozenset[str]:
        """The rooms of the worker's jobs the policy refuses it; 403 if it is all."""
        async with self.joblib.database.read() as session:
            rooms = await workers.served_rooms(session, worker_id)
        policy = self.joblib.policy
        refused = frozenset(
            [r for r in rooms if not await policy.allows(identity, r, Action.SERVE)]
        )
        if refused and refused == rooms:
            raise forbidden(f"{identity.id!r} may not serve the rooms of {worker_id}")
        return refused

    async def get_task(self, request: Request) -> Response:
        """`GET /tasks/{task_id}`, long-polling with `Prefer: wait=N`."""
        identity = await self.identity(request)
        task_id = _uuid(request, "task_id")
        settings = self.joblib.settings
        wait = prefer_wait(
            request.headers.get("prefer"), settings.long_poll_max_wait_seconds
        )

        async def read() -> TaskResponse:
            async with self.joblib.database.read() as session:
                return await tasks.get_task(session, task_id)

        task = await read()
        # Checked before any wait: the room of a task never changes.
        await authorize(self.joblib.policy, identity, task.room_id, Action.READ)
        # Preference-Applied tells the client the server waited: a task already
        # terminal, or `wait=0`, is answered at once and without it.
        if not wait or is_terminal(task.status):
            return _json(task)
        task = await dispatch.wait_until_terminal(
            read,
            self.joblib.waiters,
            task_id,
            wait=wait,
            recheck=settings.long_poll_recheck_seconds,
        )
        return _json(task, 200, {"Preference-Applied": f"wait={_format_wait(wait)}"})

    async def update_task(self, request: Request) -> Response:
        """`PATCH /tasks/{task_id}`."""
        identity = await self.identity(request)
        task_id = _uuid(request, "task_id")
        settings = self.joblib.settings
        # Room for a result as large as allowed, besides the rest of the body.
        limit = settings.max_body_bytes + settings.max_result_bytes
        body = await self.body(request, TaskUpdateRequest, limit=limit)
        await self.task_in_reach(identity, task_id)
        task = await self.joblib.execute(tasks.update_task, identity, task_id, body)
        return _json(task)

    async def report_progress(self, request: Request) -> Response:
        """`PUT /tasks/{task_id}/progress`."""
        identity = await self.identity(request)
        task_id = _uuid(request, "task_id")
        body = await self.body(request, TaskProgressRequest)
        await self.task_in_reach(identity, task_id)
        await self.joblib.execute(progress.report_progress, identity, task_id, body)
        return Response(status_code=204)

    async def task_in_reach(self, identity: Identity, task_id: uuid.UUID) -> None:
        """403/423 if the access policy refuses the task's room to `identity`."""
        if restricts(self.joblib.policy, identity):
            async with self.joblib.database.read() as session:
                room_id = await tasks.task_room(session, task_id)
            await authorize(self.joblib.policy, identity, room_id, Action.READ)

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
        return _json(registration.provider, 201 if registration.created else 200)

    async def list_providers(self, request: Request) -> Response:
        """`GET /rooms/{room_id}/providers`."""
        room_id = await self.in_room(request, await self.identity(request), Action.READ)
        limit, offset = self.page(request)
        async with self.joblib.database.read(slow=True) as session:
            items, total = await providers.list_providers(
                session, room_id, limit, offset, count_limit=self.count_limit
            )
        return _json(
            PaginatedResponse(items=items, total=total, limit=limit, offset=offset)
        )

    async def provider_info(self, request: Request) -> Response:
        """`GET /rooms/{room_id}/providers/{full_name}/info`."""
        room_id = await self.in_room(request, await self.identity(request), Action.READ)
        async with self.joblib.database.read() as session:
            provider = await providers.find_provider(
                session, room_id, request.path_params["full_name"]
            )
        return _json(providers.provider_response(provider))

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
                f"{_format_wait(wait)} s",
                headers={"Retry-After": "2"},
            )
        applied = (
            None
            if asked is None
            else {"Preference-Applied": f"wait={_format_wait(wait)}"}
        )
        return Response(answer, media_type=media, headers=applied)

    async def _own_provider(
        self, request: Request, identity: Identity
    ) -> tuple[Any, str]:
        """The path's provider, which the caller must own; and `X-Request-Hash`."""
        provider_id = _uuid(request, "provider_id")
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
        provider_id = _uuid(request, "provider_id")
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


def _format_wait(wait: float) -> str:
    return str(int(wait)) if float(wait).is_integer() else f"{wait:g}"
