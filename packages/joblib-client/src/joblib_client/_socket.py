"""The Socket.IO transport: protocol events out, server events in, with acks."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import socketio

from joblib_client.exceptions import TransportError
from joblib_protocol import Event

logger = logging.getLogger("joblib_client.socket")

Handler = Callable[..., object]


class Tsio(Protocol):
    """What the manager needs to send events: a host's socket wrapper fits.

    `emit` may return the server's acknowledgement; a mapping with `"ok": false`
    and an `"error"` problem document is raised as the matching exception.
    """

    def emit(self, event: Event) -> object:
        """Send one protocol event."""
        ...


@runtime_checkable
class EventSource(Protocol):
    """A `Tsio` that also delivers server events; the manager then listens too.

    The manager subscribes to `"connect"` (fired again on every reconnection), to
    `task_available` and to `task_cancelled`.
    """

    def on(self, event: str, handler: Handler) -> None:
        """Call `handler` with the event's arguments whenever `event` arrives."""
        ...


class SocketClient:
    """A `Tsio` over python-socketio's sync `Client`, reconnecting on its own.

    Several handlers may listen to one event, and a failing handler is logged
    instead of killing python-socketio's thread.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        transports: Sequence[str] = ("websocket",),
        ack_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        **client_options: Any,
    ) -> None:
        self.url = url.rstrip("/")
        self.auth = {"token": token} if token else None
        self.headers = dict(headers or {})
        self.transports = list(transports)
        self.ack_timeout = ack_timeout
        self.connect_timeout = connect_timeout
        client_options.setdefault("reconnection", True)
        # A library must not take over the host's Ctrl-C handling.
        client_options.setdefault("handle_sigint", False)
        self.client = socketio.Client(**client_options)
        self._handlers: dict[str, list[Handler]] = {}
        self._lock = threading.Lock()

    @property
    def connected(self) -> bool:
        """Tell whether the connection is up."""
        return bool(self.client.connected)

    def connect(self) -> None:
        """Connect and authenticate with the token (`auth={"token": ...}`)."""
        try:
            self.client.connect(
                self.url,
                headers=self.headers,
                auth=self.auth,
                transports=self.transports,
                wait_timeout=self.connect_timeout,
            )
        except socketio.exceptions.ConnectionError as exc:
            raise TransportError(
                f"socket connection to {self.url} failed: {exc}"
            ) from exc

    def on(self, event: str, handler: Handler) -> None:
        """Call `handler` whenever `event` arrives (`"connect"` on each reconnect)."""
        with self._lock:
            handlers = self._handlers.setdefault(event, [])
            if not handlers:
                self.client.on(event, lambda *args: self._dispatch(event, args))
            handlers.append(handler)

    def _dispatch(self, event: str, args: tuple[Any, ...]) -> None:
        with self._lock:
            handlers = list(self._handlers.get(event, ()))
        for handler in handlers:
            try:
                handler(*args)
            except Exception:
                logger.exception("handler %r of socket event %r failed", handler, event)

    def emit(self, event: Event) -> object:
        """Send `event` and return the server's acknowledgement."""
        name = event.event_name()
        try:
            return self.client.call(name, event.payload(), timeout=self.ack_timeout)
        except socketio.exceptions.BadNamespaceError as exc:
            raise TransportError(f"cannot send {name}: socket not connected") from exc
        except socketio.exceptions.TimeoutError as exc:
            raise TransportError(f"no acknowledgement of {name} in time") from exc

    def close(self) -> None:
        """Disconnect, and stop reconnecting."""
        self.client.shutdown()
