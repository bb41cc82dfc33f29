"""A daemon thread that calls one function at a fixed interval until stopped."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

logger = logging.getLogger("joblib_client")


class Ticker:
    """Calls `action` every `interval` seconds in a background thread.

    Stopping is final: a stopped ticker never starts again, whoever asks (the
    manager starts it after each new worker, from whichever thread made it).
    """

    def __init__(
        self, interval: float, action: Callable[[], object], name: str
    ) -> None:
        if interval <= 0:
            raise ValueError("the interval must be positive")
        self.interval = interval
        self.action = action
        self.name = name
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """Tell whether the thread is alive (it may be ending its last call)."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    @property
    def stopped(self) -> bool:
        """Tell whether `stop()` was called."""
        return self._stop.is_set()

    def start(self) -> None:
        """Start the thread, unless it already runs or the ticker was stopped."""
        with self._lock:
            if self._stop.is_set() or self.running:
                return
            self._thread = threading.Thread(
                target=self._run, name=self.name, daemon=True
            )
            self._thread.start()

    def stop(self, *, wait: bool = True) -> None:
        """Stop for good; with `wait`, also wait for a call in progress to end."""
        self._stop.set()
        with self._lock:
            thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.action()
            except Exception:
                # One failed beat must not end the thread: the next may succeed.
                logger.exception("%s failed", self.name)
