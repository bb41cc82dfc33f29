"""The fake server as an ASGI app: the protocol's REST routes and Socket.IO events
over the in-memory `World`, recording everything a client sends.

It is a reference, not a product: one process, no database, no sweeper, no
grace times, no claim times (so a heartbeat's `tasks` release nothing; they are
only answered with `cancelled`). It holds claims and long-polls (`Prefer:
wait=N`), emits after each change, checks trust on `join_job_room`, answers a
submit's `Idempotency-Key` again, cleans up a worker whose socket drops, checks
payloads and schemas, keeps results and progress (its events at most
`PROGRESS_INTERVAL` apart per task), tells workers of cancels, and fails tasks
past their time limits on a timer.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar

import socketio
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from joblib_conformance.fake.recording import Recording, RestCall, SocketCall
from joblib_conformance.fake.state import (
    MAX_RESULT_BYTES,
    Identity,
    Problem,
    World,
    check_room,
    now,
)
from joblib_protocol import (
    API_PREFIX,
    DEFAULT_PAGE_LIMIT,
    MAX_PAGE_LIMIT,
    PROBLEM_CONTENT_TYPE,
    DisconnectPolicy,
    Emission,
    ErrorCode,
    Forbidden,
    JobFullName,
    JobRegisterRequest,
    JoinJobRoom,
    JoinRoom,
    LeaveJobRoom,
    LeaveRoom,
    MethodNotAllowed,
    NotFound,
    PaginatedResponse,
    PayloadTooLarge,
    TaskClaimRequest,
    TaskClaimResponse,
    TaskProgressEvent,
    TaskProgressRequest,
    TaskStatus,
    TaskStatusEvent,
    TaskSubmitRequest,
    TaskUpdateRequest,
    Unauthorized,
    ValidationFailed,
    WorkerHeartbeatRequest,
    WorkerNotFound,
    is_terminal,
    job_channel,
    room_channel,
    worker_channel,
)

ModelT = TypeVar("ModelT", bound=BaseModel)

MAX_BODY_BYTES = 1_048_576
PROGRESS_INTERVAL = 0.1
"""Seconds between two `task_progress_event`s of one task, at the least."""
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
MAX_WAIT_SECONDS = 30.0
_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*\"?(\d+(?:\.\d+)?)\"?", re.IGNORECASE)


@dataclass
class Answer:
    """What an endpoint answers: a status, a JSON body, extra headers."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Call:
    """One request as an endpoint sees it."""

    identity: Identity
    params: dict[str, str]
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: Any


Endpoint = Callable[[Call], Awaitable[Answer]]


def _dump(model: BaseModel) -> Any:
    return model.model_dump(mode="json", by_alias=True)


def _problem(kind: type[Any], detail: str, **extra: Any) -> Answer:
    return Answer(kind.status, _dump(kind.document(detail, **extra)))


def _invalid(where: str, msg: str) -> Problem:
    return Problem(ValidationFailed, f"{where}: {msg}", [{"loc": [where], "msg": msg}])


def _wait(headers: Mapping[str, str]) -> float | None:
    match = _WAIT.search(headers.get("prefer", ""))
    if match is None:
        return None
    value = float(match.group(1))
    return min(value, MAX_WAIT_SECONDS) if math.isfinite(value) else None


def _applied(wait: float) -> dict[str, str]:
    return {"Preference-Applied": f"wait={wait:g}"}


def _uuid(call: Call, name: str) -> uuid.UUID:
    try:
        return uuid.UUID(call.params[name])
    except ValueError:
        raise _invalid(name, "not a UUID") from None


