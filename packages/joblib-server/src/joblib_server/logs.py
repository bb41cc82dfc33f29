"""What the server's logs never hold: tokens, and a client's garbage as tracebacks.

At `--log-level debug` uvicorn hands its logger to the `websockets` library, which
logs every frame and handshake header: the Socket.IO `auth` payload and the
`Authorization` header with them. Engine.IO and Socket.IO log every packet at
INFO. `RedactSecrets` rewrites such lines. Engine.IO logs a polling request whose
payload it cannot decode as an ERROR with a traceback, so anyone could fill the
log with them: `ClientGarbage` makes that, and engineio's other complaints about
what a client sent, one line at WARNING.
"""

from __future__ import annotations

import logging
import re

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


def protect(logger: logging.Logger) -> logging.Logger:
    """Give `logger` both filters (once); return it."""
    for kind in (RedactSecrets, ClientGarbage):
        if not any(isinstance(f, kind) for f in logger.filters):
            logger.addFilter(kind())
    return logger
