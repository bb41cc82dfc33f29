"""Assertions that fail a check with what was expected and what came back."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from joblib_conformance.checks import CheckFailed
from joblib_protocol import PROBLEM_CONTENT_TYPE, ProblemType

ModelT = TypeVar("ModelT", bound=BaseModel)
T = TypeVar("T")

_TEXT_LIMIT = 300


def shown(response: httpx.Response) -> str:
    """A response in a few words: request, status, content type and body."""
    request = response.request
    body = response.text
    if len(body) > _TEXT_LIMIT:
        body = body[:_TEXT_LIMIT] + "…"
    kind = response.headers.get("content-type", "no content type")
    return (
        f"{response.status_code} ({kind}) to {request.method} {request.url.path}"
        f"{'?' + request.url.query.decode() if request.url.query else ''}: {body}"
    )


def that(condition: object, expected: str, got: object) -> None:
    """Fail with `expected` and `got` unless `condition` holds."""
    if not condition:
        raise CheckFailed(expected, got)


def equal(got: object, wanted: object, what: str) -> None:
    """Fail unless `got == wanted`."""
    if got != wanted:
        raise CheckFailed(f"{what} = {wanted!r}", repr(got))


def status(response: httpx.Response, code: int, what: str = "") -> Any:
    """Fail unless the answer has status `code`; return its JSON body, if any."""
    if response.status_code != code:
        raise CheckFailed(f"{code}{' ' + what if what else ''}", shown(response))
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise CheckFailed(f"a JSON body {what}".strip(), shown(response)) from None


def problem(
    response: httpx.Response, kind: type[ProblemType], what: str = ""
) -> dict[str, Any]:
    """Fail unless the answer is an RFC 9457 problem document of type `kind`."""
    wanted = f"{kind.status} {kind.type_uri()}{' ' + what if what else ''}"
    if response.status_code != kind.status:
        raise CheckFailed(wanted, shown(response))
    media = response.headers.get("content-type", "").split(";")[0].strip()
    if media != PROBLEM_CONTENT_TYPE:
        raise CheckFailed(f"{wanted} as {PROBLEM_CONTENT_TYPE}", shown(response))
    try:
        body = response.json()
    except ValueError:
        raise CheckFailed(wanted, shown(response)) from None
    if not isinstance(body, dict):
        raise CheckFailed(wanted, shown(response))
    if (
        body.get("type") != kind.type_uri()
        or body.get("status") != kind.status
        or not body.get("title")
    ):
        raise CheckFailed(f"{wanted} with type, title and status", shown(response))
    return body


def model(data: Any, kind: type[ModelT], what: str) -> ModelT:
    """Validate `data` as the protocol model `kind`, failing with pydantic's errors."""
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        errors = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}"
            for e in exc.errors()[:5]
        )
        raise CheckFailed(
            f"{what} to be a valid {kind.__name__}", f"{errors} in {data!r}"
        ) from None


def aware(value: datetime | None, what: str) -> datetime:
    """Fail unless `value` is a timestamp with a timezone."""
    if value is None or value.utcoffset() is None:
        raise CheckFailed(f"{what} as an ISO 8601 timestamp with a timezone", value)
    return value


def eventually(
    condition: Callable[[], T | None],
    *,
    timeout: float,
    expected: str,
    shown_as: Callable[[], object] | None = None,
    interval: float = 0.02,
) -> T:
    """Call `condition` until it returns something truthy; return that.

    Fails with `expected` and the last value (or `shown_as()`) after `timeout`.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            got = shown_as() if shown_as is not None else value
            raise CheckFailed(expected, f"after {timeout:g} s: {got}")
        time.sleep(interval)
