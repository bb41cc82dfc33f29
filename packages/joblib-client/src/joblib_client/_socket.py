"""The Socket.IO transport: protocol events out, server events in, with acks."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import httpx
import socketio

from joblib_client._failures import unreachable
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


def send(tsio: Tsio, event: Event) -> object:
    """Emit `event` through `tsio`; return the acknowledgement, if any.

    A host's own wrapper (zndraw-socketio's) lets python-socketio's errors through;
    they are raised as `TransportError`, as `SocketClient` raises them.
    """
    try:
        return tsio.emit(event)
    except socketio.exceptions.SocketIOError as exc:
        name = event.event_name()
        raise TransportError(
            f"cannot send {name}: {exc or type(exc).__name__}"
        ) from exc


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
        # What the server said when it last refused the connection (`connect_error`).
        self._refusal: str | None = None
        self.on("connect_error", self._on_connect_error)

    @property
    def connected(self) -> bool:
        """Tell whether the connection is up."""
        return bool(self.client.connected)

    def connect(self) -> None:
        """Connect and authenticate with the token (`auth={"token": ...}`).

        Raises `TransportError` saying why it failed: `reason="rejected"` with
        the server's refusal (`unauthorized: …`, `too many connections: …`), or
        why the server could not be reached (see `TransportFailure`).
        """
        self._refusal = None
        try:
            self.client.connect(
                self.url,
                headers=self.headers,
                auth=self.auth,
                transports=self.transports,
                wait_timeout=self.connect_timeout,
            )
        except socketio.exceptions.ConnectionError as exc:
            raise self._connect_failure(exc) from exc

    def _on_connect_error(self, data: Any = None) -> None:
        message = data.get("message") if isinstance(data, Mapping) else data
        if isinstance(message, str) and message != "Connection error":
            self._refusal = message

    def _connect_failure(self, exc: BaseException) -> TransportError:
        refusal = self._refusal or _refusal_in_answer(exc)
        if refusal is not None:
            if refusal.startswith("unauthorized"):
                refusal += (
                    " (the server does not accept the token given)"
                    if self._sends_token()
                    else " (no token was given)"
                )
            return TransportError(
                f"socket connection to {self.url} refused: {refusal}",
                reason="rejected",
                url=self.url,
            )
        if str(exc) == "Unexpected connection error":
            # The handshake got no answer within `connect_timeout`.
            return TransportError(
                f"cannot reach {self.url}: no answer to the Socket.IO handshake "
                f"within {self.connect_timeout:g} s",
                reason="timeout",
                url=self.url,
            )
        reason, why = unreachable(exc, self.url, httpx.Timeout(self.connect_timeout))
        return TransportError(
            f"cannot reach {self.url}: {why}", reason=reason, url=self.url
        )

    def _sends_token(self) -> bool:
        headers = {name.lower() for name in self.headers}
        return self.auth is not None or "authorization" in headers

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


def _refusal_in_answer(exc: BaseException) -> str | None:
    """What the server answered to the WebSocket handshake, if it refused it.

    An Engine.IO-level refusal (a server at its `max_sockets`) answers the
    upgrade request with an error status, and a JSON body with the reason when
    the ASGI server can send one (uvicorn's wsproto sends none); websocket-client
    keeps both on its exception, deep in the chain.
    """
    current: BaseException | None = exc
    for _ in range(10):
        if current is None:
            return None
        status = getattr(current, "status_code", None)
        if isinstance(status, int):
            body = getattr(current, "resp_body", None)
            try:
                message = json.loads(body).get("message") if body else None
            except (ValueError, AttributeError):
                message = None
            if isinstance(message, str):
                return message
            return (
                f"HTTP {status} to the WebSocket handshake, without a reason "
                "(a joblib server answers so when it holds max_sockets sessions)"
            )
        current = current.__cause__ or current.__context__
    return None
