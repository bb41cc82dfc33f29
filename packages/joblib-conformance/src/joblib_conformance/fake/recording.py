"""What the fake server saw: every request and every socket event, in order."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class RestCall:
    """One REST request and the answer it got.

    `identity` is who its credentials stand for (None: none or unknown);
    `path` is relative to `/v1/joblib`; `body` and `answer` are parsed JSON
    (None when empty or not JSON); `headers` are lower-cased.
    """

    at: float
    identity: str | None
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    status: int
    answer: Any


@dataclass(frozen=True)
class SocketCall:
    """One Socket.IO happening: `connect`, `disconnect`, or an event received.

    For `connect`, `ack` is True when the handshake was accepted.
    """

    at: float
    identity: str | None
    sid: str
    event: str
    data: Any
    ack: Any


Call = RestCall | SocketCall


class Recording:
    """The calls in the order the fake server handled them; safe across threads."""

    def __init__(self) -> None:
        self._calls: list[Call] = []
        self._changed = threading.Condition()

    def add(self, call: Call) -> None:
        """Record one call."""
        with self._changed:
            self._calls.append(call)
            self._changed.notify_all()

    @property
    def calls(self) -> list[Call]:
        """Every call so far."""
        with self._changed:
            return list(self._calls)

    def rest(self, identity: str | None = None) -> list[RestCall]:
        """The REST calls (of one identity)."""
        return [
            c
            for c in self.calls
            if isinstance(c, RestCall) and (identity is None or c.identity == identity)
        ]

    def socket(self, identity: str | None = None) -> list[SocketCall]:
        """The socket calls (of one identity)."""
        return [
            c
            for c in self.calls
            if isinstance(c, SocketCall)
            and (identity is None or c.identity == identity)
        ]

    def wait_for(
        self, found: Callable[[Recording], T | None], timeout: float
    ) -> T | None:
        """Wait until `found(self)` is truthy (return it) or `timeout` passes (None)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                value = found(self)
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._changed.wait(remaining)
