"""Helpers shared by the test suite (import from here, never from `conftest`)."""

from tests.support.waiting import aeventually, eventually

__all__ = ["aeventually", "eventually"]
