"""A Socket.IO client on asyncio: python-socketio's packet codec over `websockets`.

Why not `socketio.AsyncClient`: it needs aiohttp, which the project does not install.
Why not the sync `socketio.Client` in the benchmark's own process: engine.io's sync
client starts a new thread for every incoming message, so with 16 workers each
`task_available` would cost the client 16 thread starts and GIL hand-offs on a
2-core machine it shares with the server. This class speaks the same wire protocol
(Engine.IO 4 over a WebSocket, Socket.IO 5 packets encoded and decoded by
python-socketio's own `Packet` classes) without threads. The kill -9 workers of the
disconnect section use the stock `socketio.Client` (see `bench.killable_worker`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable
from typing import Any

from engineio import packet as eio
from socketio import packet as sio
from websockets.asyncio.client import ClientConnection, connect

Handler = Callable[[Any, float], None]


class AsyncSocket:
    """One Socket.IO connection; handlers get (payload, perf_counter at arrival)."""

    def __init__(self, url: str, token: str) -> None:
        ws_url = url.replace("http://", "ws://", 1)
        self._url = f"{ws_url}/socket.io/?EIO=4&transport=websocket"
        self._token = token
        self._handlers: dict[str, Handler] = {}
        self._acks: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._connected: asyncio.Future[None] | None = None

    def on(self, event: str, handler: Handler) -> None:
        """Call `handler(payload, arrival)` for every `event` the server sends."""
        self._handlers[event] = handler

    async def connect(self, seconds: float = 10.0) -> None:
        """Open the WebSocket and the Socket.IO session, authenticated by token."""
        self._ws = await connect(
            self._url, compression=None, ping_interval=None, max_size=None
        )
        opening = eio.Packet(encoded_packet=await self._ws.recv())
        if opening.packet_type != eio.OPEN:
            raise ConnectionError(f"expected an engine.io OPEN, got {opening.data!r}")
        self._connected = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read())
        await self._send(sio.Packet(sio.CONNECT, data={"token": self._token}))
        await asyncio.wait_for(self._connected, seconds)

    async def call(self, event: str, data: Any, seconds: float = 10.0) -> Any:
        """Emit `event`; the server's acknowledgement (waiting at most `seconds`)."""
        ack_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._acks[ack_id] = future
        try:
            await self._send(sio.Packet(sio.EVENT, data=[event, data], id=ack_id))
            return await asyncio.wait_for(future, seconds)
        finally:
            self._acks.pop(ack_id, None)

    async def close(self) -> None:
        """Leave the namespace cleanly and close the WebSocket."""
        if self._ws is None:
            return
        with contextlib.suppress(Exception):
            await self._send(sio.Packet(sio.DISCONNECT))
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        self._ws = None

    async def _send(self, packet: sio.Packet) -> None:
        assert self._ws is not None
        await self._ws.send(eio.Packet(eio.MESSAGE, data=packet.encode()).encode())

    async def _read(self) -> None:
        assert self._ws is not None
        assert self._connected is not None
        try:
            async for message in self._ws:
                arrival = time.perf_counter()
                outer = eio.Packet(encoded_packet=message)
                if outer.packet_type == eio.PING:
                    await self._ws.send(eio.Packet(eio.PONG).encode())
                elif outer.packet_type == eio.MESSAGE:
                    self._dispatch(sio.Packet(encoded_packet=outer.data), arrival)
        finally:
            if not self._connected.done():
                self._connected.set_exception(ConnectionError("socket closed"))
            for future in self._acks.values():
                if not future.done():
                    future.set_exception(ConnectionError("socket closed"))

    def _dispatch(self, packet: sio.Packet, arrival: float) -> None:
        assert self._connected is not None
        if packet.packet_type == sio.CONNECT and not self._connected.done():
            self._connected.set_result(None)
        elif packet.packet_type == sio.CONNECT_ERROR and not self._connected.done():
            self._connected.set_exception(ConnectionError(str(packet.data)))
        elif packet.packet_type == sio.EVENT and packet.data:
            handler = self._handlers.get(packet.data[0])
            if handler is not None:
                handler(packet.data[1] if len(packet.data) > 1 else None, arrival)
        elif packet.packet_type == sio.ACK and packet.id in self._acks:
            future = self._acks[packet.id]
            if not future.done():
                future.set_result(packet.data[0] if packet.data else None)
