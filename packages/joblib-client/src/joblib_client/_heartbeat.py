"""A daemon thread that calls one function at a fixed interval until stopped."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

logger = logging.getLogger("joblib_client")


class Ticker:
    """Calls `action` every `interval` seconds in a background thread."""

    def __init__(
        self, interval: float, action: Callable[[], object], name: str
    ) -> None:
        if interval <= 0:
            raise ValueError("the interval must be positive")
        self.interval = interval
        self.action = action
        self.name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """Tell whether the thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the thread, unless it already runs."""
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for its current call to end."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.action()
            except Exception:
                # One failed beat must not end the thread: the next may succeed.
                logger.exception("%s failed", self.name)
