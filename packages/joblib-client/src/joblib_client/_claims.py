"""Claiming tasks: one claim, and `listen()`'s loop of claims.

`Claiming` claims a task for the manager's worker and lists it among the tasks
the worker holds (every heartbeat names them) until the manager lets go of it;
`listen()` claims again and again, parking claims on the server, woken by the
socket, and riding out an outage.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import overload
from uuid import UUID

from pydantic import ValidationError

from joblib_client._compat import listen_arguments
from joblib_client._reports import Reporter
from joblib_client._retry import Backoff, is_refusal, is_transient
from joblib_client._worker import WorkerIdentity
from joblib_client.exceptions import JobLibError, WorkerNotFoundError
from joblib_client.task import ClaimedTask
from joblib_protocol import TaskResponse, TaskStatus

logger = logging.getLogger("joblib_client")

POLLING_SECONDS = 2.0
"""Default `polling_interval` of `listen()` and of the claim loop of `execute`."""

_STOP_CHECK_SECONDS = 0.2
"""How often a sleeping `listen()` looks at its stop events."""

_OUTAGE_PAUSE_MAX_SECONDS = 5.0
"""Longest pause of `listen()` between failed claims (it starts at the polling
interval and doubles); a socket that reconnects cuts it short."""

SERVE_PARK_SECONDS = 300.0
"""Longest the claim loop of `execute` asks the server to hold a claim (the
server caps it at its `long_poll_max_wait_seconds`, 300 s by default): one claim
per idle worker every five minutes. `close()` ends it at once."""

_PARK_SECONDS = 2.0
"""Longest a `listen()` claim is held by the server: a parked claim cannot be
interrupted, so this is also how long a set `stop_event` may take to end
`listen()` (`disconnect()` ends it at once)."""


class Claiming(WorkerIdentity):
    """Claim tasks and listen for them (a mixin of `JobManager`)."""

    _reporter: Reporter
    _claims_park: bool | None
    _listeners: set[threading.Event]

    def claim(
        self,
        *,
        start: bool = True,
        wait: float | None = None,
        request_id: str | None = None,
    ) -> ClaimedTask | None:
        """Claim the oldest pending task of this worker's jobs; None when none waits.

        With `start` (the default) the task comes back already running, saving a
        request; a server without that extension hands it back claimed, and
        `run()` starts it. With `wait`, a server that supports it holds the claim
        up to `wait` seconds until a task comes. A task whose payload does not fit
        its extension is failed with the validation error, and the next one is
        claimed. `request_id` names the claim (a fresh one if not given): when a
        claim failed for want of an answer, sending it again with the same id gets
        back the task the lost answer carried instead of a second one.
        """
        while True:
            worker_id = self._require_worker()
            response, parked = self._rest.claim_task(
                worker_id,
                start=start,
                wait=wait,
                request_id=request_id or uuid.uuid4().hex,
            )
            self._claims_park = parked if wait else self._claims_park
            if response is None:
                return None
            with self._lock:
                self._held[response.id] = worker_id
            task = self._claimed(response, worker_id)
            if task is not None:
                return task
            request_id = None  # the next task is a new claim

    def _claimed(self, response: TaskResponse, worker_id: UUID) -> ClaimedTask | None:
        registration = self._jobs.get(response.job_name)
        if registration is None:
            error = f"this worker no longer serves {response.job_name}"
        else:
            try:
                extension = registration.cls.model_validate(response.payload)
            except ValidationError as exc:
                error = f"invalid payload for {response.job_name}: {exc}"
            else:
                return ClaimedTask(
                    id=response.id,
                    job_name=response.job_name,
                    room_id=response.room_id,
                    extension=extension,
                    status=response.status,
                    worker_id=worker_id,
                    attempt=response.attempt,
                    run_kwargs=dict(registration.run_kwargs),
                )
        logger.warning("failing task %s: %s", response.id, error)
        try:
            self._reporter.update(response.id, worker_id, TaskStatus.FAILED, error)
        except JobLibError as exc:
            if not (is_refusal(exc) or is_transient(exc)):
                raise
            # Cancelled or given to another worker meanwhile, or the server stayed
            # away: either way there is nothing more this worker can do about it.
            logger.warning("task %s could not be failed: %s", response.id, exc)
        finally:
            self._let_go(response.id)
        return None

    def _let_go(self, task_id: UUID) -> None:
        """Stop listing a task in heartbeats: the manager is done with it."""
        with self._lock:
            self._held.pop(task_id, None)

    @overload
    def listen(
        self,
        stop_event: threading.Event | None = None,
        polling_interval: float = POLLING_SECONDS,
        *,
        park_claims: bool = True,
    ) -> Iterator[ClaimedTask]: ...

    @overload
    def listen(
        self,
        polling_interval: float,
        stop_event: threading.Event | None = None,
        /,
        *,
        park_claims: bool = True,
    ) -> Iterator[ClaimedTask]: ...

    def listen(
        self,
        stop_event: threading.Event | float | None = None,
        polling_interval: float | threading.Event | None = None,
        *,
        park_claims: bool = True,
    ) -> Iterator[ClaimedTask]:
        """Yield claimed tasks until `stop_event` is set or the manager disconnects.

        The two may also come the other way round, `listen(2.0, stop)`, as
        zndraw-joblib's `listen(polling_interval, stop_event)` takes them.

        With `park_claims`, each claim asks the server to hold it until a task
        comes (`Prefer: wait`, up to `polling_interval` and at most 2 s). A server
        that does not hold claims answers at once; `listen()` then waits
        `polling_interval` seconds between empty claims, or less when the socket
        announces a task for one of its jobs. While the server cannot be reached
        or answers 5xx, `listen()` logs each failed claim and tries again, pausing
        from `polling_interval` doubling up to 5 s (less when the socket
        reconnects); it never ends for such an error. A claim that got no answer is
        sent again under the same request id, so a task it took comes back rather
        than staying claimed by nobody. A worker the server forgot is registered
        again.
        """
        stop, interval = listen_arguments(stop_event, polling_interval, POLLING_SECONDS)
        return self._listen(stop, interval, park_claims)

    def _listen(
        self,
        stop_event: threading.Event | None,
        polling_interval: float,
        park_claims: bool,
        park_seconds: float = _PARK_SECONDS,
    ) -> Iterator[ClaimedTask]:
        park = min(polling_interval, park_seconds) if park_claims else 0.0
        outage = Backoff(
            polling_interval, max(polling_interval, _OUTAGE_PAUSE_MAX_SECONDS)
        )
        stop = threading.Event()
        with self._lock:
            self._check_connected()
            self._listeners.add(stop)
        # A claim that got no answer is sent again under its id: if it took a task,
        # the server answers that task again.
        request_id: str | None = None
        try:
            while not _any_set(stop, stop_event):
                # Cleared before the claim, so an announcement arriving during
                # the claim still cuts the following wait short.
                self._wakeup.clear()
                started = time.monotonic()
                request_id = request_id or uuid.uuid4().hex
                try:
                    task = self._claim_or_recover(park, request_id)
                except JobLibError as exc:
                    if _any_set(stop, stop_event):
                        return
                    if not is_transient(exc):
                        raise
                    self._serving.unreachable(exc)
                    if _any_set(stop, stop_event):
                        return  # disconnected, or given up on the server
                    pause = outage.next()
                    logger.warning(
                        "claiming failed (%d in a row), again in %.1f s: %s",
                        outage.failures,
                        pause,
                        exc,
                    )
                    self._sleep(pause, stop, stop_event)
                    continue
                request_id = None
                self._serving.reachable()
                if outage.failures:
                    logger.info("claiming works again")
                    outage.reset()
                self._resume_if_pending()
                if task is not None:
                    yield task
                    continue
                # A claim the server held long enough was the wait. An empty
                # answer that came sooner (a server that does not hold claims, or
                # caps the wait at nothing) needs the pause.
                held = time.monotonic() - started
                # A server may cap a long wait at less; a held claim at all
                # (one second or more) tells it from one answered at once.
                enough = min(park, _PARK_SECONDS) / 2
                if not (park and self._claims_park and held >= enough):
                    self._sleep(polling_interval, stop, stop_event)
        finally:
            with self._lock:
                self._listeners.discard(stop)

    def _claim_or_recover(self, wait: float, request_id: str) -> ClaimedTask | None:
        worker_id = self._require_worker()
        # A server known not to hold claims is asked without the header.
        ask = None if self._claims_park is False or wait <= 0 else wait
        try:
            return self.claim(wait=ask, request_id=request_id)
        except JobLibError as exc:
            if not isinstance(exc, WorkerNotFoundError):
                if is_transient(exc):
                    self._owe_beats()
                raise
            if not self._recover(worker_id):
                raise
            return self.claim(wait=ask)

    def _sleep(
        self,
        seconds: float,
        stop: threading.Event,
        stop_event: threading.Event | None,
    ) -> None:
        deadline = time.monotonic() + seconds
        while not _any_set(stop, stop_event):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self._wakeup.wait(min(remaining, _STOP_CHECK_SECONDS)):
                return


def _any_set(*events: threading.Event | None) -> bool:
    return any(event is not None and event.is_set() for event in events)
