"""The dashboard: a page served by the server, live over Socket.IO (placeholder)."""

from __future__ import annotations

from starlette.routing import BaseRoute


def dashboard_routes() -> list[BaseRoute]:
    """The dashboard's routes, relative to where a host mounts them."""
    return []
