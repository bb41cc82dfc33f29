"""REST models and wire rules of providers: server-dispatched reads from workers.

A provider answers "give me this data" instead of running a computation. A worker
registers it (`PUT /rooms/{room_id}/providers`), joins `providers:{full_name}`
over Socket.IO, and answers each `provider_request` by uploading the bytes
(`POST /providers/{id}/results`, header `X-Request-Hash`) or, ours, reporting a
failure (`POST /providers/{id}/errors`). Readers `GET
/rooms/{room_id}/providers/{full_name}?<params>` and get the bytes, cached.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_PROVIDER_CONTENT_TYPE = "application/json"
"""What a provider's results are unless its registration says otherwise."""

REQUEST_HASH_HEADER = "X-Request-Hash"
"""Header of a result upload: the hash of the request it answers."""

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
CONTENT_TYPE_PATTERN = rf"^{_TOKEN}/{_TOKEN}(?:[ \t]*;[\x20-\x7e\t]*)?$"
"""A media type (`type/subtype`, parameters allowed) that fits an HTTP header."""

MAX_PROVIDER_ERROR = 4096
"""Ours: longest `error` a worker may report for a failed read (characters)."""


def canonical_params(params: Mapping[str, Any]) -> str:
    """Return the canonical JSON of a read's parameters: sorted keys, compact.

    A read's parameters are its query parameters, each value the string it was
    sent as (`?frame=3` is `{"frame": "3"}`); this string is what a
    `provider_request` carries as `params`.
    """
    return json.dumps(dict(params), sort_keys=True, separators=(",", ":"))


def request_hash(params: Mapping[str, Any]) -> str:
    """Return the hex SHA-256 of `canonical_params(params)`: a read's cache key."""
    return hashlib.sha256(canonical_params(params).encode()).hexdigest()


def typed_params(
    schema: Mapping[str, Any], params: Mapping[str, Any]
) -> dict[str, Any]:
    """Return a read's query strings as they are checked against the schema.

    A parameter the schema's `properties` let be a string (its `type`, or one of
    its `anyOf`/`oneOf`, as pydantic writes `str | None`) stays as it was sent;
    any other is read as JSON when it is JSON (`"3"` is 3, `"[1,2]"` a list,
    `"true"` true) and kept as the string when it is not (`"/data"`). Only the
    check sees these values: the hash and `provider_request` carry the strings.
    The server checks, and the worker SDK reads, by this one rule.
    """
    properties = schema.get("properties")
    declared = properties if isinstance(properties, Mapping) else {}
    typed: dict[str, Any] = {}
    for name, value in params.items():
        if not isinstance(value, str) or _allows_string(declared.get(name)):
            typed[name] = value
            continue
        try:
            typed[name] = json.loads(value)
        except (ValueError, RecursionError):
            typed[name] = value
    return typed


def _allows_string(spec: Any) -> bool:
    if not isinstance(spec, Mapping):
        return False
    kind = spec.get("type")
    if kind == "string" or (isinstance(kind, list) and "string" in kind):
        return True
    options = spec.get("anyOf") or spec.get("oneOf") or []
    return isinstance(options, list) and any(_allows_string(o) for o in options)


class ProviderRegisterRequest(BaseModel):
    """Body of `PUT /rooms/{room_id}/providers`."""

    model_config = ConfigDict(populate_by_name=True)

    category: str
    name: str
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    content_type: str = Field(
        default=DEFAULT_PROVIDER_CONTENT_TYPE,
        min_length=1,
        max_length=255,
        pattern=CONTENT_TYPE_PATTERN,
        description="The media type of the provider's results, answered with them.",
    )
    worker_id: UUID | None = None


class ProviderResponse(BaseModel):
    """A registered provider."""

    model_config = ConfigDict(populate_by_name=True)

    id: UUID
    room_id: str
    category: str
    name: str
    full_name: str
    schema_: dict[str, Any] = Field(alias="schema")
    content_type: str = DEFAULT_PROVIDER_CONTENT_TYPE
    worker_id: UUID
    created_at: datetime


class ProviderErrorRequest(BaseModel):
    """Ours: body of `POST /providers/{id}/errors`: a read the worker cannot answer.

    Every reader waiting for `request_hash` gets 502 `provider-failed` with
    `error` as its detail at once; nothing is cached, so the next read asks again.
    """

    model_config = ConfigDict(extra="forbid")

    request_hash: str = Field(min_length=1, max_length=128)
    error: str = Field(max_length=MAX_PROVIDER_ERROR)
