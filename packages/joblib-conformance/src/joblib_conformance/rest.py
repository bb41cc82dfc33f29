"""The REST side of the server under test: one client per identity."""

from __future__ import annotations

import socket
import ssl
import time
from typing import Any
from urllib.parse import quote

import httpx

from joblib_protocol import API_PREFIX


def segment(value: str) -> str:
    """A room id or job full name as a URL path segment ('@' and ':' stay)."""
    return quote(value, safe="@:")


def bearer(token: str | None) -> dict[str, str]:
    """The `Authorization` header of `token` (none for None)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


class Rest:
    """An httpx client of the API under `/v1/joblib`, as one identity.

    `token=None` sends no credentials at all. Paths are relative to the API
    prefix (`/workers`, `/tasks/claim`). Safe to share between threads.
    """

    def __init__(self, url: str, token: str | None, *, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.http = httpx.Client(
            base_url=self.url + API_PREFIX, headers=bearer(token), timeout=timeout
        )

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one request and return the answer, whatever its status."""
        return self.http.request(method, path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        """`GET path`."""
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        """`POST path`."""
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> httpx.Response:
        """`PUT path`."""
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> httpx.Response:
        """`PATCH path`."""
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        """`DELETE path`."""
        return self.request("DELETE", path, **kwargs)

    def close(self) -> None:
        """Close the connections."""
        self.http.close()


def unfinished_body(
    url: str,
    path: str,
    token: str | None,
    *,
    part: bytes,
    length: int,
    wait: float,
) -> tuple[httpx.Response, float]:
    """POST `path` announcing a body of `length` bytes, send only `part`, and wait
    up to `wait` seconds for the answer; the answer, and the seconds it took.

    httpx cannot stop halfway through a body, so this speaks HTTP/1.1 over a
    socket of its own. Raises `TimeoutError` when no answer came in time.
    """
    target = httpx.URL(url.rstrip("/") + API_PREFIX + path)
    port = target.port or (443 if target.scheme == "https" else 80)
    head = [
        f"POST {target.raw_path.decode()} HTTP/1.1",
        f"Host: {target.host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {length}",
        *(f"{k}: {v}" for k, v in bearer(token).items()),
        "",
        "",
    ]
    started = time.monotonic()
    with socket.create_connection((target.host, port), timeout=wait) as raw:
        sock: socket.socket = raw
        if target.scheme == "https":
            sock = ssl.create_default_context().wrap_socket(
                raw, server_hostname=target.host
            )
        sock.sendall("\r\n".join(head).encode() + part)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionError, TimeoutError):
                break
            if not chunk:
                break
            received += chunk
            if _complete(received):
                break
    seconds = time.monotonic() - started
    if not received:
        raise TimeoutError(f"no answer in {seconds:.1f} s")
    return _parse(received, httpx.Request("POST", target)), seconds


def _complete(data: bytes) -> bool:
    """Whether `data` holds a whole answer (headers and Content-Length bytes)."""
    head, found, body = data.partition(b"\r\n\r\n")
    if not found:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


def _parse(data: bytes, request: httpx.Request) -> httpx.Response:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = [tuple(line.split(":", 1)) for line in lines[1:] if ":" in line]
    return httpx.Response(
        status,
        headers=[(k.strip(), v.strip()) for k, v in headers],
        content=body,
        request=request,
    )
