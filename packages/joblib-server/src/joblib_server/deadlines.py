"""Deadlines uvicorn does not keep: for a request's headers, and for its body.

uvicorn closes a keep-alive connection that sits idle between requests
(`timeout_keep_alive`), but a connection that opens and then sends its request
line and headers one byte at a time, or announces a body and never sends it,
stays open as long as the client likes: a few hundred such slow-loris clients
take every file descriptor. `JobLibServer` therefore serves with uvicorn's own
HTTP protocol wrapped by `with_deadlines`:

- the headers of a request must all arrive within `header_timeout` of the
  connection opening or of the previous answer;
- its body within `body_timeout` of its headers (the REST routes answer 408
  `request-timeout` a little earlier themselves, `Settings.body_timeout_seconds`;
  this catches every other route, Engine.IO's long-polling POSTs included).

A request fully received is never cut: long-polls and WebSockets live on.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

logger = logging.getLogger("joblib_server.deadlines")

BODY_GRACE_SECONDS = 1.0
"""How much longer than the REST routes' own body timeout the connection waits:
they answer with a 408 problem document first, the connection is only closed."""


def with_deadlines(
    protocol_class: type[Any], header_timeout: float, body_timeout: float
) -> type[asyncio.Protocol]:
    """uvicorn's `protocol_class` (httptools or h11), closing connections too slow."""
    if getattr(protocol_class, "joblib_deadlines", False):
        return protocol_class

    class Deadlines(protocol_class):
        joblib_deadlines = True
        _deadline: asyncio.TimerHandle | None = None
        _waiting_for = "headers"
        _timed_cycle: object = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self._arm("headers", header_timeout)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            cycle = self.cycle
            if cycle is None or cycle.response_complete:
                return  # the next request's headers are still on their way
            if cycle.more_body:
                if self._timed_cycle is not cycle:
                    self._timed_cycle = cycle
                    self._arm("the body", body_timeout)
            elif self._deadline is not None:
                self._disarm()  # all received: the answer may take its time

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm("headers", header_timeout)

        def handle_websocket_upgrade(self, *args: Any) -> None:
            self._disarm()
            super().handle_websocket_upgrade(*args)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self, waiting_for: str, seconds: float) -> None:
            self._disarm()
            self._waiting_for = waiting_for
            self._deadline = self.loop.call_later(seconds, self._expired, seconds)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self, seconds: float) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            logger.info(
                "closed a connection from %s: %s did not arrive within %g s",
                _peer(self.client),
                self._waiting_for,
                seconds,
            )
            self.transport.close()

    Deadlines.__name__ = Deadlines.__qualname__ = f"Deadlines{protocol_class.__name__}"
    return Deadlines


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "an unknown peer"