def _model(body: Any, model: type[ModelT], *, optional: bool = False) -> ModelT:
    if body is None and optional:
        body = {}
    if not isinstance(body, dict):
        raise _invalid("body", "must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        errors = [{"loc": ["body", *e["loc"]], "msg": e["msg"]} for e in exc.errors()]
        raise Problem(ValidationFailed, "the body does not match", errors) from None


MAX_LIST_OFFSET = 10_000
"""The largest `?offset=` a list takes (our server's default `max_list_offset`)."""

MAX_KEY_LENGTH = 255
"""The longest `Idempotency-Key`."""


def _idempotency_key(call: Call) -> str | None:
    key = call.headers.get("idempotency-key")
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY_LENGTH or any(
        not 0x20 <= ord(ch) < 0x7F for ch in key
    ):
        raise Problem(
            ValidationFailed,
            "Idempotency-Key: 1 to 255 visible ASCII characters",
            [{"loc": ["header", "Idempotency-Key"], "msg": "not a valid key"}],
        )
    return key


def _page(call: Call, items: list[Any]) -> Answer:
    def number(name: str, default: int, high: int) -> int:
        raw = call.query.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise _invalid(name, "not an integer") from None
        if not 0 <= value <= high:
            raise _invalid(name, f"must be between 0 and {high}")
        return value

    limit = number("limit", DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT)
    offset = number("offset", 0, MAX_LIST_OFFSET)
    page = PaginatedResponse[Any](
        items=items[offset : offset + limit],
        total=len(items),
        limit=limit,
        offset=offset,
    )
    return Answer(200, _dump(page))


class FakeApp:
    """The fake server: routes, socket handlers, and what it recorded."""

    def __init__(
        self,
        tokens: Mapping[str, Identity],
        *,
        defaults: DisconnectPolicy | None = None,
    ) -> None:
        self.tokens = dict(tokens)
        self.world = World()
        self.defaults = defaults or DisconnectPolicy(
            action="fail", max_attempts=3, grace_seconds=0
        )
        self.recording = Recording()
        self.sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins=[])
        self._changed: asyncio.Event | None = None
        self._sockets: dict[str, Identity] = {}
        self._joined: dict[str, set[uuid.UUID]] = {}
        self._latest_sid: dict[uuid.UUID, str] = {}
        self._keys: dict[tuple[str, str], uuid.UUID] = {}
        self._progress_sent: dict[str, float] = {}
        self._progress_held: dict[str, Emission] = {}
        self._timer: tuple[float, asyncio.TimerHandle] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._attach()
        rest = Starlette(routes=self._routes())
        self.asgi = socketio.ASGIApp(self.sio, other_asgi_app=rest)

    # changes and their announcements

    async def _publish(self, emissions: list[Emission]) -> None:
        """Emit each distinct event once, then wake the held requests.

        Only a change wakes them (a change always emits): they wake in the order
        they began waiting and wait again in that order, so the oldest held
        claim gets the next task. Progress events go through the throttle, and
        a task's held one goes out before its terminal status.
        """
        if not emissions:
            return
        self._arm()
        for emission in dict.fromkeys(emissions):
            event = emission.event
            if isinstance(event, TaskProgressEvent):
                if not self._throttled(emission):
                    await self._emit(emission)
                continue
            if isinstance(event, TaskStatusEvent) and is_terminal(event.status):
                held = self._progress_held.pop(event.id, None)
                self._progress_sent.pop(event.id, None)
                if held is not None:
                    await self._emit(held)
            await self._emit(emission)
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    async def _emit(self, emission: Emission) -> None:
        event, room = emission
        await self.sio.emit(event.event_name(), event.payload(), room=room)

    def _throttled(self, emission: Emission) -> bool:
        """Whether a progress event waits (replacing one waiting) for its turn."""
        task_id = str(getattr(emission.event, "id", ""))
        loop = asyncio.get_running_loop()
        last = self._progress_sent.get(task_id)
        if last is None or loop.time() - last >= PROGRESS_INTERVAL:
            self._progress_sent[task_id] = loop.time()
            return False
        if task_id not in self._progress_held:
            loop.call_later(
                last + PROGRESS_INTERVAL - loop.time(),
                self._spawn,
                self._release,
                task_id,
            )
        self._progress_held[task_id] = emission
        return True

    async def _release(self, task_id: str) -> None:
        held = self._progress_held.pop(task_id, None)
        if held is not None:
            self._progress_sent[task_id] = asyncio.get_running_loop().time()
            await self._emit(held)

    def _spawn(self, function: Callable[..., Awaitable[None]], *args: Any) -> None:
        task = asyncio.ensure_future(function(*args))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _arm(self) -> None:
        """Set the timer for the next deadline or expiry, if it is earlier."""
        due = self.world.next_due()
        if due is None:
            return
        loop = asyncio.get_running_loop()
        at = loop.time() + max(0.0, (due - now()).total_seconds())
        if self._timer is not None and self._timer[0] <= at:
            return
        if self._timer is not None:
            self._timer[1].cancel()
        self._timer = (at, loop.call_at(at, self._spawn, self._expire))

    async def _expire(self) -> None:
        self._timer = None
        await self._publish(self.world.expire_due(now()))
        self._arm()

    async def _until_changed(self, seconds: float) -> None:
        """Wait for the next change, or `seconds`."""
        if self._changed is None:
            self._changed = asyncio.Event()
        with suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), seconds)

    # REST

    def identify(self, headers: Mapping[str, str], auth: Any = None) -> Identity | None:
        """Who the credentials stand for: `Authorization: Bearer` or `auth.token`."""
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            token = auth.get("token", "") if isinstance(auth, Mapping) else ""
        return self.tokens.get(token.strip()) if isinstance(token, str) else None

    def _routes(self) -> list[Route]:
        table: dict[str, dict[str, Endpoint]] = {
            "/workers": {"POST": self.create_worker, "GET": self.list_workers},
            "/workers/{worker_id}": {
                "PATCH": self.heartbeat,
                "DELETE": self.delete_worker,
            },
            "/rooms/{room_id}/jobs": {"PUT": self.register, "GET": self.list_jobs},
            "/rooms/{room_id}/jobs/{full_name}": {"GET": self.get_job},
            "/rooms/{room_id}/jobs/{full_name}/tasks": {"GET": self.list_job_tasks},
            "/rooms/{room_id}/workers": {"GET": self.list_room_workers},
            "/rooms/{room_id}/tasks": {"GET": self.list_room_tasks},
            "/rooms/{room_id}/tasks/{full_name}": {"POST": self.submit},
            "/tasks/claim": {"POST": self.claim},
            "/tasks/{task_id}": {"GET": self.get_task, "PATCH": self.update},
            "/tasks/{task_id}/progress": {"PUT": self.report_progress},
        }
        # A report may carry a result as large as allowed besides the rest.
        limits = {"/tasks/{task_id}": MAX_BODY_BYTES + MAX_RESULT_BYTES}
        # Every method reaches the endpoint, so a wrong one gets a problem document.
        routes = [
            Route(
                API_PREFIX + path,
                self._endpoint(methods, limits.get(path, MAX_BODY_BYTES)),
                methods=_METHODS,
            )
            for path, methods in table.items()
        ]
        routes.append(Route("/{path:path}", self._not_found, methods=_METHODS))
        return routes

    async def _not_found(self, request: Request) -> Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        if self.identify(headers) is None:
            return _response(_problem(Unauthorized, "send a valid bearer token"))
        return _response(_problem(NotFound, f"no route {request.url.path}"))

    def _endpoint(
        self, methods: dict[str, Endpoint], limit: int
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            headers = {k.lower(): v for k, v in request.headers.items()}
            identity = self.identify(headers)
            body: Any = None
            answer: Answer
            try:
                if identity is None:
                    raise Problem(Unauthorized, "send a valid bearer token")
                handler = methods.get(request.method)
                if handler is None:
                    raise Problem(MethodNotAllowed, f"{request.method} not allowed")
                if len(raw) > limit:
                    raise Problem(PayloadTooLarge, f"over {limit} bytes")
                if raw.strip():
                    try:
                        body = json.loads(raw, parse_constant=_refuse_constant)
                    except ValueError as exc:
                        raise _invalid("body", f"not valid JSON: {exc}") from None
                call = Call(
                    identity,
                    dict(request.path_params),
                    request.query_params,
                    headers,
                    body,
                )
                answer = await handler(call)
            except Problem as exc:
                extra = {"errors": exc.errors} if exc.errors else {}
                answer = _problem(exc.kind, exc.detail, **extra)
            self.recording.add(
                RestCall(
                    at=time.monotonic(),
                    identity=identity.id if identity else None,
                    method=request.method,
                    path=request.url.path.removeprefix(API_PREFIX),
                    headers=headers,
                    body=body,
                    status=answer.status,
                    answer=answer.body,
                )
            )
            return _response(answer)

        return endpoint

    async def create_worker(self, call: Call) -> Answer:
        """`POST /workers`."""
        worker, _ = self.world.create_worker(call.identity)
        return Answer(201, _dump(worker))

    async def list_workers(self, call: Call) -> Answer:
        """`GET /workers`."""
        return _page(call, [_dump(w) for w in self.world.list_workers()])

    async def heartbeat(self, call: Call) -> Answer:
        """`PATCH /workers/{worker_id}`; its `tasks`, if any, are answered with
        `cancelled` (the fake keeps no claim times, so it releases nothing)."""
        worker_id = _uuid(call, "worker_id")
        request = _model(call.body, WorkerHeartbeatRequest, optional=True)
        beat, _ = self.world.heartbeat(call.identity, worker_id, request.tasks)
        return Answer(200, _dump(beat))

    async def delete_worker(self, call: Call) -> Answer:
        """`DELETE /workers/{worker_id}`; the receipt with return=representation."""
        worker_id = _uuid(call, "worker_id")
        receipt, emissions = self.world.delete_worker(call.identity, worker_id)
        self._forget(worker_id)
        await self._publish(emissions)
        if "return=representation" in call.headers.get("prefer", ""):
            applied = {"Preference-Applied": "return=representation"}
            return Answer(200, _dump(receipt), applied)
        return Answer(204)

    async def register(self, call: Call) -> Answer:
        """`PUT /rooms/{room_id}/jobs`."""
        request = _model(call.body, JobRegisterRequest)
        (job, created), emissions = self.world.register(
            call.identity, call.params["room_id"], request, self.defaults
        )
        await self._publish(emissions)
        return Answer(201 if created else 200, _dump(job))

    async def list_jobs(self, call: Call) -> Answer:
        """`GET /rooms/{room_id}/jobs`."""
        jobs = self.world.list_jobs(call.params["room_id"])
        return _page(call, [_dump(j) for j in jobs])

    async def get_job(self, call: Call) -> Answer:
        """`GET /rooms/{room_id}/jobs/{full_name}`."""
        job = self.world.job_in_room(call.params["room_id"], call.params["full_name"])
        return Answer(200, _dump(self.world.job_response(job)))

    async def list_room_workers(self, call: Call) -> Answer:
        """`GET /rooms/{room_id}/workers`."""
        workers = self.world.list_workers(call.params["room_id"])
        return _page(call, [_dump(w) for w in workers])

    async def list_room_tasks(self, call: Call) -> Answer:
        """`GET /rooms/{room_id}/tasks`."""
        return self._tasks(call, None)

    async def list_job_tasks(self, call: Call) -> Answer:
        """`GET /rooms/{room_id}/jobs/{full_name}/tasks`."""
        return self._tasks(call, call.params["full_name"])

    def _tasks(self, call: Call, full_name: str | None) -> Answer:
        raw = call.query.get("status")
        try:
            status = TaskStatus(raw) if raw is not None else None
        except ValueError:
            raise _invalid("status", f"{raw!r} is not a task status") from None
        tasks = self.world.list_tasks(call.params["room_id"], full_name, status)
        return _page(call, [_dump(t) for t in tasks])

    async def submit(self, call: Call) -> Answer:
        """`POST /rooms/{room_id}/tasks/{full_name}`."""
        request = _model(call.body, TaskSubmitRequest)
        key = _idempotency_key(call)
        # Nothing awaits between looking the key up and remembering its task.
        earlier = self._keys.get((call.identity.id, key)) if key else None
        if earlier is not None:
            task = self.world.task_response(self.world.task(earlier))
            headers = {"Location": f"{API_PREFIX}/tasks/{task.id}", "Retry-After": "1"}
            return Answer(202, _dump(task), headers | {"Idempotent-Replayed": "true"})
        task, emissions = self.world.submit(
            call.identity, call.params["room_id"], call.params["full_name"], request
        )
        if key:
            self._keys[(call.identity.id, key)] = task.id
        await self._publish(emissions)
        headers = {"Location": f"{API_PREFIX}/tasks/{task.id}", "Retry-After": "1"}
        return Answer(202, _dump(task), headers)

    async def claim(self, call: Call) -> Answer:
        """`POST /tasks/claim`, held until a task comes with `Prefer: wait=N`."""
        request = _model(call.body, TaskClaimRequest)
        wait = _wait(call.headers)
        deadline = time.monotonic() + (wait or 0)
        while True:
            task, emissions = self.world.claim(
                call.identity,
                request.worker_id,
                start=request.start,
                request_id=request.request_id,
            )
            await self._publish(emissions)
            remaining = deadline - time.monotonic()
            if task is not None or wait is None or remaining <= 0:
                body = _dump(TaskClaimResponse(task=task))
                return Answer(200, body, _applied(wait) if wait else {})
            await self._until_changed(remaining)

    async def get_task(self, call: Call) -> Answer:
        """`GET /tasks/{task_id}`, a long-poll with `Prefer: wait=N`."""
        task_id = _uuid(call, "task_id")
        wait = _wait(call.headers)
        deadline = time.monotonic() + (wait or 0)
        while True:
            task = self.world.task(task_id)
            remaining = deadline - time.monotonic()
            if wait is None or is_terminal(task.status) or remaining <= 0:
                body = _dump(self.world.task_response(task))
                return Answer(200, body, _applied(wait) if wait else {})
            await self._until_changed(remaining)

    async def update(self, call: Call) -> Answer:
        """`PATCH /tasks/{task_id}`."""
        task_id = _uuid(call, "task_id")
        request = _model(call.body, TaskUpdateRequest)
        task, emissions = self.world.update(call.identity, task_id, request)
        await self._publish(emissions)
        return Answer(200, _dump(task))

    async def report_progress(self, call: Call) -> Answer:
        """`PUT /tasks/{task_id}/progress`."""
        task_id = _uuid(call, "task_id")
        request = _model(call.body, TaskProgressRequest)
        _none, emissions = self.world.report_progress(call.identity, task_id, request)
        await self._publish(emissions)
        return Answer(204)

    # Socket.IO

    def _attach(self) -> None:
        self.sio.on("connect", self._connect)
        self.sio.on("disconnect", self._disconnect)
        self.sio.on(JoinJobRoom.event_name, self._join_job_room)
        self.sio.on(LeaveJobRoom.event_name, self._leave_job_room)
        self.sio.on(JoinRoom.event_name, self._join_room)
        self.sio.on(LeaveRoom.event_name, self._leave_room)

    def _record(self, sid: str, event: str, data: Any, ack: Any) -> Any:
        identity = self._sockets.get(sid)
        self.recording.add(
            SocketCall(
                time.monotonic(),
                identity.id if identity else None,
                sid,
                event,
                data,
                ack,
            )
        )
        return ack

    async def _connect(self, sid: str, environ: Mapping[str, Any], auth: Any) -> None:
        headers = {
            key.decode("latin-1").lower(): value.decode("latin-1")
            for key, value in environ.get("asgi.scope", {}).get("headers", [])
        }
        identity = self.identify(headers, auth)
        if identity is None:
            self._record(sid, "connect", None, False)
            raise socketio.exceptions.ConnectionRefusedError("unauthorized")
        self._sockets[sid] = identity
        self._joined[sid] = set()
        self._record(sid, "connect", None, True)

    async def _disconnect(self, sid: str, reason: Any = None) -> None:
        self._record(sid, "disconnect", None, None)
        self._sockets.pop(sid, None)
        for worker_id in sorted(self._joined.pop(sid, set())):
            if self._latest_sid.get(worker_id) != sid:
                continue  # it joined again through another socket since
            self._forget(worker_id)
            if worker_id in self.world.workers:
                _receipt, emissions = self.world.remove_worker(
                    worker_id, ErrorCode.WORKER_DISCONNECTED
                )
                await self._publish(emissions)

    def _forget(self, worker_id: uuid.UUID) -> None:
        self._latest_sid.pop(worker_id, None)

    def _refusal(self, kind: type[Any], detail: str) -> dict[str, Any]:
        return {
            "ok": False,
            "error": kind.document(detail).model_dump(exclude_none=True),
        }

    def _worker_event(
        self, sid: str, data: Any, model: type[JoinJobRoom] | type[LeaveJobRoom]
    ) -> tuple[uuid.UUID, str] | dict[str, Any]:
        identity = self._sockets.get(sid)
        if identity is None:
            return self._refusal(Forbidden, "not authenticated")
        try:
            event = model.model_validate(data)
            worker_id = uuid.UUID(event.worker_id)
            JobFullName.parse(event.job_name)
        except (ValidationError, ValueError) as exc:
            return self._refusal(ValidationFailed, str(exc))
        worker = self.world.workers.get(worker_id)
        if worker is None:
            return self._refusal(WorkerNotFound, f"no worker {worker_id}")
        if worker.owner != identity.id:
            return self._refusal(Forbidden, f"worker {worker_id} is not yours")
        if event.job_name not in worker.jobs:
            return self._refusal(Forbidden, f"{worker_id} does not serve the job")
        return worker_id, event.job_name

    async def _join_job_room(self, sid: str, data: Any) -> Any:
        checked = self._worker_event(sid, data, JoinJobRoom)
        if isinstance(checked, dict):
            return self._record(sid, JoinJobRoom.event_name, data, checked)
        worker_id, job_name = checked
        await self.sio.enter_room(sid, job_channel(job_name))
        await self.sio.enter_room(sid, worker_channel(worker_id))
        self._joined.setdefault(sid, set()).add(worker_id)
        self._latest_sid[worker_id] = sid
        return self._record(sid, JoinJobRoom.event_name, data, {"ok": True})

    async def _leave_job_room(self, sid: str, data: Any) -> Any:
        checked = self._worker_event(sid, data, LeaveJobRoom)
        if isinstance(checked, dict):
            return self._record(sid, LeaveJobRoom.event_name, data, checked)
        _worker_id, job_name = checked
        await self.sio.leave_room(sid, job_channel(job_name))
        return self._record(sid, LeaveJobRoom.event_name, data, {"ok": True})

    async def _join_room(self, sid: str, data: Any) -> Any:
        try:
            room_id = check_room(JoinRoom.model_validate(data).room_id)
        except (ValidationError, Problem) as exc:
            ack = self._refusal(ValidationFailed, str(exc))
        else:
            await self.sio.enter_room(sid, room_channel(room_id))
            ack = {"ok": True}
        return self._record(sid, JoinRoom.event_name, data, ack)

    async def _leave_room(self, sid: str, data: Any) -> Any:
        try:
            room_id = LeaveRoom.model_validate(data).room_id
        except ValidationError as exc:
            ack = self._refusal(ValidationFailed, str(exc))
        else:
            await self.sio.leave_room(sid, room_channel(room_id))
            ack = {"ok": True}
        return self._record(sid, LeaveRoom.event_name, data, ack)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _response(answer: Answer) -> Response:
    if answer.body is None:
        return Response(status_code=answer.status, headers=answer.headers)
    media = PROBLEM_CONTENT_TYPE if answer.status >= 400 else "application/json"
    return Response(
        json.dumps(answer.body),
        status_code=answer.status,
        media_type=media,
        headers=answer.headers,
    )
