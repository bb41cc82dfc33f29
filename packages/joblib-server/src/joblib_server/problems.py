"""Every error answer is an RFC 9457 problem document; this maps exceptions to them."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from joblib_protocol import (
    PROBLEM_CONTENT_TYPE,
    InternalError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ProblemDetail,
    ProblemType,
    RequestTimeout,
    Unauthorized,
    ValidationFailed,
)
from joblib_server.errors import ProblemError

logger = logging.getLogger("joblib_server")

_BY_STATUS: dict[int, type[ProblemType]] = {
    401: Unauthorized,
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
    422: ValidationFailed,
}


def problem_response(
    document: ProblemDetail, headers: dict[str, str] | None = None
) -> Response:
    """An `application/problem+json` response carrying `document`."""
    return Response(
        document.model_dump_json(exclude_none=True),
        status_code=document.status,
        media_type=PROBLEM_CONTENT_TYPE,
        headers=headers,
    )


def validation_problem(exc: ValidationError, where: str) -> ProblemError:
    """A 422 problem listing the field errors of a pydantic validation failure."""
    errors = [
        {"loc": [where, *error["loc"]], "msg": error["msg"], "type": error["type"]}
        for error in exc.errors(include_url=False, include_context=False)
    ]
    return ProblemError(ValidationFailed, f"the {where} is not valid", errors=errors)


async def handle_problem(request: Request, exc: Exception) -> Response:
    """Answer a `ProblemError` with its document."""
    assert isinstance(exc, ProblemError)
    headers = dict(exc.headers)
    if exc.problem is Unauthorized:
        headers["WWW-Authenticate"] = "Bearer"
    return problem_response(exc.document(), headers or None)


async def handle_client_gone(request: Request, exc: Exception) -> Response:
    """The client left before its body arrived: nobody will read an answer.

    Not an error of the server's, and anyone can cause it at will, so no
    traceback: one line at debug.
    """
    logger.debug("%s %s: the client went away", request.method, request.url.path)
    document = RequestTimeout.document("the client went away before its body arrived")
    return problem_response(document, {"Connection": "close"})


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Answer Starlette's own 404/405/… as problem documents."""
    assert isinstance(exc, HTTPException)
    problem = _BY_STATUS.get(exc.status_code)
    if problem is None:
        document = ProblemDetail(
            type="about:blank",
            title=str(exc.detail),
            status=exc.status_code,
        )
    else:
        detail = None if exc.detail == problem.title else str(exc.detail)
        document = problem.document(detail)
    return problem_response(document, dict(exc.headers or {}))


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    """Answer any other failure with a bare 500: the trace goes to the log only."""
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(InternalError.document("the server failed; see its log"))


EXCEPTION_HANDLERS: dict[Any, Any] = {
    ProblemError: handle_problem,
    ClientDisconnect: handle_client_gone,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
