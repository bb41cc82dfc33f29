"""Operations on providers: register, look up, list, delete, join; and cleanup.

The rows only: results, in-flight marks and waiting readers live in
`provider_results`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlmodel import col, select

from joblib_protocol import (
    GLOBAL_ROOM,
    RESERVED_ROOMS,
    Emission,
    InvalidCategory,
    InvalidJobName,
    JobFullName,
    ProviderNotFound,
    ProviderRegisterRequest,
    ProviderResponse,
    ProvidersInvalidate,
    room_channel,
    typed_params,
    validate_job_name,
)
from joblib_server.auth import Identity
from joblib_server.backends import backend_of
from joblib_server.errors import ProblemError, forbidden
from joblib_server.jobs import check_room_id, registering_worker
from joblib_server.outcome import Outcome
from joblib_server.pages import bounded_count
from joblib_server.payloads import check_payload, check_schema
from joblib_server.tables import PROVIDER_TABLE, Provider, utcnow
from joblib_server.workers import new_socket_epoch

_provider = PROVIDER_TABLE

_REMOVE_WORKER_PROVIDERS = (
    sa.delete(_provider)
    .where(_provider.c.worker_id == sa.bindparam("b_worker"))
    .returning(_provider.c.room_id)
)

_HAS_PROVIDERS = (
    sa.select(_provider.c.id)
    .where(_provider.c.worker_id == sa.bindparam("b_worker"))
    .limit(1)
)


def providers_invalidate(room_id: str) -> Emission:
    """The `providers_invalidate` telling a room to fetch its provider list again."""
    return Emission(ProvidersInvalidate(), room_channel(room_id))


def provider_response(provider: Provider) -> ProviderResponse:
    """The wire shape of a provider row."""
    return ProviderResponse(
        id=provider.id,
        room_id=provider.room_id,
        category=provider.category,
        name=provider.name,
        full_name=provider.full_name,
        schema_=provider.schema_,
        content_type=provider.content_type,
        worker_id=provider.worker_id,
        created_at=provider.created_at,
    )


def visible_provider_rooms(room_id: str) -> tuple[str, ...]:
    """The rooms whose providers can be read from `room_id`: its own and `@global`."""
    return tuple(dict.fromkeys((room_id, GLOBAL_ROOM)))


def provider_not_found(what: str, room_id: str | None = None) -> ProblemError:
    """No such provider (visible from the room)."""
    where = "" if room_id is None else f" visible from room {room_id!r}"
    return ProblemError(ProviderNotFound, f"no provider {what}{where}")


@dataclass(frozen=True, slots=True)
class ProviderRegistration:
    """What `register_provider` did."""

    provider: ProviderResponse
    created: bool


async def register_provider(
    session: AsyncSession,
    identity: Identity,
    room_id: str,
    request: ProviderRegisterRequest,
    allowed_categories: Sequence[str] | None,
) -> Outcome[ProviderRegistration]:
    """Register a provider, or update it (same room, category and name)."""
    backend = backend_of(session)
    check_room_id(room_id)
    if room_id in RESERVED_ROOMS and not identity.is_admin:
        raise forbidden(f"only admins may register providers in {room_id}")
    if allowed_categories is not None and request.category not in allowed_categories:
        raise ProblemError(
            InvalidCategory,
            f"provider category {request.category!r} is not one of "
            f"{list(allowed_categories)}",
        )
    for part in (request.category, request.name):
        try:
            validate_job_name(part)
        except ValueError as exc:
            raise ProblemError(InvalidJobName, str(exc)) from None
    check_schema(request.schema_)

    worker_id = (await registering_worker(session, identity, request.worker_id)).id

    inserted = await session.execute(
        backend.insert_ignoring_conflicts(
            _provider,
            {
                "id": uuid.uuid4(),
                "room_id": room_id,
                "category": request.category,
                "name": request.name,
                "schema": request.schema_,
                "content_type": request.content_type,
                "worker_id": worker_id,
                "owner_id": identity.id,
                "created_at": utcnow(),
            },
            "room_id",
            "category",
            "name",
        )
    )
    created = inserted.rowcount == 1  # type: ignore[attr-defined]
    provider = (
        await session.execute(
            backend.locked(
                select(Provider).where(
                    Provider.room_id == room_id,
                    Provider.category == request.category,
                    Provider.name == request.name,
                )
            ).execution_options(populate_existing=True)
        )
    ).scalar_one()
    if not created:
        if provider.owner_id != identity.id and not identity.is_admin:
            raise forbidden(
                f"provider {provider.full_name!r} belongs to another identity"
            )
        # The latest registration decides: its worker serves it from now on.
        provider.schema_ = request.schema_
        provider.content_type = request.content_type
        provider.worker_id = worker_id
        provider.owner_id = identity.id
    return Outcome(
        ProviderRegistration(provider_response(provider), created),
        {providers_invalidate(room_id)},
    )


def provider_name_in_room(room_id: str, full_name: str) -> JobFullName:
    """The parts of `full_name` if its room is visible from `room_id`; else 404."""
    check_room_id(room_id)
    try:
        name = JobFullName.parse(full_name)
    except ValueError:
        raise provider_not_found(repr(full_name), room_id) from None
    if name.room_id not in visible_provider_rooms(room_id):
        raise provider_not_found(repr(full_name), room_id)
    return name


async def find_provider(
    session: AsyncSession, room_id: str, full_name: str
) -> Provider:
    """The provider `full_name` as seen from `room_id`, or `provider-not-found`."""
    name = provider_name_in_room(room_id, full_name)
    provider = (
        await session.execute(
            select(Provider).where(
                Provider.room_id == name.room_id,
                Provider.category == name.category,
                Provider.name == name.name,
            )
        )
    ).scalar_one_or_none()
    if provider is None:
        raise provider_not_found(repr(full_name), room_id)
    return provider


async def get_provider(session: AsyncSession, provider_id: uuid.UUID) -> Provider:
    """The provider with that id, or `provider-not-found`."""
    provider = await session.get(Provider, provider_id)
    if provider is None:
        raise provider_not_found(str(provider_id))
    return provider


async def list_providers(
    session: AsyncSession,
    room_id: str,
    limit: int,
    offset: int,
    count_limit: int | None = None,
) -> tuple[list[ProviderResponse], int]:
    """A page of the providers visible from a room, newest first, and their count."""
    check_room_id(room_id)
    where = (col(Provider.room_id).in_(visible_provider_rooms(room_id)),)
    total = await bounded_count(session, Provider, where, count_limit)
    rows = (
        (
            await session.execute(
                select(Provider)
                .where(*where)
                .order_by(col(Provider.created_at).desc(), col(Provider.id).desc())
                .limit(limit)
                .offset(offset)
            )
        )
        .scalars()
        .all()
    )
    return [provider_response(row) for row in rows], total


async def delete_provider(
    session: AsyncSession, identity: Identity, provider_id: uuid.UUID
) -> Outcome[None]:
    """Remove a provider as its owner or an admin (`DELETE /providers/{id}`)."""
    provider = (
        await session.execute(
            backend_of(session).locked(
                select(Provider).where(Provider.id == provider_id)
            )
        )
    ).scalar_one_or_none()
    if provider is None:
        raise provider_not_found(str(provider_id))
    if provider.owner_id != identity.id and not identity.is_admin:
        raise forbidden(f"provider {provider_id} belongs to another identity")
    room_id = provider.room_id
    await session.delete(provider)
    return Outcome(None, {providers_invalidate(room_id)})


async def join_provider(
    session: AsyncSession, identity: Identity, worker_id: uuid.UUID, full_name: str
) -> Outcome[int]:
    """Check that the caller's worker serves provider `full_name`.

    For `join_provider_room`.

    Like `join_job`: a sign of life, the same ownership rule, and the worker's
    new socket epoch, so that the socket's close cleans the worker up.
    """
    epoch = await new_socket_epoch(session, identity, worker_id)
    connection = await session.connection()
    name = JobFullName.parse(full_name)
    serves = (
        await connection.execute(
            sa.select(_provider.c.id).where(
                _provider.c.room_id == name.room_id,
                _provider.c.category == name.category,
                _provider.c.name == name.name,
                _provider.c.worker_id == worker_id,
            )
        )
    ).first()
    if serves is None:
        raise forbidden(f"worker {worker_id} does not serve provider {full_name}")
    return Outcome(epoch)


async def remove_worker_providers(
    connection: AsyncConnection, worker_id: uuid.UUID
) -> set[Emission]:
    """Delete the worker's providers (its cleanup); `providers_invalidate` each room."""
    rooms = await connection.execute(_REMOVE_WORKER_PROVIDERS, {"b_worker": worker_id})
    return {providers_invalidate(room) for room in set(rooms.scalars())}


async def serves_providers(connection: AsyncConnection, worker_id: uuid.UUID) -> bool:
    """Whether the worker serves any provider."""
    found = await connection.execute(_HAS_PROVIDERS, {"b_worker": worker_id})
    return found.first() is not None


def check_params(schema: dict[str, Any], params: Mapping[str, str]) -> None:
    """422 `invalid-payload` unless the read's parameters match the schema."""
    check_payload(
        schema,
        typed_params(schema, params),
        loc=("query",),
        what="the parameters do not match the provider's schema",
    )
