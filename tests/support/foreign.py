"""Servers that are not joblib: a proxy answering its own pages, a silent port.

`answering(status, body, content_type)` runs a plain `http.server` that answers
every request with the same page, as a reverse proxy in front of a missing or
broken backend does (an HTML 404, a 502). `silent_port()` listens without ever
accepting: a connection is made, and no answer ever comes.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@contextmanager
def answering(status: int, body: str, content_type: str = "text/html") -> Iterator[str]:
    """Serve `body` with `status` to every request; yield the server's URL."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass  # the test's output is not the place for an access log

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def silent_port() -> Iterator[str]:
    """Listen on a loopback port and never accept; yield its URL.

    The kernel completes connections into the backlog, so a client connects
    and then waits for an answer that never comes.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
