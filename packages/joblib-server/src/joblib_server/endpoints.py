"""What every REST endpoint shares: who calls, in which room, a body read within
limits, path and query parameters, and a JSON answer."""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from joblib_protocol import (
    DEFAULT_PAGE_LIMIT,
    MAX_PAGE_LIMIT,
    PayloadTooLarge,
    RequestTimeout,
    Unauthorized,
    ValidationFailed,
)
from joblib_server import jobs, pages
from joblib_server.auth import Identity
from joblib_server.errors import ProblemError
from joblib_server.policy import Action, authorize
from joblib_server.problems import validation_problem

if TYPE_CHECKING:
    from joblib_server.runtime import JobLib

ModelT = TypeVar("ModelT", bound=BaseModel)
Endpoint = Callable[[Request], Awaitable[Response]]

MAX_JSON_DEPTH = 100
"""Deepest nesting of arrays and objects accepted in a request body."""

_SURROGATE = re.compile("[\ud800-\udfff]")

_PREFER_WAIT = re.compile(
    r"(?:^|[,;\s])wait\s*=\s*\"?(\d+(?:\.\d+)?)\"?", re.IGNORECASE
)


def answer(
    model: BaseModel, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A protocol model as the JSON answer, under its wire (alias) names."""
    return Response(
        model.model_dump_json(by_alias=True),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )


def invalid(where: str, msg: str) -> ProblemError:
    """The 422 problem for one bad input: its place (`where`) and what is wrong."""
    return ProblemError(
        ValidationFailed, f"{where}: {msg}", errors=[{"loc": [where], "msg": msg}]
    )


def route(path: str, *, name: str | None = None, **handlers: Endpoint) -> Route:
    """One route per path, so a 405 answer's `Allow` names all of the path's methods."""

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return Route(path, endpoint, methods=list(handlers), name=name)


def _unstorable(data: Any) -> str | None:
    """Why parsed JSON could not be stored and sent back as JSON, or None if it can.

    Python's JSON reader accepts what neither the databases nor the JSON writers
    take: NaN and infinities, lone surrogates, and nesting deeper than pydantic
    serializes (about 250 levels) or a client parses (200).
    """
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return "strings must not hold lone surrogates"
        elif isinstance(value, float):
            if not math.isfinite(value):
                return "numbers must be finite (no NaN or Infinity)"
        elif isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                return f"nested deeper than {MAX_JSON_DEPTH} levels"
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                stack.append((key, depth))
                stack.append((item, depth + 1))
    return None


_MAYBE_SURROGATE = re.compile(
    # An escaped surrogate, or one as raw bytes: Python's JSON reader decodes
    # bytes with "surrogatepass". Hangul (\xed\x80-\x9f) is not one of them.
    rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]"
)


def _surely_storable(data: Any, raw: bytes) -> bool:
    """True when `_unstorable` would find nothing, checked about six times faster.

    Strings cannot hold a lone surrogate when the raw body holds none, so only
    containers and floats are visited (a batch of 1,000 payloads: 1.5 ms instead
    of 10). False means "look closer" (`_unstorable` tells what is wrong).
    """
    if b"\x00" in raw or _MAYBE_SURROGATE.search(raw):
        return False  # NUL bytes: UTF-16 or UTF-32, where the search sees nothing
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return False
        for item in value.values() if type(value) is dict else value:
            kind = type(item)
            if kind is dict or kind is list:
                stack.append((item, depth + 1))
            elif kind is float and not math.isfinite(item):
                return False
    return True


def path_uuid(request: Request, name: str) -> uuid.UUID:
    """The path parameter `name` as a UUID, or the 422 problem."""
    raw = request.path_params[name]
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise invalid(name, f"{raw!r} is not a UUID") from None


def _int_query(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid(name, f"{raw!r} is not an integer") from None
    if not low <= value <= high:
        raise invalid(name, f"must be between {low} and {high}")
    return value


def _page(request: Request, max_offset: int) -> tuple[int, int]:
    limit = _int_query(request, "limit", DEFAULT_PAGE_LIMIT, 0, MAX_PAGE_LIMIT)
    # The database walks every skipped row: a large offset costs as much as
    # reading them all (see `pages`).
    offset = _int_query(request, "offset", 0, 0, 2**63 - 1)
    if offset > max_offset:
        raise invalid(
            "offset",
            f"must be at most {max_offset}: narrow the list instead "
            "(`?status=`, or one job's tasks)",
        )
    return limit, offset


def prefer_wait(header: str | None, cap: float) -> float | None:
    """The `wait=N` of a `Prefer` header, capped; None when absent or unreadable."""
    if not header:
        return None
    match = _PREFER_WAIT.search(header)
    if match is None:
        return None
    value = float(match.group(1))
    if not math.isfinite(value):
        return None
    return min(value, cap)


def format_wait(wait: float) -> str:
    """A wait in seconds as `Preference-Applied` writes it: `5`, `0.5`."""
    return str(int(wait)) if float(wait).is_integer() else f"{wait:g}"


class Endpoints:
    """The request side the route classes share, for one `JobLib`."""

    def __init__(self, joblib: JobLib) -> None:
        self.joblib = joblib

    def page(self, request: Request) -> tuple[int, int]:
        """`?limit=` and `?offset=`, within their caps (422 beyond)."""
        return _page(request, self.joblib.settings.max_list_offset)

    @property
    def count_limit(self) -> int:
        """Where a list's count stops: the last item a client can page to."""
        return pages.count_limit(self.joblib.settings.max_list_offset)

    async def identity(self, request: Request) -> Identity:
        """The caller's identity, or the 401 problem."""
        identity = await self.joblib.auth.authenticate(request.headers)
        if identity is None:
            raise ProblemError(
                Unauthorized, "send a valid `Authorization: Bearer` token"
            )
        return identity

    async def in_room(
        self, request: Request, identity: Identity, action: Action
    ) -> str:
        """The path's `room_id`: 400 if malformed, 403/423 if the policy refuses."""
        room_id = jobs.check_room_id(request.path_params["room_id"])
        await authorize(self.joblib.policy, identity, room_id, action)
        return room_id

    async def raw_body(self, request: Request, limit: int) -> bytes:
        """Read the body as it is, within `limit` bytes (413) and the body timeout."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ProblemError(PayloadTooLarge, f"the body is over {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        timeout = self.joblib.settings.body_timeout_seconds
        try:
            # A body sent a byte at a time (slow-loris) must not hold a request
            # open for as long as its sender likes.
            with anyio.fail_after(timeout):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise ProblemError(
                            PayloadTooLarge, f"the body is over {limit} bytes"
                        )
                    chunks.append(chunk)
        except TimeoutError:
            raise ProblemError(
                RequestTimeout,
                f"the body did not arrive within {timeout:g} s",
                headers={"Connection": "close"},
            ) from None
        return b"".join(chunks)

    async def body(
        self,
        request: Request,
        model: type[ModelT],
        *,
        optional: bool = False,
        limit: int | None = None,
    ) -> ModelT:
        """Read and validate the JSON body, within `limit` bytes (`max_body_bytes`).

        With `optional`, an empty body stands for `{}`.
        """
        limit = self.joblib.settings.max_body_bytes if limit is None else limit
        raw = await self.raw_body(request, limit)
        try:
            data: Any = json.loads(raw) if raw.strip() else None
        except ValueError as exc:
            # Also bad UTF-8 and integers too long to read: both are ValueErrors.
            raise invalid("body", f"not valid JSON: {exc}") from None
        except RecursionError:
            raise invalid(
                "body", f"nested deeper than {MAX_JSON_DEPTH} levels"
            ) from None
        if data is None and optional:
            data = {}
        if not isinstance(data, dict):
            raise invalid("body", "must be a JSON object")
        unstorable = None if _surely_storable(data, raw) else _unstorable(data)
        if unstorable is not None:
            raise invalid("body", unstorable)
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise validation_problem(exc, "body") from None
