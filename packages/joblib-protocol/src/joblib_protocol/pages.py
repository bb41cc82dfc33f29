"""Pagination of list answers."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel

DEFAULT_PAGE_LIMIT = 50
MAX_PAGE_LIMIT = 500

ItemT = TypeVar("ItemT")


class PaginatedResponse(BaseModel, Generic[ItemT]):
    """One page of a list, newest first, with the total count."""

    items: list[ItemT]
    total: int
    limit: int
    offset: int
