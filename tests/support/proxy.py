"""A TCP forwarder on 127.0.0.1 that can cut its connections: a network blip.

A worker whose socket goes through the proxy loses it when the test calls
`cut()`: every forwarded connection is dropped on both sides at once, as a
pulled cable that comes back would do, and for `seconds` afterwards new
connections are refused (nothing listens) or held (accepted, then left silent
until the window ends). The proxy runs its own asyncio loop in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, Literal

Mode = Literal["refuse", "hold"]

_CHUNK = 65536


class TcpProxy:
    """Forward `127.0.0.1:port` to `127.0.0.1:target_port` until `close()`."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.accepted = 0
        """How many connections were forwarded so far."""
        self.cuts = 0
        self.restored = threading.Event()
        """Set while new connections are let through (cleared during a cut)."""
        self.restored.set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tcp-proxy", daemon=True
        )
        self._server: asyncio.Server | None = None
        self._open = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        """The proxy's base URL, for an HTTP or Socket.IO client."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def live(self) -> int:
        """How many forwarded connections are open now (each counted once)."""
        return len(self._writers) // 2

    def start(self) -> TcpProxy:
        """Start listening on a free port (kept for the proxy's whole life)."""
        self._thread.start()
        self._call(self._listen())
        return self

    def cut(self, seconds: float = 0.0, mode: Mode = "refuse") -> None:
        """Drop every connection now; refuse or hold new ones for `seconds`."""
        self._call(self._cut(seconds, mode))

    def close(self) -> None:
        """Stop listening, drop every connection, and end the loop's thread."""
        with contextlib.suppress(RuntimeError):
            self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def _call(self, coroutine: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    async def _listen(self) -> None:
        self._open.set()
        self._server = await asyncio.start_server(
            self._forward, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _cut(self, seconds: float, mode: Mode) -> None:
        self.cuts += 1
        self.restored.clear()
        if mode == "refuse":
            await self._stop_listening()
        else:
            self._open.clear()
        for writer in list(self._writers):
            writer.transport.abort()  # both sides see their connection close
        self._writers.clear()
        self._loop.call_later(seconds, lambda: self._loop.create_task(self._reopen()))

    async def _reopen(self) -> None:
        if self._server is None:
            await self._listen()
        self._open.set()
        self.restored.set()

    async def _shutdown(self) -> None:
        await self._stop_listening()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _forward(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # Held connections wait here, accepted but silent, until the window ends.
        await self._open.wait()
        try:
            upstream_reader, upstream = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.accepted += 1
        self._writers |= {writer, upstream}
        try:
            await asyncio.gather(
                _pipe(reader, upstream), _pipe(upstream_reader, writer)
            )
        finally:
            self._writers -= {writer, upstream}
            for side in (writer, upstream):
                side.transport.abort()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy `source` into `sink` until either side closes."""
    try:
        while data := await source.read(_CHUNK):
            sink.write(data)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()
    except (ConnectionError, OSError):
        sink.transport.abort()


@contextlib.contextmanager
def tcp_proxy(target_port: int) -> Iterator[TcpProxy]:
    """A running `TcpProxy` to `127.0.0.1:target_port` for the block."""
    proxy = TcpProxy(target_port).start()
    try:
        yield proxy
    finally:
        proxy.close()
