"""The manager's worker on the server: created once, kept alive, found again.

`WorkerIdentity` holds what makes a `JobManager` one worker: creating it (one
thread at a time), the heartbeat, and coming back after a reconnection as the
same worker, or, when the server lost it, registering every job and provider
again under a new one. `JobManager` builds the state it works on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

from pydantic import ValidationError

from joblib_client._heartbeat import Ticker
from joblib_client._http import Rest
from joblib_client._providers import Providers, ServedProvider
from joblib_client._retry import is_transient, retry_startup
from joblib_client._running import RunningTasks
from joblib_client._serve import Serving
from joblib_client._socket import Tsio, send
from joblib_client.exceptions import (
    ForbiddenError,
    JobLibError,
    NotFoundError,
    WorkerNotFoundError,
    error_for_problem,
)
from joblib_client.extension import Extension
from joblib_protocol import (
    DisconnectPolicyRequest,
    Event,
    JoinAck,
    JoinJobRoom,
    JoinProviderRoom,
)

logger = logging.getLogger("joblib_client")

T = TypeVar("T")


@dataclass(frozen=True)
class _Registration:
    cls: type[Extension]
    room_id: str
    policy: DisconnectPolicyRequest | None = None
    timeout_seconds: float | None = None
    pending_timeout_seconds: float | None = None
    run_kwargs: Mapping[str, Any] = field(default_factory=dict)


class WorkerIdentity:
    """Create, heartbeat, resume and recover the manager's worker (a mixin).

    The state is `JobManager`'s, set in its `__init__`; see there.
    """

    _rest: Rest
    _tsio: Tsio | None
    _lock: threading.Lock
    _changed: threading.Condition
    _jobs: dict[str, _Registration]
    _held: dict[UUID, UUID]
    _worker_id: UUID | None
    _last_heartbeat: datetime | None
    _creating: bool
    _disconnected: bool
    _stopped: threading.Event
    _resume_pending: bool
    _socket_beats: float | None
    _beats_owed: int
    _heartbeat: Ticker | None
    _wakeup: threading.Event
    _running: RunningTasks
    _providers: Providers
    _startup_tries: int
    _serving: Serving

    if TYPE_CHECKING:
        # Job registration is `JobManager`'s, provider registration
        # `ProviderServing`'s; a recovery registers both again.

        def _register(self, registration: _Registration) -> str: ...

        def _put_job(
            self, registration: _Registration, worker_id: UUID | None
        ) -> tuple[str, UUID]: ...

        def _join_room(self, full_name: str, worker_id: UUID) -> None: ...

        def _rejoin_provider(self, served: ServedProvider, worker_id: UUID) -> None: ...

        def _register_providers_again(self) -> None: ...

    def _startup(self, call: Callable[[], T], what: str) -> T:
        """Make a registration, trying again while the server cannot be reached."""
        return retry_startup(call, self._startup_tries, what, self._stopped)

    def create_worker(self) -> UUID:
        """Create this manager's worker now (`POST /workers`), unless it has one."""

        def create() -> UUID:
            worker_id = self._worker_or_create()
            return worker_id if worker_id is not None else self._create_worker()

        return self._startup(create, "creating the worker")

    def _create_worker(self) -> UUID:
        """`POST /workers`, as the creator (see `_worker_or_create`)."""
        try:
            worker = self._rest.create_worker()
        except BaseException:
            self._created(None)
            raise
        self._created(worker.id, worker.last_heartbeat)
        return worker.id

    def _worker_or_create(self) -> UUID | None:
        """The worker to act as; None: the caller must create it, then `_created()`.

        Waits while another thread creates the worker.
        """
        with self._changed:
            while self._creating:
                self._check_connected()
                self._changed.wait()
            self._check_connected()
            if self._worker_id is None:
                self._creating = True
            return self._worker_id

    def _created(
        self, worker_id: UUID | None, last_heartbeat: datetime | None = None
    ) -> None:
        """End this thread's worker creation: the new worker, or None if it failed."""
        with self._changed:
            self._creating = False
            self._changed.notify_all()
            disconnected = self._disconnected
            if worker_id is not None and not disconnected:
                self._worker_id = worker_id
                self._last_heartbeat = last_heartbeat
        if worker_id is None:
            return
        if disconnected:
            # disconnect() ran during the request and never knew this worker.
            self._delete_worker(worker_id)
            raise JobLibError("the manager disconnected while creating its worker")
        if self._heartbeat is not None:
            self._heartbeat.start()  # a no-op once disconnect() stopped it

    def _check_connected(self) -> None:
        if self._disconnected:
            raise JobLibError("the manager is disconnected; build a new one")

    def _require_worker(self) -> UUID:
        with self._lock:
            self._check_connected()
            worker_id = self._worker_id
        if worker_id is None:
            raise JobLibError("no worker: register a job or call create_worker()")
        return worker_id

    # heartbeat

    def heartbeat(self) -> datetime:
        """Tell the server this worker is alive; return the recorded time."""
        return self._heartbeat_as(self._require_worker())

    def _heartbeat_as(self, worker_id: UUID) -> datetime:
        with self._lock:
            held = [task for task, owner in self._held.items() if owner == worker_id]
        answer = self._rest.heartbeat(worker_id, held)
        with self._lock:
            if self._worker_id == worker_id:
                self._last_heartbeat = answer.last_heartbeat
        # Listed tasks to stop: cancelled, past their deadline, or not ours now.
        self._running.cancel_listed(answer.cancelled)
        return answer.last_heartbeat

    def _beat(self) -> None:
        with self._lock:
            worker_id = self._worker_id
        if worker_id is None or self._beat_rides_socket(worker_id):
            return
        try:
            self._heartbeat_as(worker_id)
        except WorkerNotFoundError:
            self._recover(worker_id)
            return
        except JobLibError as exc:
            if not is_transient(exc):
                raise
            # An outage: the next beat tries again; no traceback for it.
            logger.warning("heartbeat of worker %s failed: %s", worker_id, exc)
            self._serving.unreachable(exc)
            return
        self._serving.reachable()
        self._resume_if_pending()

    def _beat_rides_socket(self, worker_id: UUID) -> bool:
        """Whether this beat may be left to the socket, the server recording it.

        Only while idle: a beat that lists held tasks also learns which to stop,
        and after a claim that got no answer the listed beats let go of a task
        we may hold unknowingly. A rejoin still owed needs the beat as well.
        """
        with self._lock:
            if self._socket_beats is None or self._resume_pending:
                return False
            if self._beats_owed > 0:
                self._beats_owed -= 1
                return False
            if any(owner == worker_id for owner in self._held.values()):
                return False
        return bool(getattr(self._tsio, "connected", False))

    def _owe_beats(self) -> None:
        """A claim got no answer: send the next two beats, listing what we hold.

        Two, because a heartbeat lets go only of tasks claimed longer than the
        server's margin (10 s) ago, and the first may come sooner.
        """
        with self._lock:
            self._beats_owed = 2

    def _on_socket_down(self, *_args: Any) -> None:
        """The socket dropped: heartbeat over REST until a join says otherwise."""
        with self._lock:
            self._socket_beats = None

    def _delete_worker(self, worker_id: UUID) -> None:
        try:
            receipt = self._rest.delete_worker(worker_id)
        except NotFoundError:
            logger.debug("worker %s was already removed", worker_id)
            return
        except JobLibError as exc:
            logger.error("could not remove worker %s: %s", worker_id, exc)
            return
        if receipt is not None and (receipt.failed or receipt.requeued):
            logger.info(
                "worker %s removed with tasks in flight: %d failed, %d requeued",
                worker_id,
                len(receipt.failed),
                len(receipt.requeued),
            )

    # the socket

    def _emit(self, event: Event) -> None:
        assert self._tsio is not None
        ack = send(self._tsio, event)
        if isinstance(ack, Mapping) and ack.get("ok") is False:
            raise error_for_problem(ack.get("error") or {})
        if isinstance(event, JoinJobRoom | JoinProviderRoom) and isinstance(
            ack, Mapping
        ):
            try:
                beats = JoinAck.model_validate(ack).heartbeat_seconds
            except ValidationError:
                beats = None  # an answer we do not read: keep heartbeating
            if beats is not None:
                with self._lock:
                    self._socket_beats = beats

    def _on_connect(self) -> None:
        """The socket (re)connected: the server forgot the rooms of the old one."""
        with self._lock:
            self._socket_beats = None  # until a join on this socket says so
        self._resume()

    def _resume_if_pending(self) -> None:
        if self._resume_pending:
            self._resume()

    def _resume(self) -> None:
        """Come back after a reconnection, as the same worker if the server knows it.

        A heartbeat asks: 200, and every job's room is joined again under the old
        worker id (a job the worker no longer serves is registered again under
        it); 404, and the jobs are registered under a new worker (`_recover`).
        When the server cannot be reached, the next request that gets through
        (a heartbeat, a claim) tries again.
        """
        with self._lock:
            self._resume_pending = False
            worker_id, registrations = self._worker_id, dict(self._jobs)
        if worker_id is None or self._disconnected:
            return
        try:
            try:
                self._heartbeat_as(worker_id)
                for name, registration in registrations.items():
                    self._rejoin(name, registration, worker_id)
                for served in self._providers.all().values():
                    self._rejoin_provider(served, worker_id)
            except (WorkerNotFoundError, ForbiddenError) as exc:
                logger.info("coming back as worker %s refused: %s", worker_id, exc)
                self._recover(worker_id)
        except JobLibError as exc:
            if is_transient(exc):
                logger.warning("coming back as worker %s failed: %s", worker_id, exc)
                with self._lock:
                    self._resume_pending = not self._disconnected
            else:
                # Not for want of the server (a refused registration, a
                # disconnect): the claims that follow meet it where it is raised.
                logger.error("coming back as worker %s failed: %s", worker_id, exc)
            return
        # Tasks may have been submitted while the socket was down.
        self._wakeup.set()

    def _rejoin(self, name: str, registration: _Registration, worker_id: UUID) -> None:
        if self._tsio is None:
            return
        join = JoinJobRoom(job_name=name, worker_id=str(worker_id))
        try:
            self._emit(join)
        except ForbiddenError as exc:
            # The worker is known but no longer serves the job: serve it again.
            logger.info("registering %s again as worker %s: %s", name, worker_id, exc)
            self._put_job(registration, worker_id)
            self._emit(join)

    def _recover(self, stale: UUID) -> bool:
        """Register every job again under a new worker, after the server lost `stale`.

        Returns False when there is nothing to recover (the manager disconnected).
        Several threads may find the loss at once: one recovers, the others wait
        for it. Until the new worker exists, `worker_id` stays `stale`, so a
        recovery that fails is tried again by the next request that finds it.
        """
        with self._changed:
            while self._creating and not self._disconnected:
                self._changed.wait()
            if self._disconnected or self._worker_id != stale:
                return self._worker_id is not None
            self._creating = True
            registrations = list(self._jobs.values())
        logger.warning("the server no longer knows worker %s; registering again", stale)
        if not registrations:
            self._create_worker()
        else:
            # The first registration creates the new worker, the others join it.
            first, *others = registrations
            full_name, worker_id = self._put_job(first, None)
            self._join_room(full_name, worker_id)
            for registration in others:
                self._register(registration)
        self._register_providers_again()
        return True
