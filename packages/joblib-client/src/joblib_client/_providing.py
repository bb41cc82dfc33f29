"""Serving providers: registering them as this worker, their rooms, and reads.

`ProviderServing` registers a provider under the manager's worker (creating it as
`register()` does), joins its socket room, registers it again after a recovery,
and reads a provider as a caller. Answering the reads that reach this worker is
`Providers`' (`_providers.py`).
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

from joblib_client._providers import (
    ProviderRegistration,
    ServedProvider,
    query_params,
)
from joblib_client._socket import EventSource
from joblib_client._worker import WorkerIdentity
from joblib_client.exceptions import (
    ForbiddenError,
    JobLibError,
    NotFoundError,
    ProviderError,
    TransportError,
)
from joblib_client.provider import (
    Provider,
    ProviderResult,
    check_provider,
)
from joblib_protocol import (
    GLOBAL_ROOM,
    JoinProviderRoom,
    LeaveProviderRoom,
    ProviderRegisterRequest,
)

logger = logging.getLogger("joblib_client")


class ProviderServing(WorkerIdentity):
    """Register, serve, unregister and read providers (a mixin of `JobManager`)."""

    def register_provider(
        self,
        cls: type[Provider],
        *,
        name: str | None = None,
        handler: Any = None,
        room: str | None = None,
    ) -> str:
        """Serve `cls` as provider `name` (default: the class name) in `room`.

        Registers it (`PUT /rooms/{room}/providers`, default room `@global`) as
        this manager's worker, creating the worker as `register()` does, and
        joins its socket room, so reads reach this worker as `provider_request`
        events (the manager needs a socket that delivers events). Each read is
        answered on a small thread pool: its parameters are validated into `cls`,
        `read(handler)` is called, and what it returns is uploaded; a `read()`
        that raises (or parameters that do not validate) fails the read at once
        for every reader. Returns the provider's full name. Registering the same
        name again replaces its class and handler.
        """
        registration = ProviderRegistration(
            check_provider(cls), name or cls.__name__, room or GLOBAL_ROOM, handler
        )
        if not isinstance(self._tsio, EventSource):
            logger.warning(
                "%s is registered, but without a socket that delivers events no "
                "read reaches this manager",
                registration.name,
            )
        served = self._startup(
            lambda: self._serve_provider(registration),
            f"registering provider {registration.name}",
        )
        self._join_provider_room(served)
        self._serving.start()
        return served.full_name

    def _serve_provider(self, registration: ProviderRegistration) -> ServedProvider:
        while True:
            worker_id = self._worker_or_create()
            served = self._put_provider(registration, worker_id)
            with self._lock:
                self._check_connected()
                if self._worker_id == served.worker_id and not self._creating:
                    self._providers.add(served)
                    return served
            # The worker was replaced meanwhile (see `_register`): again under it.

    def unregister_provider(self, name: str) -> None:
        """Stop serving provider `name` (its full name): leave its room, delete it.

        Raises `KeyError` when this manager does not serve it; a provider the
        server already removed is simply forgotten.
        """
        served = self._providers.remove(name)
        if served is None:
            raise KeyError(name)
        if self._tsio is not None:
            leave = LeaveProviderRoom(
                provider_name=name, worker_id=str(served.worker_id)
            )
            try:
                self._emit(leave)
            except JobLibError as exc:
                # Deleting the provider below ends its reads all the same.
                logger.warning("could not leave the room of %s: %s", name, exc)
        try:
            self._rest.delete_provider(served.provider_id)
        except NotFoundError:
            logger.debug("provider %s was already removed", name)

    @property
    def handlers(self) -> dict[str, Any]:
        """The handler of every provider this manager serves, by full name."""
        return self._providers.handlers()

    def read(
        self,
        full_name: str,
        *,
        room: str,
        wait: float | None = None,
        **params: Any,
    ) -> ProviderResult:
        """Read provider `full_name` from `room` with `params`; return its answer.

        `params` travel as query parameters (strings as they are, booleans as
        `true`/`false`, other values as their JSON). An answer the server
        cached comes at once; otherwise the server asks the provider's worker and
        holds the read until it answers, up to `wait` seconds (`Prefer: wait`;
        the server caps it) or the server's default. Raises
        `ProviderTimeoutError` (504) when no answer came in time,
        `ProviderFailedError` (502, `detail` is the worker's error) when the
        worker could not answer, and `ProviderNotFoundError` (404); the first
        two carry `provider` and `params`.
        """
        query = query_params(params)
        try:
            response = self._rest.read_provider(room, full_name, query, wait=wait)
        except ProviderError as exc:
            exc.provider, exc.params = full_name, query
            raise
        content_type = response.headers.get("content-type", "")
        return ProviderResult(response.content, content_type)

    def _put_provider(
        self, registration: ProviderRegistration, worker_id: UUID | None
    ) -> ServedProvider:
        """`PUT` the provider under `worker_id`, or under a new worker given None.

        Given None, the caller is the creator (see `_worker_or_create`).
        """
        cls = registration.cls
        request = ProviderRegisterRequest.model_validate(
            {
                "category": cls.category,
                "name": registration.name,
                "schema": cls.model_json_schema(),
                "content_type": cls.content_type,
                "worker_id": worker_id,
            }
        )
        try:
            provider = self._rest.register_provider(registration.room_id, request)
        except BaseException:
            if worker_id is None:
                self._created(None)
            raise
        if worker_id is None:
            self._created(provider.worker_id)
        return ServedProvider(
            registration, provider.full_name, provider.id, provider.worker_id
        )

    def _join_provider_room(self, served: ServedProvider) -> None:
        if self._tsio is None:
            return
        join = JoinProviderRoom(
            provider_name=served.full_name, worker_id=str(served.worker_id)
        )
        try:
            self._emit(join)
        except TransportError as exc:
            # The socket is down; its reconnection joins every room again.
            logger.warning("could not join %s yet: %s", served.full_name, exc)

    def _rejoin_provider(self, served: ServedProvider, worker_id: UUID) -> None:
        """Join a provider's room again after a reconnection, registering it if lost."""
        if self._tsio is None:
            return
        join = JoinProviderRoom(
            provider_name=served.full_name, worker_id=str(worker_id)
        )
        try:
            self._emit(join)
        except (ForbiddenError, NotFoundError) as exc:
            logger.info(
                "registering %s again as worker %s: %s",
                served.full_name,
                worker_id,
                exc,
            )
            again = self._put_provider(served.registration, worker_id)
            self._providers.add(again)
            self._emit(join)

    def _register_providers_again(self) -> None:
        """After a recovery: every provider again, under the new worker."""
        for served in self._providers.all().values():
            again = self._put_provider(served.registration, self._require_worker())
            self._providers.add(again)
            self._join_provider_room(again)
