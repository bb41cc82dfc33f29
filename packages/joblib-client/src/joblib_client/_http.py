"""The REST transport: joblib's routes over any object with an `httpx.Client`."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Mapping
from typing import Any, Protocol
from urllib.parse import quote
from uuid import UUID

import httpx

from joblib_client._failures import unreachable
from joblib_client.exceptions import JobLibError, TransportError, error_for_problem
from joblib_protocol import (
    API_PREFIX,
    REQUEST_HASH_HEADER,
    JobRegisterRequest,
    JobResponse,
    ProblemDetail,
    ProviderErrorRequest,
    ProviderRegisterRequest,
    ProviderResponse,
    TaskBatchResponse,
    TaskClaimResponse,
    TaskProgressRequest,
    TaskResponse,
    TaskStatus,
    WorkerCleanupResponse,
    WorkerResponse,
)

_ERROR_TEXT_LIMIT = 500


class Api(Protocol):
    """What the manager needs to reach the REST API: a host's API object fits.

    `base_url` is the server's root (the `/v1/joblib` prefix is added here);
    `get_headers()` gives the headers that authenticate a request.
    """

    @property
    def http(self) -> httpx.Client:
        """The HTTP client requests go through."""
        ...

    @property
    def base_url(self) -> str:
        """The server's root URL."""
        ...

    def get_headers(self) -> dict[str, str]:
        """Return the headers that authenticate a request."""
        ...


class ApiClient:
    """A ready-made `Api`: a server URL, a bearer token and an `httpx.Client`."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        http: httpx.Client | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.http = http if http is not None else httpx.Client(timeout=timeout)

    def get_headers(self) -> dict[str, str]:
        """Return the `Authorization` header for the token, if any."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def close(self) -> None:
        """Close the HTTP client."""
        self.http.close()


def error_from_response(response: httpx.Response) -> JobLibError:
    """Turn an error answer into the matching exception, problem document or not.

    The exception names the request (`method`, `url`) when the response has one.
    """
    method, url = _request_of(response)
    try:
        body: Any = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict) and "type" in body and "status" in body:
        return error_for_problem(body, method=method, url=url)
    # Not one of ours (a proxy, an old server): keep the status and some text.
    return error_for_problem(
        ProblemDetail(
            type="about:blank",
            title=response.reason_phrase or "Error",
            status=response.status_code,
            detail=_answer_text(response) or None,
        ),
        method=method,
        url=url,
        foreign_answer=True,
    )


def _request_of(response: httpx.Response) -> tuple[str | None, str | None]:
    try:
        request = response.request
    except RuntimeError:  # a response built by hand has no request
        return None, None
    return request.method, str(request.url)


_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]+>")


def _answer_text(response: httpx.Response) -> str:
    # An HTML page says what it is in its title; the rest is markup.
    text = response.text
    if "html" in response.headers.get("content-type", ""):
        title = _TITLE.search(text)
        text = title.group(1) if title else _TAG.sub(" ", text)
        text = " ".join(text.split())
    return text[:_ERROR_TEXT_LIMIT]


def _segment(value: str) -> str:
    # Room ids and full names keep '@' and ':' readable; anything else is escaped.
    return quote(value, safe="@:")


