"""The REST endpoints: protocol model in, one operation, commit, emit, model out."""

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
    JobRegisterRequest,
    PaginatedResponse,
    PayloadTooLarge,
    TaskClaimRequest,
    TaskClaimResponse,
    TaskStatus,
    TaskSubmitRequest,
    TaskUpdateRequest,
    Unauthorized,
    ValidationFailed,
    WorkerResponse,
    is_terminal,
)
from joblib_server import jobs, tasks, workers
from joblib_server.auth import Identity
from joblib_server.errors import ProblemError
from joblib_server.problems import validation_problem

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


def _page(request: Request) -> tuple[int, int]:
    limit = _int_query(request, "limit", DEFAULT_PAGE_LIMIT, 0, MAX_PAGE_LIMIT)
    # Offsets beyond any real table only make the database scan for nothing.
    offset = _int_query(request, "offset", 0, 0, 2**31 - 1)
    return limit, offset


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
            _route("/rooms/{room_id}/jobs", PUT=self.register_job, GET=self.list_jobs),
            _route("/rooms/{room_id}/jobs/{full_name}", GET=self.get_job),
            _route("/rooms/{room_id}/jobs/{full_name}/tasks", GET=self.list_job_tasks),
            _route("/rooms/{room_id}/workers", GET=self.list_room_workers),
            _route("/rooms/{room_id}/tasks", GET=self.list_room_tasks),
            _route("/rooms/{room_id}/tasks/{full_name}", POST=self.submit_task),
            _route("/tasks/claim", POST=self.claim_task),
            _route(
                "/tasks/{task_id}",
                name="get_task",
                GET=self.get_task,
                PATCH=self.update_task,
            ),
            _route("/openapi.json", GET=self.openapi),
        ]

    async def identity(self, request: Request) -> Identity:
        """The caller's identity, or the 401 problem."""
        identity = await self.joblib.auth.authenticate(request.headers)
        if identity is None:
            raise ProblemError(
                Unauthorized, "send a valid `Authorization: Bearer` token"
            )
        return identity

    async def body(self, request: Request, model: type[ModelT]) -> ModelT:
        """Read and validate the JSON body, within the size limit."""
        limit = self.joblib.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ProblemError(PayloadTooLarge, f"the body is over {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ProblemError(PayloadTooLarge, f"the body is over {limit} bytes")
            chunks.append(chunk)
        raw = b"".join(chunks)
        try:
            data: Any = json.loads(raw) if raw.strip() else None
        except ValueError as exc:
            # Also bad UTF-8 and integers too long to read: both are ValueErrors.
            raise _invalid("body", f"not valid JSON: {exc}") from None
        except RecursionError:
            raise _invalid(
                "body", f"nested deeper than {MAX_JSON_DEPTH} levels"
            ) from None
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
        worker = await self.joblib.write(
            lambda session: workers.create_worker(session, identity)
        )
        return _json(
            WorkerResponse(id=worker.id, last_heartbeat=worker.last_heartbeat), 201
        )

    async def list_workers(self, request: Request) -> Response:
        """`GET /workers`."""
        await self.identity(request)
        limit, offset = _page(request)
        async with self.joblib.database.read() as session:
            items, total = await workers.list_workers(session, limit, offset)
        return _json(
            PaginatedResponse(items=items, total=total, limit=limit, offset=offset)
        )

    async def heartbeat(self, request: Request) -> Response:
        """`PATCH /workers/{worker_id}`."""
        identity = await self.identity(request)
        worker_id = _uuid(request, "worker_id")
        beat = await self.joblib.write(
            lambda session: workers.heartbeat(session, worker_id, identity)
        )
        return _json(beat)

    async def delete_worker(self, request: Request) -> Response:
        """`DELETE /workers/{worker_id}`."""
        identity = await self.identity(request)
        worker_id = _uuid(request, "worker_id")
        emissions = await self.joblib.write(
            lambda session: workers.delete_worker(session, worker_id, identity)
        )
        self.joblib.claims.release(worker_id)
        await self.joblib.publish(emissions)
        return Response(status_code=204)

    # jobs

    async def register_job(self, request: Request) -> Response:
        """`PUT /rooms/{room_id}/jobs`."""
        identity = await self.identity(request)
        body = await self.body(request, JobRegisterRequest)
        room_id = request.path_params["room_id"]
        registration = await self.joblib.write(
            lambda session: jobs.register_job(
                session,
                identity,
                room_id,
                body,
                self.joblib.settings.allowed_categories,
            )
        )
        await self.joblib.publish(registration.emissions)
        return _json(registration.job, 201 if registration.created else 200)

    async def list_jobs(self, request: Request) -> Response:
        """`GET /rooms/{room_id}/jobs`."""
        await self.identity(request)
        limit, offset = _page(request)
        async with self.joblib.database.read() as session:
            items, total = await jobs.list_jobs(
                session, request.path_params["room_id"], limit, offset
            )
        return _json(
            PaginatedResponse(items=items, total=total, limit=limit, offset=offset)
        )

    async def get_job(self, request: Request) -> Response:
        """`GET /rooms/{room_id}/jobs/{full_name}`."""
        await self.identity(request)
        async with self.joblib.database.read() as session:
            job = await jobs.get_job(
                session,
                request.path_params["room_id"],
                request.path_params["full_name"],
            )
        return _json(job)

    async def list_room_workers(self, request: Request) -> Response:
        """`GET /rooms/{room_id}/workers`."""
        await self.identity(request)
        limit, offset = _page(request)
        async with self.joblib.database.read() as session:
            items, total = await workers.list_workers(
                session, limit, offset, room_id=request.path_params["room_id"]
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
        await self.identity(request)
        limit, offset = _page(request)
        status = _status_filter(request)
        async with self.joblib.database.read() as session:
            items, total = await tasks.list_tasks(
                session,
                request.path_params["room_id"],
                limit,
                offset,
                full_name=full_name,
                status=status,
            )
        return _json(
            PaginatedResponse(items=items, total=total, limit=limit, offset=offset)
        )

    async def submit_task(self, request: Request) -> Response:
        """`POST /rooms/{room_id}/tasks/{full_name}`."""
        identity = await self.identity(request)
        body = await self.body(request, TaskSubmitRequest)
        room_id = request.path_params["room_id"]
        full_name = request.path_params["full_name"]
        change = await self.joblib.write(
            lambda session: tasks.submit_task(
                session,
                identity,
                room_id,
                full_name,
                body.payload,
                internal_jobs=self.joblib.internal_jobs,
            )
        )
        await self.joblib.publish(change.emissions)
        assert change.task is not None
        # What url_for("get_task") gives, without matching the route table again:
        # root_path holds the mount point (and any proxy prefix).
        location = f"{request.scope.get('root_path', '')}/tasks/{change.task.id}"
        return _json(change.task, 202, {"Location": location, "Retry-After": "1"})

    async def claim_task(self, request: Request) -> Response:
        """`POST /tasks/claim`; with `Prefer: wait=N`, parked until a task comes."""
        identity = await self.identity(request)
        body = await self.body(request, TaskClaimRequest)
        settings = self.joblib.settings
        wait = prefer_wait(
            request.headers.get("prefer"), settings.long_poll_max_wait_seconds
        )

        async def claim() -> tasks.TaskChange:
            return await self.joblib.write(
                lambda session: tasks.claim_task(
                    session, identity, body.worker_id, start=body.start
                )
            )

        if not wait:
            # No wait asked, or the server caps it at nothing: answer at once,
            # without Preference-Applied, so the client knows to pause itself.
            change = await claim()
            await self.joblib.publish(change.emissions)
            return _json(TaskClaimResponse(task=change.task))
        deadline = anyio.current_time() + wait
        claims = self.joblib.claims
        jobs = claims.known_jobs(body.worker_id)
        woken_for: str | None = None  # the job whose new task woke this claim
        while True:
            # Parked before claiming, so a task submitted in between still wakes us.
            with claims.park(body.worker_id, jobs) as parked:
                change = await claim()
                if change.task is not None and woken_for not in (
                    None,
                    change.task.job_name,
                ):
                    # We took an older task of another job: the one that woke us
                    # still waits for a claim.
                    claims.wake(woken_for)
                remaining = deadline - anyio.current_time()
                if change.task is not None or remaining <= 0:
                    break
                if set(change.jobs) != set(jobs):
                    # Parked on the wrong jobs (or none yet): park on the right
                    # ones and claim again, so nothing submitted meanwhile is missed.
                    jobs = change.jobs
                    claims.remember(body.worker_id, jobs)
                    continue
                # The re-check also catches tasks submitted in other processes.
                with anyio.move_on_after(
                    min(remaining, settings.long_poll_recheck_seconds)
                ):
                    await parked.woken.wait()
                woken_for = parked.woken_for
            if await request.is_disconnected():
                # Nobody would receive a task claimed now: let another claim it.
                if woken_for is not None:
                    claims.wake(woken_for)
                return Response(status_code=204)
        await self.joblib.publish(change.emissions)
        applied = {"Preference-Applied": f"wait={_format_wait(wait)}"}
        return _json(TaskClaimResponse(task=change.task), 200, applied)

    async def get_task(self, request: Request) -> Response:
        """`GET /tasks/{task_id}`, long-polling with `Prefer: wait=N`."""
        await self.identity(request)
        task_id = _uuid(request, "task_id")
        settings = self.joblib.settings
        wait = prefer_wait(
            request.headers.get("prefer"), settings.long_poll_max_wait_seconds
        )
        deadline = anyio.current_time() + (wait or 0)
        while True:
            # Watch before reading, so a change committed in between still wakes us.
            with self.joblib.waiters.watch(task_id) as finished:
                async with self.joblib.database.read() as session:
                    task = await tasks.get_task(session, task_id)
                remaining = deadline - anyio.current_time()
                if wait is None or is_terminal(task.status) or remaining <= 0:
                    break
                # No connection is held while waiting; the re-check sees changes
                # made by other server processes.
                with anyio.move_on_after(
                    min(remaining, settings.long_poll_recheck_seconds)
                ):
                    await finished.wait()
        if wait is None:
            return _json(task)
        return _json(task, 200, {"Preference-Applied": f"wait={_format_wait(wait)}"})

    async def update_task(self, request: Request) -> Response:
        """`PATCH /tasks/{task_id}`."""
        identity = await self.identity(request)
        task_id = _uuid(request, "task_id")
        body = await self.body(request, TaskUpdateRequest)
        change = await self.joblib.write(
            lambda session: tasks.update_task(session, identity, task_id, body)
        )
        await self.joblib.publish(change.emissions)
        assert change.task is not None
        return _json(change.task)

    async def openapi(self, request: Request) -> Response:
        """`GET /openapi.json`: the OpenAPI description of these routes."""
        await self.identity(request)
        from joblib_server.openapi import openapi_document

        return Response(
            json.dumps(openapi_document(self.joblib.settings)),
            media_type="application/json",
        )


def _format_wait(wait: float) -> str:
    return str(int(wait)) if float(wait).is_integer() else f"{wait:g}"
