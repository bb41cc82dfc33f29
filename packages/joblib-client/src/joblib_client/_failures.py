"""Why a server could not be reached, read from the chain of a transport exception.

httpx and python-socketio both wrap the operating system's error (httpx in its
own `ConnectError`, python-socketio in a bare "Connection error"); the cause
that tells a refused port from an unknown host or a TLS failure is further down
the chain, in `__cause__` or `__context__`.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx

from joblib_client.exceptions import TransportFailure

# A `https://` URL for a plain-HTTP server: OpenSSL reads the HTTP answer as a
# TLS record (3.0 says "wrong version number", 3.2+ "record layer failure").
_PLAIN_HTTP_SIGNS = ("WRONG_VERSION_NUMBER", "record layer failure", "HTTP_REQUEST")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _where(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme in ("https", "wss") else 80)
    return f"{parts.hostname}:{port}"


def unreachable(
    exc: BaseException, url: str, timeout: httpx.Timeout | None = None
) -> tuple[TransportFailure, str]:
    """Return why `url` could not be reached, as a reason and a sentence.

    `timeout`, when given, is the time limit the request had: a timeout names it.
    """
    for cause in _chain(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return "tls", f"TLS certificate not accepted: {cause.verify_message}"
        if isinstance(cause, ssl.SSLError):
            text = str(cause)
            hint = ""
            if any(sign in text for sign in _PLAIN_HTTP_SIGNS):
                hint = " (is it a plain-HTTP server? try http://)"
            return "tls", f"TLS handshake failed: {text}{hint}"
        if isinstance(cause, socket.gaierror):
            host = urlsplit(url).hostname
            return "name-resolution", f"cannot resolve host {host!r} ({cause})"
        if isinstance(cause, ConnectionRefusedError):
            return "connection-refused", (
                f"connection refused: nothing listens at {_where(url)}"
            )
        if isinstance(cause, httpx.TimeoutException | TimeoutError | socket.timeout):
            return "timeout", _timed_out(cause, timeout)
    return "connection", f"connection failed: {exc}"


def _timed_out(cause: BaseException, timeout: httpx.Timeout | None) -> str:
    phase, limit = "waiting", None
    if isinstance(cause, httpx.ConnectTimeout):
        phase, limit = "connecting", timeout and timeout.connect
    elif isinstance(cause, httpx.ReadTimeout):
        phase, limit = "waiting for the answer", timeout and timeout.read
    elif isinstance(cause, httpx.WriteTimeout):
        phase, limit = "sending the request", timeout and timeout.write
    elif isinstance(cause, httpx.PoolTimeout):
        phase, limit = "waiting for a free connection", timeout and timeout.pool
    after = f" after {limit:g} s" if limit is not None else ""
    return f"timed out{after} {phase}"
