"""REST models of rooms (ours)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class RoomSummary(BaseModel):
    """Ours: a room that has jobs or tasks, as `GET /rooms` lists it."""

    room_id: str
    jobs: int = Field(
        ge=0, description="Live jobs registered in the room itself (not `@global`)."
    )
    pending: int = Field(ge=0, description="Its tasks waiting to be claimed.")
    running: int = Field(ge=0, description="Its tasks claimed or running.")
