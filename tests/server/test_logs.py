"""Log filters: tokens never reach a handler, a client's garbage is one line."""

from __future__ import annotations

import logging

import pytest

from joblib_server.logs import REDACTED, ClientGarbage, RedactSecrets, protect, redact


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("< authorization: Bearer s3cr3t", f"< authorization: {REDACTED}"),
        ("Authorization=Bearer s3cr3t, next", f"Authorization={REDACTED}, next"),
        ('< TEXT \'40{"token":"s3cr3t"}\'', f'< TEXT \'40{{"token":"{REDACTED}"}}\''),
        ("auth {'token': 's3cr3t'}", f"auth {{'token': '{REDACTED}'}}"),
        ("nothing to hide here", "nothing to hide here"),
    ],
)
def test_redact_hides_tokens_and_nothing_else(line: str, expected: str) -> None:
    assert redact(line) == expected


def _record(
    msg: str, *args: object, exc: BaseException | None = None
) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord(
        "engineio", logging.ERROR, __file__, 1, msg, args, exc_info
    )


def test_a_record_with_a_token_in_its_arguments_is_rewritten() -> None:
    record = _record(
        "%s: Received packet %s data %s", "sid", "MESSAGE", '0{"token":"x"}'
    )
    assert RedactSecrets().filter(record)
    assert 'x"' not in record.getMessage()
    assert REDACTED in record.getMessage()


def test_an_undecodable_payload_is_one_warning_line() -> None:
    try:
        int("x")
    except ValueError as exc:
        record = _record("post request handler error", exc=exc)
    assert ClientGarbage().filter(record)
    assert record.levelno == logging.WARNING
    assert record.exc_info is None
    assert record.getMessage() == (
        "bad Engine.IO payload from a client: "
        "invalid literal for int() with base 10: 'x'"
    )


def test_engineios_first_complaint_of_a_kind_is_a_warning() -> None:
    record = _record(
        "Invalid session abc (further occurrences of this error will be logged "
        "with level INFO)"
    )
    assert ClientGarbage().filter(record)
    assert record.levelno == logging.WARNING


def test_the_servers_own_errors_keep_their_level_and_traceback() -> None:
    try:
        raise RuntimeError("a bug")
    except RuntimeError as exc:
        record = _record("message async handler error", exc=exc)
    assert ClientGarbage().filter(record)
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None


def test_protect_adds_each_filter_once() -> None:
    logger = logging.getLogger("joblib_test.protected")
    protect(protect(logger))
    kinds = sorted(type(f).__name__ for f in logger.filters)
    assert kinds == ["ClientGarbage", "RedactSecrets"]
