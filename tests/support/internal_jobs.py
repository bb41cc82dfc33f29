"""`Extension` classes that tests run as `@internal` jobs, and what they saw.

Importable by name (`tests.support.internal_jobs:Double`), so the standalone
server's settings and a taskiq worker process can load them too.
"""

from __future__ import annotations

import threading
import time
from typing import Any, ClassVar

from joblib_client import Category, Extension, current_task
from joblib_protocol import CancelReason


class Seen:
    """What the running jobs of this process saw; `reset()` between tests."""

    lock = threading.Lock()
    running = 0
    most_running = 0
    cancelled: ClassVar[dict[str, CancelReason | None]] = {}
    started: ClassVar[set[str]] = set()
    release = threading.Event()

    @classmethod
    def reset(cls) -> None:
        with cls.lock:
            cls.running = cls.most_running = 0
            cls.cancelled = {}
            cls.started = set()
            cls.release = threading.Event()


class Double(Extension):
    """Returns twice its value, with one progress report on the way."""

    category: ClassVar[Category] = Category.MODIFIER
    value: int = 1

    def run(self, **kwargs: Any) -> Any:
        current_task().progress(1, 2, "halfway")
        return {"value": self.value * 2, **kwargs}


class Boom(Extension):
    """Always raises."""

    category: ClassVar[Category] = Category.ANALYSIS

    def run(self, **kwargs: Any) -> Any:
        raise ValueError("boom went the job")


class Sleepy(Extension):
    """Runs until its task is cancelled (or `seconds` pass), and notes the reason."""

    category: ClassVar[Category] = Category.MODIFIER
    seconds: float = 30

    def run(self, **kwargs: Any) -> Any:
        task = current_task()
        with Seen.lock:
            Seen.started.add(str(task.id))
        if task.cancelled.wait(self.seconds):
            with Seen.lock:
                Seen.cancelled[str(task.id)] = task.cancel_reason
            # For a test that runs this in another process (a taskiq worker).
            print(f"stopped {task.id} {task.cancel_reason}", flush=True)
            return "stopped"
        return "slept"


class Gate(Extension):
    """Waits for `Seen.release`, counting how many run at once."""

    category: ClassVar[Category] = Category.SELECTION

    def run(self, **kwargs: Any) -> Any:
        with Seen.lock:
            Seen.running += 1
            Seen.most_running = max(Seen.most_running, Seen.running)
        try:
            deadline = time.monotonic() + 30
            while not Seen.release.wait(0.01) and time.monotonic() < deadline:
                if current_task().cancelled.is_set():
                    break
        finally:
            with Seen.lock:
                Seen.running -= 1
        return None


NotAnExtension = object()
"""A name that resolves, to something that is not an `Extension` class."""
