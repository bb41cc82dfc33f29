"""The REST side of the server under test: one client per identity."""

from __future__ import annotations

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