class Rest:
    """The `/v1/joblib` routes a worker uses, answering protocol models."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        read_timeout: float | None = None,
    ) -> httpx.Response:
        """Send one request; raise the client's exception for any error answer.

        `path` is relative to the API's root (`/workers`); `params` is the query;
        the body is `json`, or the raw bytes of `content`.
        Every exception names the method and the URL: an error answer becomes
        the problem type's exception, no answer a `TransportError` saying why.
        """
        http = self.api.http
        url = f"{self.api.base_url.rstrip('/')}{API_PREFIX}{path}"
        all_headers = {**self.api.get_headers(), **(headers or {})}
        timeout = http.timeout
        try:
            if read_timeout is None:
                response = http.request(
                    method,
                    url,
                    json=json,
                    content=content,
                    headers=all_headers,
                    params=params,
                )
            else:
                # A per-request timeout through build_request: some clients (the
                # Starlette TestClient) warn when `request()` is given one.
                timeout = _with_read_timeout(http.timeout, read_timeout)
                response = http.send(
                    http.build_request(
                        method,
                        url,
                        json=json,
                        content=content,
                        headers=all_headers,
                        params=params,
                        timeout=timeout,
                    )
                )
        except httpx.TransportError as exc:
            if params:
                url = str(httpx.URL(url, params=params))
            reason, why = unreachable(exc, url, timeout)
            raise TransportError(why, reason=reason, method=method, url=url) from exc
        if response.is_error:
            raise error_from_response(response)
        return response

    def create_worker(self) -> WorkerResponse:
        """`POST /workers`."""
        response = self.request("POST", "/workers")
        return WorkerResponse.model_validate_json(response.content)

    def heartbeat(
        self, worker_id: UUID, tasks: Collection[UUID] | None = None
    ) -> WorkerResponse:
        """`PATCH /workers/{worker_id}`; `tasks`, if given, are all the worker holds.

        The server releases the worker's other tasks, and its answer's `cancelled`
        lists the given tasks the worker should stop (ours; a server without the
        extension ignores the body and lists none).
        """
        body = None if tasks is None else {"tasks": [str(t) for t in tasks]}
        response = self.request("PATCH", f"/workers/{worker_id}", json=body)
        return WorkerResponse.model_validate_json(response.content)

    def delete_worker(self, worker_id: UUID) -> WorkerCleanupResponse | None:
        """`DELETE /workers/{worker_id}`; the cleanup receipt, if the server gives one.

        Asks for it with `Prefer: return=representation`; a server that ignores the
        preference answers 204 and no receipt.
        """
        response = self.request(
            "DELETE",
            f"/workers/{worker_id}",
            headers={"Prefer": "return=representation"},
        )
        if response.status_code != 200 or not response.content:
            return None
        return WorkerCleanupResponse.model_validate_json(response.content)

    def register_job(self, room_id: str, request: JobRegisterRequest) -> JobResponse:
        """`PUT /rooms/{room_id}/jobs`."""
        body = request.model_dump(mode="json", by_alias=True, exclude_none=True)
        response = self.request("PUT", f"/rooms/{_segment(room_id)}/jobs", json=body)
        return JobResponse.model_validate_json(response.content)

    def submit_task(
        self,
        room_id: str,
        full_name: str,
        payload: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        timeout_seconds: float | None = None,
        pending_timeout_seconds: float | None = None,
    ) -> TaskResponse:
        """`POST /rooms/{room_id}/tasks/{full_name}`.

        With `idempotency_key` (ours) the same key answers the task it made first.
        The time limits (ours), when given, override the job's for this task.
        """
        path = f"/rooms/{_segment(room_id)}/tasks/{_segment(full_name)}"
        headers = None
        if idempotency_key is not None:
            headers = {"Idempotency-Key": idempotency_key}
        body: dict[str, Any] = {"payload": payload}
        if timeout_seconds is not None:
            body["timeout_seconds"] = timeout_seconds
        if pending_timeout_seconds is not None:
            body["pending_timeout_seconds"] = pending_timeout_seconds
        response = self.request("POST", path, json=body, headers=headers)
        return TaskResponse.model_validate_json(response.content)

    def submit_batch(
        self,
        room_id: str,
        full_name: str,
        payloads: list[dict[str, Any]],
        *,
        timeout_seconds: float | None = None,
        pending_timeout_seconds: float | None = None,
    ) -> list[TaskResponse]:
        """`POST /rooms/{room_id}/tasks/{full_name}/batch` (ours): the tasks made."""
        path = f"/rooms/{_segment(room_id)}/tasks/{_segment(full_name)}/batch"
        body: dict[str, Any] = {"payloads": payloads}
        if timeout_seconds is not None:
            body["timeout_seconds"] = timeout_seconds
        if pending_timeout_seconds is not None:
            body["pending_timeout_seconds"] = pending_timeout_seconds
        response = self.request("POST", path, json=body)
        return TaskBatchResponse.model_validate_json(response.content).items

    def claim_task(
        self,
        worker_id: UUID,
        *,
        start: bool,
        wait: float | None = None,
        request_id: str | None = None,
    ) -> tuple[TaskResponse | None, bool]:
        """`POST /tasks/claim`; with `start`, the task comes back already running.

        With `wait`, the claim may be parked up to that many seconds until a task
        comes (`Prefer: wait`); also answers whether the server applied the wait.
        `request_id` (ours) names this claim: sent again with the same id, it gets
        back the task the first one took if that answer was lost.
        """
        body: dict[str, Any] = {"worker_id": str(worker_id), "start": start}
        if request_id is not None:
            body["request_id"] = request_id
        if wait is None or wait <= 0:
            response = self.request("POST", "/tasks/claim", json=body)
        else:
            response = self.request(
                "POST",
                "/tasks/claim",
                json=body,
                headers={"Prefer": f"wait={wait:g}"},
                read_timeout=wait + 10.0,
            )
        applied = "preference-applied" in response.headers
        return TaskClaimResponse.model_validate_json(response.content).task, applied

    def update_task(
        self,
        task_id: UUID,
        status: TaskStatus,
        error: str | None = None,
        *,
        worker_id: UUID | None = None,
        result: Any = None,
    ) -> TaskResponse:
        """`PATCH /tasks/{task_id}`, as `worker_id` if given (409 once it is stale).

        `result` (ours, a JSON-ready value) is sent with `completed` only.
        """
        body: dict[str, Any] = {"status": status.value}
        if error is not None:
            body["error"] = error
        if worker_id is not None:
            body["worker_id"] = str(worker_id)
        if status == TaskStatus.COMPLETED and result is not None:
            body["result"] = result
        response = self.request("PATCH", f"/tasks/{task_id}", json=body)
        return TaskResponse.model_validate_json(response.content)

    def put_progress(self, task_id: UUID, progress: TaskProgressRequest) -> None:
        """`PUT /tasks/{task_id}/progress` (ours); 409 once the task stopped running."""
        body = progress.model_dump(mode="json", exclude_none=True)
        self.request("PUT", f"/tasks/{task_id}/progress", json=body)

    def get_task(
        self, task_id: UUID, *, wait: float | None = None
    ) -> tuple[TaskResponse, bool]:
        """`GET /tasks/{task_id}`, long-polling up to `wait` seconds when given.

        Also answers whether the server applied the wait, so callers polling a
        server without long-poll support know to pause between requests.
        """
        if wait is None or wait <= 0:
            response = self.request("GET", f"/tasks/{task_id}")
        else:
            seconds = max(1, math.ceil(wait))
            response = self.request(
                "GET",
                f"/tasks/{task_id}",
                headers={"Prefer": f"wait={seconds}"},
                read_timeout=seconds + 10.0,
            )
        applied = "preference-applied" in response.headers
        return TaskResponse.model_validate_json(response.content), applied

    # providers

    def register_provider(
        self, room_id: str, request: ProviderRegisterRequest
    ) -> ProviderResponse:
        """`PUT /rooms/{room_id}/providers`."""
        body = request.model_dump(mode="json", by_alias=True, exclude_none=True)
        path = f"/rooms/{_segment(room_id)}/providers"
        response = self.request("PUT", path, json=body)
        return ProviderResponse.model_validate_json(response.content)

    def delete_provider(self, provider_id: UUID) -> None:
        """`DELETE /providers/{provider_id}`."""
        self.request("DELETE", f"/providers/{provider_id}")

    def upload_provider_result(
        self, provider_id: UUID, request_hash: str, content: bytes
    ) -> None:
        """`POST /providers/{provider_id}/results`: the raw bytes of one read."""
        self.request(
            "POST",
            f"/providers/{provider_id}/results",
            content=content,
            headers={
                REQUEST_HASH_HEADER: request_hash,
                "Content-Type": "application/octet-stream",
            },
        )

    def report_provider_error(
        self, provider_id: UUID, request: ProviderErrorRequest
    ) -> None:
        """`POST /providers/{provider_id}/errors` (ours): a read that failed."""
        body = request.model_dump(mode="json")
        self.request("POST", f"/providers/{provider_id}/errors", json=body)

    def read_provider(
        self,
        room_id: str,
        full_name: str,
        params: Mapping[str, str],
        *,
        wait: float | None = None,
    ) -> httpx.Response:
        """`GET /rooms/{room_id}/providers/{full_name}?<params>`, the answer as is.

        With `wait`, asks the server to hold the read up to that many seconds
        for the provider's answer (`Prefer: wait=N`); else the server's default.
        """
        path = f"/rooms/{_segment(room_id)}/providers/{_segment(full_name)}"
        if wait is None:
            return self.request("GET", path, params=params)
        seconds = max(1, math.ceil(wait))
        return self.request(
            "GET",
            path,
            params=params,
            headers={"Prefer": f"wait={seconds}"},
            read_timeout=seconds + 10.0,
        )


def _with_read_timeout(timeout: httpx.Timeout, read: float) -> httpx.Timeout:
    # A client without a read timeout already waits long enough.
    longer = None if timeout.read is None else max(timeout.read, read)
    return httpx.Timeout(
        connect=timeout.connect, read=longer, write=timeout.write, pool=timeout.pool
    )
