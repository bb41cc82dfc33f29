"""The `Provider` base a worker subclasses for each kind of data it serves."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from joblib_protocol import DEFAULT_PROVIDER_CONTENT_TYPE, format_job_name


class Provider(BaseModel):
    """A read's parameters as a pydantic model, and the code that answers it.

    The provider's JSON Schema is the model's schema; `category` groups providers
    (`filesystem`, `frames`), and `content_type` is the media type readers get
    (default `application/json`). A read's parameters arrive as the strings of
    its query (`?frame=3`) and are validated into an instance (pydantic turns
    `"3"` into an `int` field's 3) before `read()` is called with the handler
    given at registration.
    """

    category: ClassVar[str]
    content_type: ClassVar[str] = DEFAULT_PROVIDER_CONTENT_TYPE

    def read(self, handler: Any) -> Any:
        """Answer the read: raw `bytes`, sent as they are, or a JSON-able value.

        A value that is not bytes is sent as its JSON (pydantic models,
        dataclasses and anything `pydantic_core.to_jsonable_python` takes).
        `handler` is the object given to `register_provider` (a file system, a
        frame source). Raising fails the read: every reader waiting for it gets
        502 `provider-failed` with the error text, and nothing is cached.
        """
        raise NotImplementedError(f"{type(self).__name__}.read() is not implemented")


def check_provider(cls: object) -> type[Provider]:
    """Return `cls` if it is a `Provider` subclass with a category, else raise."""
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise TypeError(f"{cls!r} is not a subclass of Provider")
    if cls is Provider or not isinstance(getattr(cls, "category", None), str):
        raise TypeError(f"{cls.__name__} must set `category: ClassVar[str]`")
    return cls


def provider_full_name(room_id: str, category: str, name: str) -> str:
    """Return the full name `<room_id>:<category>:<name>` of a provider."""
    return format_job_name(room_id, category, name)


def encode_result(value: Any) -> bytes:
    """What `read()` returned, as the bytes uploaded: bytes as they are, else JSON."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return json.dumps(to_jsonable_python(value), separators=(",", ":")).encode()


@dataclass(frozen=True)
class ProviderResult:
    """What a read answered: the bytes as the provider sent them, and their type."""

    content: bytes
    content_type: str

    def json(self) -> Any:
        """The content parsed as JSON (for `application/json` providers)."""
        return json.loads(self.content)

    @property
    def text(self) -> str:
        """The content decoded as UTF-8."""
        return self.content.decode()
