"""A background sender of task progress: the latest value per task, never blocking."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from uuid import UUID

from joblib_client._retry import Backoff, is_transient
from joblib_client.exceptions import (
    JobLibError,
    TaskNotRunningError,
    TaskWorkerMismatchError,
)
from joblib_protocol import TaskProgressRequest

logger = logging.getLogger("joblib_client")

SEND_INTERVAL_SECONDS = 0.1
"""Pause between rounds of sends: the server shows at most ~10 updates a second per
task anyway, and a job reporting in a tight loop must not flood it."""

OUTAGE_FIRST_SECONDS = 0.5
OUTAGE_MAX_SECONDS = 5.0
"""Pauses after a send failed for want of the server: 0.5 s doubling up to 5 s."""

Send = Callable[[UUID, TaskProgressRequest], None]
Refused = Callable[[UUID, JobLibError], None]


class ProgressSender:
    """Sends `PUT /tasks/{id}/progress` from one daemon thread, started lazily.

    `put()` only stores the value: a value not yet sent when a newer one comes is
    dropped. A refusal saying the task is not running here any more (409
    `task-not-running` or `task-worker-mismatch`) goes to `refused`; any other
    failure is logged, and during an outage the latest value is sent again later.
    Stopping is final.
    """

    def __init__(
        self,
        send: Send,
        refused: Refused,
        *,
        interval: float = SEND_INTERVAL_SECONDS,
        name: str = "joblib progress",
    ) -> None:
        self.send = send
        self.refused = refused
        self.interval = interval
        self.name = name
        self._cond = threading.Condition()
        self._pending: dict[UUID, TaskProgressRequest] = {}
        self._in_flight: set[UUID] = set()
        # Tasks whose latest value failed to go out for want of the server.
        self._stalled: set[UUID] = set()
        # Tasks whose progress the server refused once: logged once (a server
        # without the route would otherwise fill the log, ten lines a second).
        self._refused: set[UUID] = set()
        self._flushing = 0
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._outage = Backoff(OUTAGE_FIRST_SECONDS, OUTAGE_MAX_SECONDS)

    @property
    def running(self) -> bool:
        """Tell whether the thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def put(self, task_id: UUID, progress: TaskProgressRequest) -> None:
        """Send `progress` for `task_id` soon, replacing a value not yet sent."""
        with self._cond:
            if self._stopped:
                return
            self._pending[task_id] = progress
            self._stalled.discard(task_id)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=self.name, daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def flush(self, task_id: UUID, timeout: float) -> bool:
        """Wait up to `timeout` s for the task's latest value to be sent.

        Returns False when it could not go out in time (an outage, a stop).
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            try:
                while self._waiting(task_id):
                    remaining = deadline - time.monotonic()
                    if self._stopped or task_id in self._stalled or remaining <= 0:
                        return False
                    self._cond.wait(remaining)
                return True
            finally:
                self._flushing -= 1

    def discard(self, task_id: UUID) -> None:
        """Forget a value of the task not yet sent: the manager is done with it."""
        with self._cond:
            self._pending.pop(task_id, None)
            self._stalled.discard(task_id)
            self._refused.discard(task_id)

    def stop(self, *, wait: bool = True) -> None:
        """Stop for good, dropping unsent values; with `wait`, join the thread."""
        with self._cond:
            self._stopped = True
            self._pending.clear()
            self._cond.notify_all()
            thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join()

    def _waiting(self, task_id: UUID) -> bool:
        return task_id in self._pending or task_id in self._in_flight

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                batch, self._pending = self._pending, {}
                self._in_flight = set(batch)
            # One round sends every task's latest value, then pauses.
            pause = 0.0
            for task_id, progress in batch.items():
                pause = max(pause, self._send(task_id, progress))
                with self._cond:
                    self._in_flight.discard(task_id)
                    self._cond.notify_all()
                    if self._stopped:
                        return
            with self._cond:
                # A flush cuts the pause short, unless the server is away.
                self._cond.wait_for(
                    lambda: (
                        self._stopped
                        or (self._flushing > 0 and not self._outage.failures)
                    ),
                    timeout=pause,
                )

    def _send(self, task_id: UUID, progress: TaskProgressRequest) -> float:
        """Send one value; return how long to pause before the next round."""
        try:
            self.send(task_id, progress)
        except (TaskNotRunningError, TaskWorkerMismatchError) as exc:
            self.refused(task_id, exc)
        except JobLibError as exc:
            if not is_transient(exc):
                with self._cond:
                    first = task_id not in self._refused
                    self._refused.add(task_id)
                log = logger.warning if first else logger.debug
                log("progress of task %s refused: %s", task_id, exc)
                return self.interval
            pause = self._outage.next()
            log = logger.warning if self._outage.failures == 1 else logger.debug
            log(
                "progress of task %s not sent (%d in a row), again in %.1f s: %s",
                task_id,
                self._outage.failures,
                pause,
                exc,
            )
            with self._cond:
                # Tried again later, unless a newer value came meanwhile.
                if not self._stopped:
                    self._pending.setdefault(task_id, progress)
                    self._stalled.add(task_id)
            return pause
        except Exception:
            logger.exception("sending the progress of task %s failed", task_id)
            return self.interval
        with self._cond:
            self._stalled.discard(task_id)
        if self._outage.failures:
            logger.info("progress reports get through again")
            self._outage.reset()
        return self.interval
