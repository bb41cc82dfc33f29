"""The task endpoints: list, submit (one or a batch), claim, read, update, progress."""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import Response

from joblib_protocol import (
    PaginatedResponse,
    TaskBatchRequest,
    TaskClaimRequest,
    TaskClaimResponse,
    TaskProgressRequest,
    TaskResponse,
    TaskStatus,
    TaskSubmitRequest,
    TaskUpdateRequest,
    ValidationFailed,
    is_terminal,
)
from joblib_server import (
    at_once,
    batches,
    dispatch,
    idempotency,
    progress,
    queueing,
    tasks,
    workers,
)
from joblib_server.auth import Identity
from joblib_server.endpoints import (
    Endpoints,
    answer,
    format_wait,
    invalid,
    path_uuid,
    prefer_wait,
)
from joblib_server.errors import ProblemError, forbidden
from joblib_server.policy import Action, authorize, restricts


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
        raise invalid(
            "status", f"{raw!r} is not one of {[s.value for s in TaskStatus]}"
        ) from None


class TaskRoutes(Endpoints):
    """The task endpoints of one `JobLib`, for the route table of `RestApi`."""

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
        return answer(
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
        limits = queueing.TaskLimits(body.timeout_seconds, body.pending_timeout_seconds)
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
        return answer(task, 202, headers)

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
            limits=queueing.TaskLimits(
                body.timeout_seconds, body.pending_timeout_seconds
            ),
        )
        return answer(made, 202)

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
            return await self.joblib.execute_at_once(
                at_once.claim_task,
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
            return answer(TaskClaimResponse(task=(await claim()).task))
        held = await dispatch.hold_claim(
            claim,
            self.joblib.claims,
            body.worker_id,
            wait=wait,
            client_gone=request.is_disconnected,
        )
        if held is None:
            return Response(status_code=204)
        applied = {"Preference-Applied": f"wait={format_wait(wait)}"}
        return answer(TaskClaimResponse(task=held.task), 200, applied)

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
        task_id = path_uuid(request, "task_id")
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
            return answer(task)
        task = await dispatch.wait_until_terminal(
            read,
            self.joblib.waiters,
            task_id,
            wait=wait,
            recheck=settings.long_poll_recheck_seconds,
        )
        return answer(task, 200, {"Preference-Applied": f"wait={format_wait(wait)}"})

    async def update_task(self, request: Request) -> Response:
        """`PATCH /tasks/{task_id}`."""
        identity = await self.identity(request)
        task_id = path_uuid(request, "task_id")
        settings = self.joblib.settings
        # Room for a result as large as allowed, besides the rest of the body.
        limit = settings.max_body_bytes + settings.max_result_bytes
        body = await self.body(request, TaskUpdateRequest, limit=limit)
        await self.task_in_reach(identity, task_id)
        task = await self.joblib.execute_at_once(
            at_once.update_task, tasks.update_task, identity, task_id, body
        )
        return answer(task)

    async def report_progress(self, request: Request) -> Response:
        """`PUT /tasks/{task_id}/progress`."""
        identity = await self.identity(request)
        task_id = path_uuid(request, "task_id")
        body = await self.body(request, TaskProgressRequest)
        await self.task_in_reach(identity, task_id)
        await self.joblib.execute_at_once(
            at_once.report_progress, progress.report_progress, identity, task_id, body
        )
        return Response(status_code=204)

    async def task_in_reach(self, identity: Identity, task_id: uuid.UUID) -> None:
        """403/423 if the access policy refuses the task's room to `identity`."""
        if restricts(self.joblib.policy, identity):
            async with self.joblib.database.read() as session:
                room_id = await tasks.task_room(session, task_id)
            await authorize(self.joblib.policy, identity, room_id, Action.READ)
