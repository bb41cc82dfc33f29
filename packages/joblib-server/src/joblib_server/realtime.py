"""Socket.IO glue: the emitter, connection auth, and the worker room handlers.

Incoming events are handled here; outgoing ones leave through `SocketIOEmitter`.
Event names and payloads come from `joblib_protocol` only.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
import warnings
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import socketio
from pydantic import ValidationError

from joblib_protocol import (
    Emission,
    Event,
    Forbidden,
    JobFullName,
    JobsInvalidate,
    JoinAck,
    JoinJobRoom,
    JoinProviderRoom,
    JoinRoom,
    LeaveJobRoom,
    LeaveProviderRoom,
    LeaveRoom,
    ProblemType,
    ProvidersInvalidate,
    ValidationFailed,
    job_channel,
    provider_channel,
    room_channel,
    validate_room_id,
    worker_channel,
)
from joblib_server.auth import Identity
from joblib_server.disconnects import socket_closed
from joblib_server.emitter import ordered
from joblib_server.errors import ProblemError
from joblib_server.guard import SocketGuard
from joblib_server.logs import protect
from joblib_server.policy import Action, authorize
from joblib_server.providers import join_provider
from joblib_server.socket_rooms import IndexedManager, IndexedRedisManager
from joblib_server.workers import heartbeat, join_job

if TYPE_CHECKING:
    from joblib_server.runtime import JobLib

logger = logging.getLogger("joblib_server.realtime")

RoomHook = Callable[[Identity, str], Awaitable[bool]]
"""Deprecated: `may_observe`; the access policy's `observe` action replaces it."""


