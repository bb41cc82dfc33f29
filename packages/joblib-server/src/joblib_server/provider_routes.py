"""The provider endpoints: register, list, read (cached or asked of the worker),
the worker's answers and errors, delete."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from joblib_protocol import (
    REQUEST_HASH_HEADER,
    Emission,
    PaginatedResponse,
    ProviderErrorRequest,
    ProviderFailed,
    ProviderRegisterRequest,
    ProviderRequest,
    ProviderResultReady,
    ProviderTimeout,
    ValidationFailed,
    canonical_params,
    provider_channel,
    request_hash,
    room_channel,
)
from joblib_server import providers
from joblib_server.auth import Identity
from joblib_server.endpoints import (
    Endpoints,
    answer,
    format_wait,
    path_uuid,
    prefer_wait,
)
from joblib_server.errors import ProblemError, forbidden
from joblib_server.policy import Action, authorize, restricts
from joblib_server.provider_results import Failure, result_key


class ProviderRoutes(Endpoints):
    """The provider endpoints of one `JobLib`, for the route table of `RestApi`."""

    async def register_provider(self, request: Request) -> Response:
        """`PUT /rooms/{room_id}/providers`."""
        identity = await self.identity(request)
        room_id = await self.in_room(request, identity, Action.REGISTER)
        body = await self.body(request, ProviderRegisterRequest)
        registration = await self.joblib.execute(
            providers.register_provider,
            identity,
            room_id,
            body,
            self.joblib.settings.allowed_provider_categories,
        )
        return answer(registration.provider, 201 if registration.created else 200)

    async def list_providers(self, request: Request) -> Response:
        """`GET /rooms/{room_id}/providers`."""
        room_id = await self.in_room(request, await self.identity(request), Action.READ)
        limit, offset = self.page(request)
        async with self.joblib.database.read(slow=True) as session:
            items, total = await providers.list_providers(
                session, room_id, limit, offset, count_limit=self.count_limit
            )
        return answer(
            PaginatedResponse(items=items, total=total, limit=limit, offset=offset)
        )

    async def provider_info(self, request: Request) -> Response:
        """`GET /rooms/{room_id}/providers/{full_name}/info`."""
        room_id = await self.in_room(request, await self.identity(request), Action.READ)
        async with self.joblib.database.read() as session:
            provider = await providers.find_provider(
                session, room_id, request.path_params["full_name"]
            )
        return answer(providers.provider_response(provider))

    async def read_provider(self, request: Request) -> Response:
        """`GET /rooms/{room_id}/providers/{full_name}?<params>`: the result's bytes.

        From the cache at once; else one `provider_request` for identical reads
        in flight, and a wait (`Prefer: wait=N`) for the worker's answer.
        """
        room_id = await self.in_room(request, await self.identity(request), Action.READ)
        full_name = request.path_params["full_name"]
        async with self.joblib.database.read() as session:
            provider = await providers.find_provider(session, room_id, full_name)
        params = dict(request.query_params)
        providers.check_params(provider.schema_, params)
        digest = request_hash(params)
        key = result_key(provider.id, digest)
        results = self.joblib.provider_results
        media = provider.content_type
        cached = await results.get(key)
        if cached is not None:
            return Response(cached, media_type=media)
        settings = self.joblib.settings
        asked = prefer_wait(
            request.headers.get("prefer"), settings.provider_long_poll_max_seconds
        )
        wait = asked
        if wait is None:
            wait = min(
                settings.provider_long_poll_default_seconds,
                settings.provider_long_poll_max_seconds,
            )
        if self.joblib.stopping:
            wait = 0  # a stopping server holds no one (see `begin_shutdown`)
        ask = Emission(
            ProviderRequest(
                request_id=digest,
                provider_name=provider.full_name,
                params=canonical_params(params),
            ),
            provider_channel(provider.full_name),
        )

        async def dispatch() -> None:
            if await results.acquire(key, settings.provider_inflight_ttl_seconds):
                await self.joblib.emitter.emit([ask])

        answer = await results.wait(key, wait, dispatch)
        if isinstance(answer, Failure):
            raise ProblemError(ProviderFailed, answer.message)
        if answer is None:
            raise ProblemError(
                ProviderTimeout,
                f"provider {provider.full_name!r} did not answer within "
                f"{format_wait(wait)} s",
                headers={"Retry-After": "2"},
            )
        applied = (
            None
            if asked is None
            else {"Preference-Applied": f"wait={format_wait(wait)}"}
        )
        return Response(answer, media_type=media, headers=applied)

    async def _own_provider(
        self, request: Request, identity: Identity
    ) -> tuple[Any, str]:
        """The path's provider, which the caller must own; and `X-Request-Hash`."""
        provider_id = path_uuid(request, "provider_id")
        async with self.joblib.database.read() as session:
            provider = await providers.get_provider(session, provider_id)
        if provider.owner_id != identity.id:
            raise forbidden(f"provider {provider_id} belongs to another identity")
        if restricts(self.joblib.policy, identity):
            await authorize(
                self.joblib.policy, identity, provider.room_id, Action.SERVE
            )
        return provider, request.headers.get(REQUEST_HASH_HEADER.lower(), "")

    async def provider_result(self, request: Request) -> Response:
        """`POST /providers/{provider_id}/results`: the raw bytes of one answer."""
        identity = await self.identity(request)
        provider, digest = await self._own_provider(request, identity)
        if not 0 < len(digest) <= 128:
            raise ProblemError(
                ValidationFailed,
                f"send the hash of the read in {REQUEST_HASH_HEADER}",
                errors=[{"loc": ["header", REQUEST_HASH_HEADER], "msg": "1-128 chars"}],
            )
        settings = self.joblib.settings
        data = await self.raw_body(request, settings.max_provider_result_bytes)
        await self.joblib.provider_results.store(
            result_key(provider.id, digest), data, settings.provider_result_ttl_seconds
        )
        ready = ProviderResultReady(
            provider_name=provider.full_name, request_hash=digest
        )
        await self.joblib.emitter.emit(
            [Emission(ready, room_channel(provider.room_id))]
        )
        return Response(status_code=204)

    async def provider_error(self, request: Request) -> Response:
        """`POST /providers/{provider_id}/errors` (ours): a read that failed."""
        identity = await self.identity(request)
        provider, _ = await self._own_provider(request, identity)
        body = await self.body(request, ProviderErrorRequest)
        await self.joblib.provider_results.fail(
            result_key(provider.id, body.request_hash), body.error
        )
        return Response(status_code=204)

    async def delete_provider(self, request: Request) -> Response:
        """`DELETE /providers/{provider_id}`."""
        identity = await self.identity(request)
        provider_id = path_uuid(request, "provider_id")
        await self.joblib.execute(providers.delete_provider, identity, provider_id)
        return Response(status_code=204)
