"""Which failures are worth trying again, and how long to wait between tries."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import TypeVar

from joblib_client.exceptions import (
    InternalJobNotConfiguredError,
    JobLibError,
    RequestTimeoutError,
    RoomLockedError,
    ServerError,
    TransportError,
)

logger = logging.getLogger("joblib_client")

T = TypeVar("T")


def is_transient(exc: BaseException) -> bool:
    """Tell whether the same request may succeed later.

    No answer, a 5xx, a body that came too slowly (408), or a room the host has
    locked for now (423).
    """
    if isinstance(exc, InternalJobNotConfiguredError):
        return False  # a 503 that stays until the server's configuration changes
    return isinstance(
        exc, TransportError | ServerError | RequestTimeoutError | RoomLockedError
    )


def is_refusal(exc: JobLibError) -> bool:
    """Tell whether a task report was refused because the task is not ours any more.

    403 (the worker was removed), 404 (the task is gone) and 409 (another worker
    holds it now, or it ended: cancelled, or failed with its worker).
    """
    return exc.status in (403, 404, 409)


class Backoff:
    """Delays that double from `first` up to `cap`; with `jitter`, each 50-100 % of it.

    Jitter spreads out the workers that all lost the same server, so they do not
    come back to it in one burst.
    """

    def __init__(self, first: float, cap: float, *, jitter: bool = False) -> None:
        self.first = first
        self.cap = max(cap, first)
        self.jitter = jitter
        self.failures = 0

    def next(self) -> float:
        """Count one more failure; return how long to wait before the next try."""
        self.failures += 1
        delay = min(self.first * 2 ** min(self.failures - 1, 30), self.cap)
        return delay * random.uniform(0.5, 1.0) if self.jitter else delay

    def reset(self) -> None:
        """Start again from `first` (the last try succeeded)."""
        self.failures = 0


STARTUP_FIRST_SECONDS = 1.0
STARTUP_MAX_SECONDS = 30.0
"""Startup retries wait about 1, 2, 4, 8 ... s, at most 30 (each 50-100 % of it)."""


def retry_startup(
    call: Callable[[], T], tries: int, what: str, stopped: threading.Event
) -> T:
    """Make `call` up to `tries` times while the server cannot be reached.

    Between tries it waits with a doubling backoff (cut short by `stopped`); a
    refusal (4xx) is raised at once, and the last failure when no try is left.
    """
    backoff = Backoff(STARTUP_FIRST_SECONDS, STARTUP_MAX_SECONDS, jitter=True)
    while True:
        try:
            return call()
        except JobLibError as exc:
            if not is_transient(exc) or backoff.failures + 1 >= tries:
                raise
            delay = backoff.next()
            logger.warning(
                "%s failed (try %d of %d), again in %.1f s: %s",
                what,
                backoff.failures,
                tries,
                delay,
                exc,
            )
            if stopped.wait(delay):
                raise
