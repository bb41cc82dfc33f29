"""The wake bus: changes committed in one server process wake waiters in the others.

A held claim or a long-poll (`dispatch`) waits in one process; the change it waits
for may be committed in another. Every change whose `Outcome` concerns a waiter
(a task to claim, a task finished, a worker removed) is announced as one small
`Wake` message: on PostgreSQL by `NOTIFY` inside the change's own transaction, so
it is delivered exactly when the change commits and never for a change rolled
back; through Redis by `PUBLISH` after the commit. Each process listens on one
dedicated connection and wakes its own waiters; its own messages it ignores (its
waiters were woken in-process already).

A listener that loses its connection connects again and then wakes every local
waiter once: each re-checks the database, so nothing committed during the gap is
missed. The periodic re-check (`long_poll_recheck_seconds`) stays as a safety net.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import anyio
from sqlalchemy.ext.asyncio import AsyncSession

from joblib_protocol import Emission, TaskAvailable, TaskStatusEvent, is_terminal
from joblib_server.backends import backend_of

if TYPE_CHECKING:
    from joblib_server.database import Database

logger = logging.getLogger("joblib_server")

WakeBusName = Literal["auto", "postgresql", "redis", "off"]

CHANNEL = "joblib_wake"
"""The PostgreSQL channel and the Redis channel (Redis: `joblib:wake`)."""

MAX_PAYLOAD_BYTES = 7000
"""PostgreSQL refuses a NOTIFY payload of 8000 bytes or more. A larger wake-up
(a cleanup that failed hundreds of tasks) goes out as "wake everyone" instead."""

RECONNECT_SECONDS = (0.1, 0.5, 1.0, 2.0, 5.0)
"""The pauses before each new try after the listener lost its connection; the
last one repeats."""

PING_SECONDS = 15.0
"""How often an idle PostgreSQL listener checks that its connection still works."""


def listener_name() -> str:
    """The name the listener's connection shows (`application_name`, `CLIENT
    SETNAME`): `joblib-wake-<pid>`, so an operator (or a test) can find it."""
    return f"joblib-wake-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class Wake:
    """What one committed change means for the waiters of every process."""

    jobs: tuple[str, ...] = ()
    """Job full names, one per task that became claimable (a held claim each)."""
    tasks: tuple[str, ...] = ()
    """Ids of tasks that became terminal (their long-polls answer)."""
    workers: tuple[str, ...] = ()
    """Workers removed (their held claims answer at once)."""
    everyone: bool = False
    """Too much to list: every waiter re-checks."""
    origin: str = ""
    """The sending bus; a bus ignores its own messages."""

    def __bool__(self) -> bool:
        return bool(self.jobs or self.tasks or self.workers or self.everyone)

    def encode(self) -> str:
        """Compact JSON; "wake everyone" when the list would not fit a NOTIFY."""
        body: dict[str, Any] = {"o": self.origin}
        if self.everyone:
            body["all"] = True
        else:
            body.update(j=self.jobs, t=self.tasks, w=self.workers)
        text = json.dumps(body, separators=(",", ":"))
        if len(text.encode()) > MAX_PAYLOAD_BYTES:
            return json.dumps({"o": self.origin, "all": True}, separators=(",", ":"))
        return text

    @classmethod
    def decode(cls, text: str | bytes) -> Wake | None:
        """The message, or None for anything that is not one of ours."""
        try:
            body = json.loads(text)
            return cls(
                jobs=tuple(map(str, body.get("j", ()))),
                tasks=tuple(map(str, body.get("t", ()))),
                workers=tuple(map(str, body.get("w", ()))),
                everyone=bool(body.get("all", False)),
                origin=str(body["o"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


def wake_of(
    emissions: Iterable[Emission], removed_workers: Iterable[uuid.UUID]
) -> Wake:
    """The waiters a change concerns, from its emissions and removed workers.

    The same events `ClaimWaiters.notify` and `TaskWaiters.notify` act on in
    process: each `task_available` wakes one held claim of its job, each terminal
    task status its long-polls.
    """
    jobs: list[str] = []
    tasks: list[str] = []
    for emission in emissions:
        event = emission.event
        if isinstance(event, TaskAvailable):
            jobs.append(event.job_name)
        elif (
            isinstance(event, TaskStatusEvent)
            and is_terminal(event.status)
            and event.id not in tasks
        ):
            tasks.append(event.id)
    return Wake(
        jobs=tuple(jobs),
        tasks=tuple(tasks),
        workers=tuple(sorted(str(worker) for worker in removed_workers)),
    )


@dataclass(frozen=True, slots=True)
class Listening:
    """What a bus's listener calls: on each message, and on each (re)subscription."""

    received: Callable[[Wake], None]
    subscribed: Callable[[], None]


class WakeBus(ABC):
    """Carries `Wake` messages between server processes; one per `JobLib`."""

    name: ClassVar[str]

    def __init__(self) -> None:
        self.origin = uuid.uuid4().hex[:16]

    def is_own(self, wake: Wake) -> bool:
        """Whether this bus sent `wake` (its waiters were woken in-process)."""
        return wake.origin == self.origin

    async def send_in(self, session: AsyncSession, wake: Wake) -> bool:
        """Send `wake` inside the change's transaction; whether it was sent."""
        return False

    async def send_after(self, wake: Wake) -> bool:
        """Send `wake` after its change committed; whether it was sent."""
        return False

    @abstractmethod
    async def listen(self, listening: Listening) -> None:
        """Relay messages until cancelled, connecting again whenever needed."""

    async def aclose(self) -> None:  # noqa: B027 (most buses hold nothing more)
        """Close what the bus holds beyond its listener."""


class NoWakeBus(WakeBus):
    """One process only (or none to tell): waiters are woken in-process."""

    name = "off"

    async def listen(self, listening: Listening) -> None:
        """Nothing to listen to."""
        await anyio.sleep_forever()


class _Listener(WakeBus):
    """The reconnecting loop both real buses share."""

    async def listen(self, listening: Listening) -> None:
        """Subscribe, relay, and on a lost connection pause and subscribe again."""
        failures = 0

        def subscribed() -> None:
            nonlocal failures
            failures = 0  # the pauses start short again after each success
            listening.subscribed()

        relaying = Listening(listening.received, subscribed)
        while True:
            try:
                await self._listen_once(relaying)
            except Exception as exc:
                pause = RECONNECT_SECONDS[min(failures, len(RECONNECT_SECONDS) - 1)]
                failures += 1
                logger.warning(
                    "the %s wake bus lost its connection (%s); listening again in %g s",
                    self.name,
                    exc or type(exc).__name__,
                    pause,
                )
                await anyio.sleep(pause)

    @abstractmethod
    async def _listen_once(self, listening: Listening) -> None:
        """Listen on one connection until it fails (raises); never returns."""


_BUS_KEY = "joblib_wake_bus"
_SENT_KEY = "joblib_wake_sent"


def bind_wake_bus(session: AsyncSession, bus: WakeBus) -> None:
    """Let the operation run in `session` fold its NOTIFY into its own statement."""
    session.info[_BUS_KEY] = bus
    session.info.pop(_SENT_KEY, None)


def notice_in_statement(
    session: AsyncSession, wake: Wake
) -> tuple[str | None, str | None]:
    """The channel and message of a `pg_notify` that sends `wake` from a statement.

    (None, None) when nothing is to be sent that way: an empty `wake`, or a bus
    that is not PostgreSQL's (Redis publishes after the commit). A statement that
    did send it says so with `sent_in_statement`, and `JobLib` sends it no more.
    """
    bus = session.info.get(_BUS_KEY)
    if not wake or not isinstance(bus, PostgresWakeBus):
        return None, None
    return bus.channel, bus.stamped(wake).encode()


def sent_in_statement(session: AsyncSession, wake: Wake) -> None:
    """Record that a statement of `session` sent `wake` (see `notice_in_statement`)."""
    session.info[_SENT_KEY] = wake


def was_sent_in_statement(session: AsyncSession, wake: Wake) -> bool:
    """Whether a statement of `session` already sent exactly `wake`."""
    return bool(wake) and session.info.get(_SENT_KEY) == wake


class PostgresWakeBus(_Listener):
    """`NOTIFY` in the change's transaction; `LISTEN` on a dedicated connection."""

    name = "postgresql"

    def __init__(self, database: Database, channel: str = CHANNEL) -> None:
        super().__init__()
        if not database.backend.can_notify:
            raise ValueError("wake_bus=postgresql needs a PostgreSQL database")
        self.database = database
        self.channel = channel

    async def send_in(self, session: AsyncSession, wake: Wake) -> bool:
        """`pg_notify` in the open transaction: delivered when it commits."""
        message = self.stamped(wake).encode()
        await backend_of(session).notify(session, self.channel, message)
        return True

    async def send_after(self, wake: Wake) -> bool:
        """`pg_notify` on its own, for a change that committed by itself."""
        try:
            async with self.database.write_one() as session:
                return await self.send_in(session, wake)
        except Exception:
            # The change is committed and published here; the other processes'
            # re-check is the safety net for a wake-up lost with the database.
            logger.warning("sending a wake-up failed", exc_info=True)
            return False

    def stamped(self, wake: Wake) -> Wake:
        """`wake` as this bus sends it: with its origin."""
        return Wake(wake.jobs, wake.tasks, wake.workers, wake.everyone, self.origin)

    async def _listen_once(self, listening: Listening) -> None:
        lost = anyio.Event()
        failure: list[BaseException] = []

        def relay(_connection: Any, _pid: int, _channel: str, payload: str) -> None:
            wake = Wake.decode(payload)
            if wake is not None and not self.is_own(wake):
                listening.received(wake)

        def closed(_connection: Any) -> None:
            lost.set()

        connection = await self.database.backend.listen_connection(listener_name())
        try:
            connection.add_termination_listener(closed)
            await connection.add_listener(self.channel, relay)
            listening.subscribed()
            while not lost.is_set():
                with anyio.move_on_after(PING_SECONDS):
                    await lost.wait()
                if not lost.is_set():
                    # A connection cut without a word (a dead peer) shows here.
                    try:
                        with anyio.fail_after(PING_SECONDS):
                            await connection.fetchval("SELECT 1")
                    except Exception as exc:
                        failure.append(exc)
                        break
            raise ConnectionError(
                f"the LISTEN connection closed{f': {failure[0]}' if failure else ''}"
            )
        finally:
            connection.terminate()


class RedisWakeBus(_Listener):
    """`PUBLISH` after the commit; one subscription per process."""

    name = "redis"

    def __init__(self, url: str, *, channel: str = "joblib:wake") -> None:
        super().__init__()
        import redis.asyncio as aioredis

        self.url = url
        self.channel = channel
        # Short timeouts: a publish runs after every change that wakes someone,
        # and Redis down must cost a request a second at most, not a hang.
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_timeout=1, socket_connect_timeout=1
        )

    async def send_after(self, wake: Wake) -> bool:
        """`PUBLISH`; a failure is logged, never raised (the change is committed)."""
        message = Wake(wake.jobs, wake.tasks, wake.workers, wake.everyone, self.origin)
        try:
            await self._redis.publish(self.channel, message.encode())
        except Exception as exc:
            # Other processes' waiters see it at their next re-check.
            logger.warning("publishing a wake-up on Redis failed: %s", exc)
            return False
        return True

    async def _listen_once(self, listening: Listening) -> None:
        import redis.asyncio as aioredis

        # A client of its own: no socket timeout, since a subscription is quiet
        # for as long as nothing happens; health checks ping it instead.
        client = aioredis.Redis.from_url(
            self.url,
            client_name=listener_name(),
            socket_connect_timeout=5,
            health_check_interval=PING_SECONDS,
        )
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            while True:
                message = await pubsub.get_message(timeout=PING_SECONDS)
                if message is None:
                    continue
                if message.get("type") == "subscribe":
                    # Also after redis-py connected again and subscribed anew.
                    listening.subscribed()
                    continue
                if message.get("type") != "message":
                    continue
                wake = Wake.decode(message["data"])
                if wake is not None and not self.is_own(wake):
                    listening.received(wake)
        finally:
            with anyio.CancelScope(shield=True):
                await pubsub.aclose()
                await client.aclose()

    async def aclose(self) -> None:
        """Close the publishing connections."""
        await self._redis.aclose()


def choose_wake_bus(
    name: WakeBusName, database: Database, redis_url: str | None = None
) -> WakeBus:
    """The bus `name` (the `wake_bus` setting) asks for.

    `auto`: Redis when `redis_url` is given, else PostgreSQL's NOTIFY when the
    database can, else none (SQLite: one process, or re-checks only).
    """
    if name == "auto":
        if redis_url:
            name = "redis"
        elif database.backend.can_notify:
            name = "postgresql"
        else:
            name = "off"
    if name == "redis":
        if not redis_url:
            raise ValueError("wake_bus=redis needs a Redis URL (JOBLIB_REDIS_URL)")
        return RedisWakeBus(redis_url)
    if name == "postgresql":
        return PostgresWakeBus(database)
    return NoWakeBus()
