"""What the server's logs never hold: tokens, and a client's garbage as tracebacks.

At `--log-level debug` uvicorn hands its logger to the `websockets` library, which
logs every frame and handshake header: the Socket.IO `auth` payload and the
`Authorization` header with them. Engine.IO and Socket.IO log every packet at
INFO. `RedactSecrets` rewrites such lines. Engine.IO logs a polling request whose
payload it cannot decode as an ERROR with a traceback, so anyone could fill the
log with them: `ClientGarbage` makes that, and engineio's other complaints about
what a client sent, one line at WARNING.

`configure_logging` is the standalone server's setup: text lines or one JSON
object per line (`JsonFormatter`), both redacted as they are written.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, Literal

REDACTED = "[redacted]"

_SECRETS = (
    # `authorization: Bearer <token>` as a header line, in any case.
    (
        re.compile(r"(authorization\s*[:=]\s*)[^\r\n,;]+", re.IGNORECASE),
        rf"\1{REDACTED}",
    ),
    # The Socket.IO auth payload, as JSON or as a Python dict.
    (re.compile(r"(\"token\"\s*:\s*\")[^\"]*\""), rf'\1{REDACTED}"'),
    (re.compile(r"('token'\s*:\s*')[^']*'"), rf"\1{REDACTED}'"),
)

_GARBAGE_MESSAGES = frozenset({"post request handler error"})
"""What engineio logs, with the traceback, when a polling payload does not decode."""

_FIRST_OF_ITS_KIND = (
    "(further occurrences of this error will be logged with level INFO)"
)
"""engineio's ERROR line for the first bad request of each kind (a stale session
id, a wrong transport, a foreign origin): the client's mistake, not the server's."""


def redact(text: str) -> str:
    """`text` with bearer tokens and `auth` tokens replaced by `[redacted]`."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    """Rewrites a record whose message holds a token, so no handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the formatted message in place; never drops a record."""
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class ClientGarbage(logging.Filter):
    """engineio's ERROR lines about what a client sent become one WARNING line each."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Demote the known garbage records; leave every other record alone."""
        if record.msg in _GARBAGE_MESSAGES and record.exc_info:
            error = record.exc_info[1]
            record.msg = "bad Engine.IO payload from a client: %s"
            record.args = (redact(str(error)),)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        elif record.levelno > logging.WARNING and _FIRST_OF_ITS_KIND in str(record.msg):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_STANDARD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__
) | {"message", "asctime", "color_message"}
"""What every record has; the rest came as `extra=` and goes into a JSON line.
(`color_message` is uvicorn's colored copy of the message.)"""

TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"


class TextFormatter(logging.Formatter):
    """`LEVEL logger: message` lines, tokens redacted (tracebacks included)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        """The line, redacted."""
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the extras.

    `time` is UTC in ISO 8601 with milliseconds; fields given with `extra=`
    (`worker_id`, `identity`, `reason`, …) follow as they are, or as text when
    JSON has no form for them; a traceback is the `exception` field. The message,
    traceback and text extras are redacted.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRIBUTES and key not in line:
                line[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exception"] = redact(record.exc_text)
        return json.dumps(line, default=str, ensure_ascii=False)


class RequestsAtDebug(logging.Filter):
    """uvicorn's access log lines (one per request) as DEBUG records."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Lower the level; never drops a record."""
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


LogFormat = Literal["text", "json"]
LEVELS = ("critical", "error", "warning", "info", "debug")
"""The levels `--log-level` takes."""


def configure_logging(level: str, log_format: LogFormat = "text") -> None:
    """Log joblib and uvicorn at `level` to stderr, as text or JSON lines.

    Other libraries log their warnings only: at DEBUG, SQLAlchemy and the
    database drivers would write every statement. uvicorn's access log, one
    line per request (a held claim or a heartbeat every few seconds per worker),
    is written at `debug` only, as DEBUG records.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    numeric = logging.getLevelName(level.upper())
    for name in ("joblib_server", "uvicorn", "uvicorn.error"):
        logging.getLogger(name).setLevel(numeric)
    access = logging.getLogger("uvicorn.access")
    access.setLevel(logging.DEBUG if numeric <= logging.DEBUG else logging.WARNING)
    if not any(isinstance(f, RequestsAtDebug) for f in access.filters):
        access.addFilter(RequestsAtDebug())
    # Alembic tells of its dialect on every connection; joblib logs what it did.
    logging.getLogger("alembic").setLevel(logging.WARNING)


def protect(logger: logging.Logger) -> logging.Logger:
    """Give `logger` both filters (once); return it."""
    for kind in (RedactSecrets, ClientGarbage):
        if not any(isinstance(f, kind) for f in logger.filters):
            logger.addFilter(kind())
    return logger
