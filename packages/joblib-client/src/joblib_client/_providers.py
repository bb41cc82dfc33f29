"""A worker's providers: what it registered, and the threads that answer reads.

The socket delivers `provider_request` on python-socketio's thread; the read
itself runs on a small pool, so a slow `read()` holds up neither the socket nor
the other providers' reads beyond the pool's size.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from pydantic import ValidationError

from joblib_client._http import Rest
from joblib_client._retry import is_refusal, is_transient
from joblib_client.exceptions import JobLibError, PayloadTooLargeError
from joblib_client.provider import Provider, encode_result
from joblib_protocol import (
    MAX_PROVIDER_ERROR,
    ProviderErrorRequest,
    ProviderRequest,
    typed_params,
)

logger = logging.getLogger("joblib_client.providers")

READ_THREADS = 4
"""Reads answered at once by one manager; more wait for a free thread."""


@dataclass(frozen=True)
class ProviderRegistration:
    """What `register_provider` was given: enough to register it again."""

    cls: type[Provider]
    name: str
    room_id: str
    handler: Any


@dataclass(frozen=True)
class ServedProvider:
    """A provider the server knows: its registration and the server's id for it."""

    registration: ProviderRegistration
    full_name: str
    provider_id: UUID
    worker_id: UUID


class Providers:
    """The providers a manager serves, by full name, and the pool answering reads."""

    def __init__(self, rest: Rest, threads: int = READ_THREADS) -> None:
        self._rest = rest
        self._threads = threads
        self._lock = threading.Lock()
        self._served: dict[str, ServedProvider] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False

    def add(self, served: ServedProvider) -> None:
        """Serve `served` (replacing an earlier registration of the same name)."""
        with self._lock:
            self._served[served.full_name] = served

    def remove(self, full_name: str) -> ServedProvider | None:
        """Stop serving `full_name`; return what was served, if anything."""
        with self._lock:
            return self._served.pop(full_name, None)

    def get(self, full_name: str) -> ServedProvider | None:
        """The provider served under `full_name`, if any."""
        with self._lock:
            return self._served.get(full_name)

    def all(self) -> dict[str, ServedProvider]:
        """Every served provider, by full name (a copy)."""
        with self._lock:
            return dict(self._served)

    def clear(self) -> list[ServedProvider]:
        """Forget every provider; return them."""
        with self._lock:
            served = list(self._served.values())
            self._served.clear()
            return served

    def handlers(self) -> dict[str, Any]:
        """The handler of every served provider, by full name."""
        with self._lock:
            return {
                name: served.registration.handler
                for name, served in self._served.items()
            }

    # answering reads

    def on_request(self, data: Any = None) -> None:
        """A `provider_request` arrived: answer it on the pool, if it is ours."""
        try:
            event = ProviderRequest.model_validate(data)
        except ValidationError:
            logger.debug("ignoring a malformed provider_request: %r", data)
            return
        served = self.get(event.provider_name)
        if served is None:
            logger.debug("ignoring a read of %s: not served", event.provider_name)
            return
        with self._lock:
            if self._closed:
                return
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self._threads, thread_name_prefix="joblib provider"
                )
            self._pool.submit(self._answer, served, event)

    def _answer(self, served: ServedProvider, event: ProviderRequest) -> None:
        try:
            content = self._read(served, event)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            logger.warning("read of %s failed: %s", served.full_name, error)
            self._send(lambda: self._fail(served, event, error), served)
            return
        try:
            self._rest.upload_provider_result(
                served.provider_id, event.request_id, content
            )
        except PayloadTooLargeError as exc:
            # Readers would wait for nothing until they time out: tell them.
            error = exc.summary()
            self._send(lambda: self._fail(served, event, error), served)
        except JobLibError as exc:
            _log_lost(served, "result", exc)

    def _read(self, served: ServedProvider, event: ProviderRequest) -> bytes:
        cls = served.registration.cls
        params = typed_params(_schema(cls), json.loads(event.params))
        provider = cls.model_validate(params)
        return encode_result(provider.read(served.registration.handler))

    def _fail(self, served: ServedProvider, event: ProviderRequest, error: str) -> None:
        text = error[:MAX_PROVIDER_ERROR] or "the read failed"
        report = ProviderErrorRequest(request_hash=event.request_id, error=text)
        self._rest.report_provider_error(served.provider_id, report)

    def _send(self, send: Callable[[], None], served: ServedProvider) -> None:
        try:
            send()
        except JobLibError as exc:
            _log_lost(served, "failure", exc)

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop taking reads; with `wait`, let the reads in progress finish."""
        with self._lock:
            self._closed = True
            # Kept: a later shutdown(wait=True) (close() after disconnect()) waits.
            pool = self._pool
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=True)


def _log_lost(served: ServedProvider, what: str, exc: JobLibError) -> None:
    # Nothing to retry: the readers time out (504), and a new read asks again.
    level = logging.WARNING if is_transient(exc) or is_refusal(exc) else logging.ERROR
    logger.log(
        level, "could not send the %s of a read of %s: %s", what, served.full_name, exc
    )


@functools.cache
def _schema(cls: type[Provider]) -> dict[str, Any]:
    return cls.model_json_schema()


def query_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Read parameters as the query strings they travel as.

    Strings stay, booleans become `true`/`false`, other values their JSON
    (`3`, `0.5`, `null`): pydantic reads them back into the provider's fields.
    """
    query: dict[str, str] = {}
    for key, value in params.items():
        if isinstance(value, str):
            query[key] = value
        elif isinstance(value, bool):
            query[key] = "true" if value else "false"
        else:
            query[key] = json.dumps(value, separators=(",", ":"))
    return query
