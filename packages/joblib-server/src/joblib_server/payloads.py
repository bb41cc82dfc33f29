"""Task payloads checked against their job's JSON Schema (placeholder)."""

from __future__ import annotations

from typing import Any


def check_payload(schema: dict[str, Any], payload: dict[str, Any]) -> None:
    """Raise 422 `invalid-payload` unless `payload` matches `schema`."""


def check_schema(schema: dict[str, Any]) -> None:
    """Raise 422 `invalid-schema` unless `schema` is a valid JSON Schema."""
