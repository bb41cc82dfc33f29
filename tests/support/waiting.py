"""Wait on a condition instead of sleeping a fixed time."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

import anyio

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0


def eventually(
    condition: Callable[[], T],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.01,
    what: str = "the condition",
) -> T:
    """Call `condition` until it returns something truthy; return that value.

    Fails the test with `what` in the message when `timeout` passes first.
    Exceptions raised by `condition` propagate at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@overload
async def aeventually(
    condition: Callable[[], Awaitable[T]],
    *,
    timeout: float = ...,  # noqa: ASYNC109
    interval: float = ...,
    what: str = ...,
) -> T: ...


@overload
async def aeventually(
    condition: Callable[[], T],
    *,
    timeout: float = ...,  # noqa: ASYNC109
    interval: float = ...,
    what: str = ...,
) -> T: ...


async def aeventually(
    condition: Callable[[], Any],
    *,
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - a deadline, not a cancel scope
    interval: float = 0.01,
    what: str = "the condition",
) -> Any:
    """The async twin of `eventually`: `condition` may be sync or async."""
    deadline = anyio.current_time() + timeout
    while True:
        value = condition()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        if anyio.current_time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await anyio.sleep(interval)
