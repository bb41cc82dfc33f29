"""Health and metrics routes: `/healthz`, `/readyz` and `/metrics` (placeholder)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import BaseRoute

if TYPE_CHECKING:
    from joblib_server.runtime import JobLib


def health_routes(joblib: JobLib) -> list[BaseRoute]:
    """The health and metrics routes of `joblib`, relative to where they are mounted."""
    return []
