"""Socket.IO's front door: who may hold a session, how many, and for how long.

An Engine.IO session costs the server a file descriptor (a WebSocket) or a parked
request before anyone has said who they are. Unnamed sessions used to stay as
long as the client answered pings: 1,007 of them took a 1,024 file limit, and
every legitimate request failed. `SocketGuard`, attached to a python-socketio
`AsyncServer` (`attach_joblib` does it), therefore

- closes an Engine.IO session that has no Socket.IO connection (so no identity)
  `Settings.handshake_timeout_seconds` after it opened, or after it left;
- refuses a session beyond `Settings.max_sockets` in this process before it
  exists (Engine.IO's only refusal: HTTP 401 with the reason as JSON);
- logs a packet that does not decode as one warning line: python-socketio logs
  such garbage, from anyone, at ERROR with a traceback.

The cap per identity (`max_sockets_per_identity`) needs the identity, so
`Realtime.authenticate` applies it when it refuses the Socket.IO CONNECT.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import socketio
from socketio import packet as sio_packet

from joblib_server.logs import protect
from joblib_server.settings import Settings

logger = logging.getLogger("joblib_server.guard")

EioHandler = Callable[..., Awaitable[Any]]


class SocketGuard:
    """Limits on the Engine.IO sessions of one python-socketio server."""

    def __init__(self, sio: socketio.AsyncServer, settings: Settings) -> None:
        self.sio = sio
        self.settings = settings
        self._timers: set[asyncio.Task[None]] = set()
        self._on_connect: EioHandler | None = None
        self._on_message: EioHandler | None = None
        self._handle_request: EioHandler | None = None

    def attach(self) -> SocketGuard:
        """Wrap the server's Engine.IO handlers; python-socketio's still run inside."""
        eio = self.sio.eio
        self._on_connect = eio.handlers["connect"]
        self._on_message = eio.handlers["message"]
        self._handle_request = eio.handle_request
        eio.on("connect", self._connect)
        eio.on("message", self._message)
        # The one path where a bad packet escapes Engine.IO: see `_request`.
        eio.handle_request = self._request
        protect(eio.logger)
        protect(self.sio.logger)
        return self

    @property
    def sessions(self) -> int:
        """The Engine.IO sessions open in this process."""
        return len(self.sio.eio.sockets)

    async def _connect(self, eio_sid: str, environ: dict[str, Any]) -> Any:
        assert self._on_connect is not None
        # Engine.IO counts the new session already.
        if self.sessions > self.settings.max_sockets:
            logger.warning(
                "refused a Socket.IO session: %d open, the most is max_sockets=%d",
                self.sessions - 1,
                self.settings.max_sockets,
            )
            return {
                "message": "too many connections to this server "
                f"(max_sockets={self.settings.max_sockets}); try again later"
            }
        result = await self._on_connect(eio_sid, environ)
        timer = self.sio.start_background_task(self._close_if_unnamed, eio_sid)
        self._timers.add(timer)
        timer.add_done_callback(self._timers.discard)
        return result

    def _named(self, eio_sid: str) -> bool:
        """Whether the session holds a Socket.IO connection (being made, or made)."""
        manager = self.sio.manager
        return any(
            manager.sid_from_eio_sid(eio_sid, namespace) is not None
            for namespace in list(manager.get_namespaces())
        )

    async def _close_if_unnamed(self, eio_sid: str) -> None:
        """Check the session every timeout; close it once it holds no connection."""
        timeout = self.settings.handshake_timeout_seconds
        while True:
            await asyncio.sleep(timeout)
            socket = self.sio.eio.sockets.get(eio_sid)
            if socket is None or socket.closed:
                return
            if not self._named(eio_sid):
                break
        logger.info(
            "closed Engine.IO session %s: no Socket.IO connection within %g s",
            eio_sid,
            timeout,
        )
        await socket.close(wait=False, abort=False)
        # Ends a WebSocket's writer now, and with it the connection (else it
        # would wait for the next packet until the ping timeout).
        socket.queue.put_nowait(None)
        self.sio.eio.sockets.pop(eio_sid, None)

    async def _message(self, eio_sid: str, data: Any) -> Any:
        assert self._on_message is not None
        try:
            return await self._on_message(eio_sid, data)
        except Exception as exc:
            reason = garbage(self.sio.packet_class, data, exc)
            if reason is None:
                raise  # the server's own failure: Engine.IO logs it in full
            logger.warning("bad Socket.IO packet from session %s: %s", eio_sid, reason)
            return None

    async def _request(self, *args: Any, **kwargs: Any) -> Any:
        assert self._handle_request is not None
        try:
            return await self._handle_request(*args, **kwargs)
        except ValueError as exc:
            # Over a WebSocket, Engine.IO decodes each frame outside any handler,
            # so an undecodable frame ends the connection with a traceback.
            scope = args[0] if args and isinstance(args[0], dict) else {}
            if scope.get("type") != "websocket":
                raise
            logger.warning("bad Engine.IO packet over a WebSocket: %s; closed it", exc)
            return None


_REFUSALS = frozenset(
    {
        "Unexpected binary packet",
        "Unexpected CONNECT_ERROR packet.",
        "Unknown packet type.",
    }
)
"""python-socketio's words for a well-formed packet no client may send."""


def garbage(packet_class: Any, data: Any, error: Exception) -> str | None:
    """Why `data` failed as a client's packet; None when the server failed instead."""
    if isinstance(error, ValueError) and str(error) in _REFUSALS:
        return str(error)
    try:
        packet = packet_class(encoded_packet=data)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    kind = packet.packet_type
    if kind in (sio_packet.EVENT, sio_packet.BINARY_EVENT):
        body = packet.data
        if not (isinstance(body, list) and body and isinstance(body[0], str)):
            return "an event must be a list that starts with its name"
    return None