class SocketIOEmitter:
    """Sends emissions through a python-socketio `AsyncServer` (Redis-backed or not).

    `emit` only queues: one background task sends the batches, one at a time in
    the order they came. A request no longer waits for a room's observers (a
    submit into a room watched by 1,000 took ~101 ms instead of ~4 ms), and
    batches still leave in commit order, so no task's events overtake each other.

    A hint to fetch a list again (`jobs_invalidate`, `providers_invalidate`) goes
    to a room at most once per interval: the first at once, the ones that come
    within the interval as one at its end (one still waiting is not queued twice:
    it goes out after the change that would have sent the second). The interval
    is `HINT_INTERVAL`, or `1 / HINT_SHARE` times what the last copy cost (the
    time it took, or `SEND_SECONDS` per socket in the room, whichever is more),
    whichever is longer: a copy to 1,000 observers costs this machine 50-90 ms
    of CPU, so a fixed 0.1 s would still spend most of a core on hints. Each
    worker that leaves sends its room one: 500 workers leaving a room watched by
    500 observers at once were 250,000 messages, and their cleanup took 41 s.
    """

    MAX_QUEUED: ClassVar[int] = 10_000
    """Batches waiting to be sent; beyond, `emit` waits for the queue to drain."""

    COALESCED: ClassVar[tuple[type[Event], ...]] = (JobsInvalidate, ProvidersInvalidate)
    """Events that are hints: copies close together are sent once."""

    HINT_INTERVAL: ClassVar[float] = 0.1
    """Seconds between two copies of one hint to one room, at the least."""

    HINT_SHARE: ClassVar[float] = 0.1
    """The most of the time one hint to one room may spend being sent."""

    SEND_SECONDS: ClassVar[float] = 100e-6
    """What one message to one socket costs the server, writing it included
    (bench: 50-90 µs of CPU per event delivered). Sending a copy only queues it
    for each socket's writer, so its own duration understates the cost."""

    def __init__(self, sio: socketio.AsyncServer) -> None:
        self.sio = sio
        self._queue: deque[list[Emission]] = deque()
        self._sender: asyncio.Task[None] | None = None
        self._waiting_hints: set[Emission] = set()
        """Hints queued or held for later, not yet being sent."""
        self._hint_sent: dict[Emission, float] = {}
        """When each hint may go out again (monotonic seconds)."""
        self._held: set[asyncio.Task[None]] = set()

    async def emit(self, emissions: Iterable[Emission]) -> None:
        """Queue each distinct emission once, a task's events in lifecycle order."""
        batch = self._without_held_hints(ordered(emissions))
        if not batch:
            return
        if len(self._queue) >= self.MAX_QUEUED:
            await self.drain()  # the senders outpace the network: slow them down
        self._enqueue(batch)

    async def drain(self) -> None:
        """Wait until every queued (or held) emission has been sent."""
        while True:
            running = {*self._held}
            if self._sender is not None and not self._sender.done():
                running.add(self._sender)
            if not running:
                return
            await asyncio.wait(running)

    def _enqueue(self, batch: list[Emission]) -> None:
        self._queue.append(batch)
        if self._sender is None or self._sender.done():
            self._sender = self.sio.start_background_task(self._send_queued)

    def _without_held_hints(self, batch: list[Emission]) -> list[Emission]:
        """The batch, less the hints already waiting or sent too recently."""
        kept: list[Emission] = []
        now = time.monotonic()
        for emission in batch:
            if not isinstance(emission.event, self.COALESCED):
                kept.append(emission)
                continue
            if emission in self._waiting_hints:
                continue
            self._waiting_hints.add(emission)
            wait = self._hint_sent.get(emission, -math.inf) - now
            if wait <= 0:
                kept.append(emission)
            else:
                self._hold(emission, wait)
        return kept

    def _hold(self, emission: Emission, seconds: float) -> None:
        """Queue the hint `seconds` from now (it stays in `_waiting_hints`)."""
        held = asyncio.get_running_loop().create_task(self._later(emission, seconds))
        self._held.add(held)
        held.add_done_callback(self._held.discard)

    async def _later(self, emission: Emission, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self._enqueue([emission])

    async def _send_queued(self) -> None:
        while self._queue:
            for emission in self._queue.popleft():
                hint = emission in self._waiting_hints
                started = time.monotonic()
                if hint:
                    # Queued while the copy before it was being sent: its pause
                    # is known only now.
                    wait = self._hint_sent.get(emission, -math.inf) - started
                    if wait > 0:
                        self._hold(emission, wait)
                        continue
                    # From now on a new copy must be queued: this one may be
                    # sent before the change that asks for it has happened.
                    self._waiting_hints.discard(emission)
                try:
                    await self.sio.emit(
                        emission.event.event_name(),
                        emission.event.payload(),
                        room=emission.room,
                    )
                except Exception:
                    # Committed long ago: a failed notification fails nothing.
                    logger.exception("emitting %s failed", emission.event.event_name())
                if hint:
                    self._hint_sent_at(emission, started)

    def _local_sockets(self, room: str) -> int:
        """The sockets of this process in `room` (0 if the manager hides them)."""
        rooms = getattr(self.sio.manager, "rooms", None)
        if not isinstance(rooms, dict):
            return 0
        return len(rooms.get("/", {}).get(room, ()))

    def _hint_sent_at(self, emission: Emission, started: float) -> None:
        now = time.monotonic()
        if len(self._hint_sent) > 1000:  # one per room and hint: forget old ones
            self._hint_sent = {e: t for e, t in self._hint_sent.items() if t > now}
        cost = max(
            now - started, self._local_sockets(emission.room) * self.SEND_SECONDS
        )
        pause = max(self.HINT_INTERVAL, cost / self.HINT_SHARE)
        self._hint_sent[emission] = started + pause


@dataclass
class Connection:
    """What the server knows about one socket: who it is and which workers it runs."""

    identity: Identity
    workers: dict[uuid.UUID, int] = field(default_factory=dict)
    """The workers that joined through this socket, with their socket epochs."""


def _headers(environ: Mapping[str, Any]) -> dict[str, str]:
    headers: dict[str, str] = {}
    asgi_scope = environ.get("asgi.scope")
    if asgi_scope is not None:
        for key, value in asgi_scope.get("headers", []):
            headers[key.decode("latin-1").lower()] = value.decode("latin-1")
        return headers
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers[key[5:].replace("_", "-").lower()] = value
    return headers


def _refusal(problem: type[ProblemType], detail: str) -> dict[str, Any]:
    return {
        "ok": False,
        "error": problem.document(detail).model_dump(exclude_none=True),
    }


_OK: dict[str, Any] = {"ok": True}


class Realtime:
    """joblib's Socket.IO handlers, for the standalone app or a host's own server.

    `attach()` registers every handler on the server in one call. A host that keeps
    its own `connect`/`disconnect` handlers calls `authenticate()` (or `accept()`)
    from its connect handler and `cleanup_connection()` from its disconnect handler.
    """

    def __init__(
        self,
        joblib: JobLib,
        sio: socketio.AsyncServer,
        *,
        may_observe: RoomHook | None = None,
    ) -> None:
        self.joblib = joblib
        self.sio = sio
        if may_observe is not None:
            _warn_may_observe()
        self.may_observe = may_observe
        self.connections: dict[str, Connection] = {}
        # Sockets per identity, kept as they come and go: counting them over
        # `connections` on each connect made connecting N sockets O(N²).
        self._per_identity: Counter[str] = Counter()

    def attach(self, *, connection_handlers: bool = True) -> Realtime:
        """Register the handlers; `connection_handlers=False` keeps the host's own.

        Either way the server gets joblib's `SocketGuard`: unnamed sessions
        closed, a cap on sessions, bad packets logged as one line.
        """
        SocketGuard(self.sio, self.joblib.settings).attach()
        # The workers on our sockets are alive while connected: the process
        # records their heartbeats, one statement for all (`liveness`).
        self.joblib.socket_heartbeats.watch(self.socket_workers)
        if connection_handlers:
            self.sio.on("connect", self._on_connect)
            self.sio.on("disconnect", self._on_disconnect)
        self.sio.on(JoinJobRoom.event_name(), self.join_job_room)
        self.sio.on(LeaveJobRoom.event_name(), self.leave_job_room)
        self.sio.on(JoinProviderRoom.event_name(), self.join_provider_room)
        self.sio.on(LeaveProviderRoom.event_name(), self.leave_provider_room)
        self.sio.on(JoinRoom.event_name(), self.join_room)
        self.sio.on(LeaveRoom.event_name(), self.leave_room)
        return self

    def socket_workers(self) -> set[uuid.UUID]:
        """The workers that joined a room through one of this process's sockets."""
        return {w for c in self.connections.values() for w in c.workers}

    def _join_ack(self) -> dict[str, Any]:
        interval = self.joblib.socket_heartbeats.interval
        return JoinAck(heartbeat_seconds=interval).model_dump(exclude_none=True)

    # connection lifecycle

    async def authenticate(
        self, sid: str, environ: Mapping[str, Any], auth: Any
    ) -> Identity:
        """Identify a handshake with the REST auth backend, or refuse the connection."""
        payload = auth if isinstance(auth, Mapping) else None
        identity = await self.joblib.auth.authenticate(_headers(environ), payload)
        if identity is None:
            raise socketio.exceptions.ConnectionRefusedError(
                "unauthorized: send `Authorization: Bearer <token>` "
                "or auth={'token': ...}"
            )
        cap = self.joblib.settings.max_sockets_per_identity
        held = self._per_identity[identity.id]
        if held >= cap:
            raise socketio.exceptions.ConnectionRefusedError(
                f"too many connections: {identity.id!r} holds {held}, the most one "
                f"identity may (max_sockets_per_identity={cap})"
            )
        self.accept(sid, identity)
        logger.info(
            "socket %s connected as %r",
            sid,
            identity.id,
            extra={"event": "connected", "sid": sid, "identity": identity.id},
        )
        return identity

    def accept(self, sid: str, identity: Identity) -> None:
        """Remember the identity of a connection a host authenticated itself."""
        self._forget(sid)
        self.connections[sid] = Connection(identity)
        self._per_identity[identity.id] += 1

    def _forget(self, sid: str) -> Connection | None:
        """Drop the connection's record; what it was, if there was one."""
        connection = self.connections.pop(sid, None)
        if connection is not None:
            self._per_identity[connection.identity.id] -= 1
            if self._per_identity[connection.identity.id] <= 0:
                del self._per_identity[connection.identity.id]
        return connection

    async def _on_connect(
        self, sid: str, environ: Mapping[str, Any], auth: Any
    ) -> None:
        await self.authenticate(sid, environ, auth)

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        await self.cleanup_connection(sid, reason)

    async def cleanup_connection(self, sid: str, reason: Any = None) -> None:
        """Handle a closed socket: its workers have gone away; safe to call twice.

        The database decides, not this process: a worker that joined again since
        (from another socket, or another server process) is left alone, and one
        whose jobs allow a grace time keeps its tasks for it. While the server
        itself is stopping, closing sockets clean nothing up.
        """
        connection = self._forget(sid)
        if connection is None:
            return
        why = str(reason or "closed")
        who = connection.identity.id
        fields = {"sid": sid, "identity": who, "reason": why}
        if self.joblib.stopping:
            return
        if not connection.workers:
            logger.info(
                "socket %s of %r disconnected (%s)",
                sid,
                who,
                why,
                extra={"event": "disconnected", **fields},
            )
        for worker_id, epoch in sorted(connection.workers.items()):
            worker = {"event": "disconnected", "worker_id": str(worker_id), **fields}
            try:
                grace = await self.joblib.execute(socket_closed, worker_id, epoch)
            except Exception:
                logger.exception(
                    "cleaning up worker %s after disconnect failed",
                    worker_id,
                    extra=worker,
                )
                continue
            if grace is None:
                # One line per disconnect all the same; the cleanup line (see
                # `JobLib.execute`) follows only when something was cleaned up.
                logger.info(
                    "worker %s of %r disconnected (%s); it is gone or joined again "
                    "since: nothing to clean up",
                    worker_id,
                    who,
                    why,
                    extra=worker,
                )
            elif grace > 0:
                logger.info(
                    "worker %s of %r disconnected (%s); keeps its tasks for %g s",
                    worker_id,
                    who,
                    why,
                    grace,
                    extra={**worker, "grace_seconds": grace},
                )
                self.joblib.expire_grace_later(worker_id, epoch, grace)
            else:
                logger.info(
                    "worker %s of %r disconnected (%s)",
                    worker_id,
                    who,
                    why,
                    extra=worker,
                )

    # worker rooms

    async def _as_worker(
        self,
        sid: str,
        data: Any,
        model: type[JoinJobRoom]
        | type[LeaveJobRoom]
        | type[JoinProviderRoom]
        | type[LeaveProviderRoom],
        operation: Callable[[Identity, uuid.UUID, str], Awaitable[object]],
    ) -> tuple[str, uuid.UUID] | dict[str, Any]:
        """Validate a worker event and run `operation` for it; a refusal otherwise.

        Answers the job's (or provider's) full name and the worker's id.
        """
        connection = self.connections.get(sid)
        if connection is None:
            return _refusal(Forbidden, "this connection is not authenticated")
        try:
            event = model.model_validate(data)
            worker_id = uuid.UUID(event.worker_id)
            name = (
                event.provider_name
                if isinstance(event, JoinProviderRoom | LeaveProviderRoom)
                else event.job_name
            )
            JobFullName.parse(name)
        except (ValidationError, ValueError) as exc:
            return _refusal(ValidationFailed, str(exc))
        try:
            await operation(connection.identity, worker_id, name)
        except ProblemError as exc:
            return {"ok": False, "error": exc.document().model_dump(exclude_none=True)}
        return name, worker_id

    def _joined(self, sid: str, worker_id: uuid.UUID, epoch: int, name: str) -> None:
        """Remember the worker's epoch on this socket: its close cleans it up."""
        connection = self.connections.get(sid)
        if connection is None:
            return
        connection.workers[worker_id] = epoch
        logger.info(
            "worker %s of %r joined %s",
            worker_id,
            connection.identity.id,
            name,
            extra={
                "event": "joined",
                "worker_id": str(worker_id),
                "identity": connection.identity.id,
                "job": name,
                "sid": sid,
            },
        )

    async def join_job_room(self, sid: str, data: Any) -> dict[str, Any]:
        """`join_job_room`: enter `jobs:{job_name}` for a worker the caller owns.

        The answer (`JoinAck`) says how often this process records the worker's
        heartbeat while the socket stays connected.
        """

        epochs: list[int] = []

        async def join(identity: Identity, worker_id: uuid.UUID, job: str) -> None:
            room_id = JobFullName.parse(job).room_id
            await authorize(self.joblib.policy, identity, room_id, Action.SERVE)
            epochs.append(await self.joblib.execute(join_job, identity, worker_id, job))

        checked = await self._as_worker(sid, data, JoinJobRoom, join)
        if isinstance(checked, dict):
            return checked
        job_name, worker_id = checked
        await self.sio.enter_room(sid, job_channel(job_name))
        # Where `task_cancelled` reaches the worker, whichever job it joined for.
        await self.sio.enter_room(sid, worker_channel(worker_id))
        self._joined(sid, worker_id, epochs[-1], job_name)
        return self._join_ack()

    async def leave_job_room(self, sid: str, data: Any) -> dict[str, Any]:
        """`leave_job_room`: leave `jobs:{job_name}` (the caller's own worker only)."""

        async def leave(identity: Identity, worker_id: uuid.UUID, _job: str) -> None:
            # The heartbeat's ownership rule; leaving is a sign of life too.
            await self.joblib.execute(heartbeat, worker_id, identity)

        checked = await self._as_worker(sid, data, LeaveJobRoom, leave)
        if isinstance(checked, dict):
            return checked
        job_name, _worker_id = checked
        await self.sio.leave_room(sid, job_channel(job_name))
        return _OK

    # provider rooms

    async def join_provider_room(self, sid: str, data: Any) -> dict[str, Any]:
        """`join_provider_room`: enter `providers:{provider_name}`, trust on join.

        As for job rooms: the caller's own worker, serving that provider, in a
        room the policy lets it serve; its socket's close then removes it.
        """
        epochs: list[int] = []

        async def join(identity: Identity, worker_id: uuid.UUID, name: str) -> None:
            room_id = JobFullName.parse(name).room_id
            await authorize(self.joblib.policy, identity, room_id, Action.SERVE)
            epochs.append(
                await self.joblib.execute(join_provider, identity, worker_id, name)
            )

        checked = await self._as_worker(sid, data, JoinProviderRoom, join)
        if isinstance(checked, dict):
            return checked
        name, worker_id = checked
        await self.sio.enter_room(sid, provider_channel(name))
        await self.sio.enter_room(sid, worker_channel(worker_id))
        self._joined(sid, worker_id, epochs[-1], name)
        return self._join_ack()

    async def leave_provider_room(self, sid: str, data: Any) -> dict[str, Any]:
        """`leave_provider_room`: leave `providers:{provider_name}` (own worker)."""

        async def leave(identity: Identity, worker_id: uuid.UUID, _name: str) -> None:
            await self.joblib.execute(heartbeat, worker_id, identity)

        checked = await self._as_worker(sid, data, LeaveProviderRoom, leave)
        if isinstance(checked, dict):
            return checked
        name, _worker_id = checked
        await self.sio.leave_room(sid, provider_channel(name))
        return _OK

    # observers

    async def subscribe(self, sid: str, room_id: str) -> None:
        """Put a connection in `room:{room_id}` to receive the room's events."""
        await self.sio.enter_room(sid, room_channel(validate_room_id(room_id)))

    async def join_room(self, sid: str, data: Any) -> dict[str, Any]:
        """`join_room` (ours): observe a room, if the access policy allows it."""
        connection = self.connections.get(sid)
        if connection is None:
            return _refusal(Forbidden, "this connection is not authenticated")
        try:
            room_id = validate_room_id(JoinRoom.model_validate(data).room_id)
        except (ValidationError, ValueError) as exc:
            return _refusal(ValidationFailed, str(exc))
        try:
            await authorize(
                self.joblib.policy, connection.identity, room_id, Action.OBSERVE
            )
        except ProblemError as exc:
            return {"ok": False, "error": exc.document().model_dump(exclude_none=True)}
        if self.may_observe is not None and not await self.may_observe(
            connection.identity, room_id
        ):
            return _refusal(Forbidden, f"you may not observe room {room_id!r}")
        await self.subscribe(sid, room_id)
        return _OK

    async def leave_room(self, sid: str, data: Any) -> dict[str, Any]:
        """`leave_room` (ours): stop observing a room."""
        try:
            room_id = LeaveRoom.model_validate(data).room_id
        except ValidationError as exc:
            return _refusal(ValidationFailed, str(exc))
        await self.sio.leave_room(sid, room_channel(room_id))
        return _OK


def create_socketio_server(
    ping_interval: float,
    ping_timeout: float,
    redis_url: str | None = None,
    **kwargs: Any,
) -> socketio.AsyncServer:
    """An ASGI `AsyncServer`; with `redis_url`, emissions reach every server process.

    It logs through `joblib_server.socketio` and `joblib_server.engineio`, at
    WARNING unless set otherwise: at INFO they log every packet (tokens redacted).
    """
    # Managers that know each socket's rooms: python-socketio's own walk every
    # room on each disconnect (see `joblib_server.socket_rooms`).
    manager = IndexedRedisManager(redis_url) if redis_url else IndexedManager()
    kwargs.setdefault("cors_allowed_origins", [])
    for option, name in (("logger", "socketio"), ("engineio_logger", "engineio")):
        # A Logger object is used as it is: no second handler printing each line.
        named = protect(logging.getLogger(f"joblib_server.{name}"))
        if named.level == logging.NOTSET:
            named.setLevel(logging.WARNING)
        kwargs.setdefault(option, named)
    return socketio.AsyncServer(
        async_mode="asgi",
        client_manager=manager,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        **kwargs,
    )


def attach_joblib(
    sio: socketio.AsyncServer,
    joblib: JobLib,
    *,
    may_observe: RoomHook | None = None,
    connection_handlers: bool = True,
) -> Realtime:
    """One call for a host: emit joblib's events through `sio` and handle its events.

    `may_observe` is deprecated: `JobLib(policy=...)` decides `join_room` now (as
    the `observe` action); a hook still given must allow the room as well.
    """
    joblib.emitter = SocketIOEmitter(sio)
    realtime = Realtime(joblib, sio)
    if may_observe is not None:
        _warn_may_observe()
        realtime.may_observe = may_observe
    return realtime.attach(connection_handlers=connection_handlers)


def _warn_may_observe() -> None:
    warnings.warn(
        "may_observe is deprecated: pass JobLib(policy=...), whose "
        "allows(identity, room_id, Action.OBSERVE) decides join_room",
        DeprecationWarning,
        stacklevel=3,  # the caller of attach_joblib or Realtime
    )
