"""Provider results: where they are cached, and how identical reads share one.

A read that misses the cache marks its request in flight (only the first of
identical reads gets the mark and dispatches `provider_request`), then waits.
The worker's upload stores the bytes, clears the mark and wakes every waiting
reader; its error report (ours) clears the mark and wakes them with the
message instead, caching nothing.

`ResultBackend` is the small protocol behind it. `MemoryResults` (the default)
serves one server process; `RedisResults` (chosen when the standalone server has
`redis_url`) shares cache, marks and wake-ups between processes through Redis
keys with a TTL and one pub/sub channel. A host may bring its own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import anyio

if TYPE_CHECKING:
    import redis.asyncio

logger = logging.getLogger("joblib_server.providers")


@dataclass(frozen=True, slots=True)
class Failure:
    """The worker's word that it cannot answer a read."""

    message: str


Answer = bytes | Failure
"""What a waiting reader gets: the result's bytes, or the worker's failure."""


@runtime_checkable
class ResultBackend(Protocol):
    """Cache, in-flight marks and wake-ups of provider reads, by key.

    A key names one read of one provider (`result_key`). Every method may be
    called from many readers at once.
    """

    async def get(self, key: str) -> bytes | None:
        """The cached result, or None."""
        ...

    async def acquire(self, key: str, ttl: float) -> bool:
        """Mark `key` in flight for `ttl` seconds; False when it already is."""
        ...

    async def store(self, key: str, data: bytes, ttl: float) -> None:
        """Cache `data` for `ttl` seconds, clear the mark, wake the waiters."""
        ...

    async def fail(self, key: str, message: str) -> None:
        """Clear the mark and wake the waiters with `message`; cache nothing."""
        ...

    async def wait(
        self, key: str, within: float, start: Callable[[], Awaitable[None]]
    ) -> Answer | None:
        """Wait up to `within` s for `key`'s answer; None when none came.

        Race-safe: listens first, then reads the cache (a hit returns at once),
        and only then calls `start` (the dispatch), so no answer is missed.
        """
        ...

    async def aclose(self) -> None:
        """Release connections and background tasks."""
        ...


def stop_waiting(backend: ResultBackend) -> None:
    """Answer the readers waiting in this process now, if the backend can.

    `stop_waiting()` is optional in a host's own backend: without it, readers
    wait out their `Prefer: wait` during a shutdown.
    """
    stop = getattr(backend, "stop_waiting", None)
    if callable(stop):
        stop()


def result_key(provider_id: object, request_hash: str) -> str:
    """The key of one read: the provider's id (not its name: a provider deleted
    and registered again starts with an empty cache) and the request's hash."""
    return f"{provider_id}:{request_hash}"


class _Slot:
    __slots__ = ("answer", "event")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.answer: Answer | None = None


class _Waiters:
    """The readers waiting in this process, by key."""

    def __init__(self) -> None:
        self._slots: dict[str, set[_Slot]] = {}

    def add(self, key: str) -> _Slot:
        slot = _Slot()
        self._slots.setdefault(key, set()).add(slot)
        return slot

    def remove(self, key: str, slot: _Slot) -> None:
        slots = self._slots.get(key)
        if slots is not None:
            slots.discard(slot)
            if not slots:
                del self._slots[key]

    def count(self, key: str) -> int:
        return len(self._slots.get(key, ()))

    def wake_all(self) -> None:
        for key in list(self._slots):
            self.wake(key, None)

    def wake(self, key: str, answer: Answer | None) -> None:
        """Wake every reader of `key`; `None` asks them to read the cache."""
        for slot in self._slots.pop(key, ()):
            slot.answer = answer
            slot.event.set()


async def _wait(
    waiters: _Waiters,
    key: str,
    within: float,
    get: Callable[[str], Awaitable[bytes | None]],
    start: Callable[[], Awaitable[None]],
) -> Answer | None:
    slot = waiters.add(key)
    try:
        cached = await get(key)
        if cached is not None:
            return cached
        await start()
        with anyio.move_on_after(within):
            await slot.event.wait()
        if not slot.event.is_set():
            return None
        if slot.answer is not None:
            return slot.answer
        return await get(key)
    finally:
        waiters.remove(key, slot)


