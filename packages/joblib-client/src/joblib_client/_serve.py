"""Serving in the background: the claim loop of `JobManager(execute=...)`, the
outage that ends it, and `serve()`'s wait for a signal."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

logger = logging.getLogger("joblib_client")

DRAIN_SECONDS = 10.0
"""How long `serve()` lets the task in hand finish after a signal before the worker
is removed (which fails or requeues it on the server); a second signal cuts it short."""

_POLL_SECONDS = 0.1
"""How often `serve()` looks at a signal's flag: the handler only sets a flag, as a
handler that took a lock could deadlock against the thread it interrupted."""

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Outage:
    """How long the server has been unreachable, and whether that is too long.

    `failed()` starts the clock (later failures leave its start alone), `ok()`
    stops it. `limit` None: never too long.
    """

    def __init__(self, limit: float | None) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._since: float | None = None

    def failed(self) -> bool:
        """Count a request that got no answer (or a 5xx); True once past the limit."""
        with self._lock:
            now = time.monotonic()
            if self._since is None:
                self._since = now
            return self.limit is not None and now - self._since > self.limit

    def ok(self) -> None:
        """An answer came: the outage, if any, is over."""
        with self._lock:
            self._since = None

    @property
    def seconds(self) -> float:
        """How long the current outage has lasted (0 when there is none)."""
        with self._lock:
            return 0.0 if self._since is None else time.monotonic() - self._since


class Serving:
    """The background claim loop (when there is one) and the end of serving.

    `loop(stop)` claims and runs tasks until `stop` is set; it runs in one daemon
    thread from `start()` on. `ended` is set by `end()`: the manager
    disconnected, the server stayed unreachable for more than `max_unreachable`
    seconds (see `unreachable()`), or the loop failed; `serve()` returns then.
    """

    def __init__(
        self,
        loop: Callable[[threading.Event], None] | None,
        max_unreachable: float | None,
    ) -> None:
        self._loop = loop
        self.outage = Outage(max_unreachable)
        self.stop_claiming = threading.Event()
        self.ended = threading.Event()
        self.reason: str | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._drained = False
        self.waiting = False  # serve() is blocking

    @property
    def claims(self) -> bool:
        """Tell whether this manager claims tasks on its own (it has `execute`)."""
        return self._loop is not None

    def start(self) -> None:
        """Start the claim loop, unless there is none, it runs, or serving ended."""
        with self._lock:
            if self._loop is None or self._thread is not None or self.ended.is_set():
                return
            self._thread = threading.Thread(
                target=self._run, args=(self._loop,), name="joblib serve", daemon=True
            )
            self._thread.start()

    def end(self, reason: str) -> None:
        """Stop claiming and end serving; the first reason given is kept."""
        with self._lock:
            if self.reason is None:
                self.reason = reason
        self.stop_claiming.set()
        self.ended.set()

    def unreachable(self, exc: Exception) -> None:
        """A request got no answer (or a 5xx): end serving once that lasted too long.

        Only for a manager that claims on its own or is in `serve()`: one that
        does neither leaves outages to its own `listen()`, which never gives up.
        """
        past_limit = self.outage.failed()
        if not past_limit or self.ended.is_set() or not (self.claims or self.waiting):
            return
        logger.error(
            "the server has been unreachable for %.0f s (more than %g s); stopping: %s",
            self.outage.seconds,
            self.outage.limit,
            exc,
        )
        self.end(f"the server was unreachable for {self.outage.limit:g} s")

    def reachable(self) -> None:
        """A request got its answer: any outage is over."""
        self.outage.ok()

    def drain(
        self, timeout: float, cut_short: Callable[[], bool] = lambda: False
    ) -> bool:
        """Stop claiming; wait up to `timeout` s for the task in hand to be reported.

        Only the first call waits. Returns False when the loop was still
        running a task at the end of that wait.
        """
        self.stop_claiming.set()
        with self._lock:
            thread, drained, self._drained = self._thread, self._drained, True
        if drained or thread is None or thread is threading.current_thread():
            return True
        deadline = time.monotonic() + timeout
        while thread.is_alive() and not cut_short():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            thread.join(min(remaining, _POLL_SECONDS))
        return not thread.is_alive()

    def _run(self, loop: Callable[[threading.Event], None]) -> None:
        try:
            loop(self.stop_claiming)
        except Exception as exc:
            # A refusal no retry mends (401, the worker's jobs refused): the
            # worker cannot serve any more, so serve() must not block forever.
            logger.exception("serving tasks failed; stopping")
            self.end(f"serving failed: {exc}")


class Signals:
    """SIGINT and SIGTERM caught while `serve()` waits, counted, not acted upon."""

    def __init__(self) -> None:
        self.received: list[int] = []

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)

    @contextmanager
    def caught(self) -> Iterator[Signals]:
        """Catch the signals for the block (main thread only; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {number: signal.getsignal(number) for number in _SIGNALS}
        for number in _SIGNALS:
            signal.signal(number, self._handle)
        try:
            yield self
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)


def serve_until_ended(
    serving: Serving,
    close: Callable[[], None],
    drain_seconds: float,
    idle: Callable[[], bool] = lambda: False,
) -> None:
    """Block until a signal or the end of serving, let the task in hand end, close.

    With no task in hand (`idle()`), it closes at once: the claim loop may be
    waiting in a held claim, which the close answers.
    """
    signals = Signals()
    serving.waiting = True
    with signals.caught():
        while not signals.received and not serving.ended.wait(_POLL_SECONDS):
            pass
        if signals.received:
            name = signal.Signals(signals.received[0]).name
            logger.info("%s received: finishing the task in hand, then leaving", name)
            serving.end(f"{name} received")
        elif serving.reason is not None:
            logger.info("stopped serving: %s", serving.reason)
        if not serving.drain(
            drain_seconds, lambda: len(signals.received) > 1 or idle()
        ):
            logger.warning("leaving with a task still running")
        close()