class MemoryResults:
    """The default backend: one server process, everything in its memory.

    Expired entries are dropped when read, and all of them when a store finds
    more than `sweep_every` since the last sweep, so the cache never holds more
    than the results of the last TTL plus that many.
    """

    def __init__(self, *, sweep_every: int = 1000) -> None:
        self._values: dict[str, tuple[bytes, float]] = {}
        self._inflight: dict[str, float] = {}
        self._waiters = _Waiters()
        self._sweep_every = sweep_every
        self._stores = 0

    async def get(self, key: str) -> bytes | None:
        """The cached result, unless it expired."""
        entry = self._values.get(key)
        if entry is None:
            return None
        data, expires = entry
        if expires <= time.monotonic():
            del self._values[key]
            return None
        return data

    async def acquire(self, key: str, ttl: float) -> bool:
        """Atomic in one event loop: no await between the check and the mark."""
        now = time.monotonic()
        held = self._inflight.get(key)
        if held is not None and held > now:
            return False
        self._inflight[key] = now + ttl
        return True

    async def store(self, key: str, data: bytes, ttl: float) -> None:
        """Cache, clear the mark, wake the waiters with the bytes."""
        self._stores += 1
        if self._stores >= self._sweep_every:
            self._sweep()
        self._values[key] = (data, time.monotonic() + ttl)
        self._inflight.pop(key, None)
        self._waiters.wake(key, data)

    async def fail(self, key: str, message: str) -> None:
        """Clear the mark and wake the waiters with the failure."""
        self._inflight.pop(key, None)
        self._waiters.wake(key, Failure(message))

    async def wait(
        self, key: str, within: float, start: Callable[[], Awaitable[None]]
    ) -> Answer | None:
        """See `ResultBackend.wait`."""
        return await _wait(self._waiters, key, within, self.get, start)

    def waiting(self, key: str) -> int:
        """How many readers wait for `key` in this process now."""
        return self._waiters.count(key)

    def stop_waiting(self) -> None:
        """The server is stopping: every waiting reader answers now (504)."""
        self._waiters.wake_all()

    async def aclose(self) -> None:
        """Nothing to release."""

    def _sweep(self) -> None:
        self._stores = 0
        now = time.monotonic()
        for key in [k for k, (_, expires) in self._values.items() if expires <= now]:
            del self._values[key]
        for key in [k for k, expires in self._inflight.items() if expires <= now]:
            del self._inflight[key]


class RedisResults:
    """Cache, marks and wake-ups shared by every server process through Redis.

    Results are `SET … PX`, marks `SET … NX PX`; each store or failure is
    published on one channel, which one listener per process relays to its own
    waiting readers (one subscription per process, not per reader).
    """

    def __init__(self, url: str, *, prefix: str = "joblib:provider") -> None:
        import redis.asyncio as aioredis

        self._redis: redis.asyncio.Redis = aioredis.Redis.from_url(url)
        self._prefix = prefix
        self._channel = f"{prefix}:answers"
        self._waiters = _Waiters()
        self._listener: Any = None
        self._subscribed: anyio.Event | None = None
        self._lock = anyio.Lock()

    def _result(self, key: str) -> str:
        return f"{self._prefix}:result:{key}"

    def _mark(self, key: str) -> str:
        return f"{self._prefix}:inflight:{key}"

    async def get(self, key: str) -> bytes | None:
        """The cached result (Redis expires it)."""
        data = await self._redis.get(self._result(key))
        if data is None:
            return None
        return data if isinstance(data, bytes) else str(data).encode()

    async def acquire(self, key: str, ttl: float) -> bool:
        """`SET NX PX`: one process, one reader gets the mark."""
        done = await self._redis.set(
            self._mark(key), b"1", nx=True, px=max(1, int(ttl * 1000))
        )
        return bool(done)

    async def store(self, key: str, data: bytes, ttl: float) -> None:
        """Cache, clear the mark, tell every process."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._result(key), data, px=max(1, int(ttl * 1000)))
            pipe.delete(self._mark(key))
            pipe.publish(self._channel, json.dumps({"key": key}))
            await pipe.execute()
        self._waiters.wake(key, data)  # this process's readers need not wait for it

    async def fail(self, key: str, message: str) -> None:
        """Clear the mark, tell every process's waiters the message."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._mark(key))
            pipe.publish(self._channel, json.dumps({"key": key, "error": message}))
            await pipe.execute()
        self._waiters.wake(key, Failure(message))

    async def wait(
        self, key: str, within: float, start: Callable[[], Awaitable[None]]
    ) -> Answer | None:
        """See `ResultBackend.wait`; the listener is subscribed before any read."""
        await self._listen()
        return await _wait(self._waiters, key, within, self.get, start)

    async def _listen(self) -> None:
        """Start this process's listener once, and return when it is subscribed."""
        async with self._lock:
            if self._subscribed is None:
                import asyncio

                self._subscribed = anyio.Event()
                self._listener = asyncio.get_running_loop().create_task(
                    self._relay(self._subscribed)
                )
        # Redis down: the readers wait without wake-ups from other processes
        # rather than not at all.
        with anyio.move_on_after(5):
            await self._subscribed.wait()

    async def _relay(self, subscribed: anyio.Event) -> None:
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                subscribed.set()
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    try:
                        note = json.loads(message["data"])
                        key = str(note["key"])
                    except (ValueError, KeyError, TypeError):
                        continue
                    error = note.get("error")
                    # A stored result is read from Redis by each waiter: the
                    # message stays small whatever the result's size.
                    self._waiters.wake(key, None if error is None else Failure(error))
            except Exception:
                # Readers still get their answer, or time out: a lost wake-up
                # costs a 504, never a wrong answer. Subscribe again.
                logger.exception("the provider results listener lost Redis")
                await anyio.sleep(0.5)
            finally:
                await pubsub.aclose()

    def stop_waiting(self) -> None:
        """The server is stopping: every waiting reader answers now (504)."""
        self._waiters.wake_all()

    async def aclose(self) -> None:
        """Stop the listener and close the connections."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            with anyio.CancelScope(shield=True):
                with contextlib.suppress(BaseException):  # its own cancellation
                    await listener
        await self._redis.aclose()
