"""Providers end to end: a worker serves reads over a real socket, readers get bytes.

The worker is `JobManager.connect` on a live server (its socket delivers
`provider_request`); readers are REST-only managers calling `read()`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx
import pytest
from pydantic import field_validator

from joblib_client import (
    InvalidPayloadError,
    JobManager,
    Provider,
    ProviderFailedError,
    ProviderNotFoundError,
    ProviderResult,
    ProviderTimeoutError,
    SocketClient,
)
from joblib_client.provider import check_provider
from joblib_server import Settings
from tests.client.conftest import ManagerFactory, in_thread
from tests.integration.test_examples import readme_block
from tests.support.servers import make_settings
from tests.support.tokens import ADMIN

ROOM = "room1"
PROMPT = 5.0
"""A read a worker answers, or fails, comes back well within this."""

EVERY_BYTE = bytes(range(256)) * 4


@dataclass
class Frames:
    """A handler: frames by number, and how often each was read."""

    frames: dict[int, dict[str, Any]] = field(default_factory=dict)
    calls: list[int] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)
    entered: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.gate.set()  # open unless a test closes it

    def get(self, index: int) -> dict[str, Any]:
        with self.lock:
            self.calls.append(index)
        self.entered.set()
        assert self.gate.wait(30), "the test never opened the gate"
        return self.frames[index]


class FrameRead(Provider):
    """A JSON provider: one frame of the handler's."""

    category: ClassVar[str] = "frames"

    index: int

    def read(self, handler: Frames) -> dict[str, Any]:
        return handler.get(self.index)


class Thumbnail(Provider):
    """A binary provider: `size` bytes that hold every byte value."""

    category: ClassVar[str] = "thumbnails"
    content_type: ClassVar[str] = "image/png"

    size: int = len(EVERY_BYTE)

    def read(self, handler: Any) -> bytes:
        return EVERY_BYTE[: self.size]


class Broken(Provider):
    """A provider whose read always raises."""

    category: ClassVar[str] = "frames"

    index: int = 0

    def read(self, handler: Any) -> Any:
        raise LookupError(f"no frame {self.index}")


@pytest.fixture
def settings(request: pytest.FixtureRequest) -> Settings:
    """The suite's test settings, or those a test passes (`indirect=True`)."""
    given: Settings | None = getattr(request, "param", None)
    return given if given is not None else make_settings()


@pytest.fixture
def worker(make_live_manager: ManagerFactory) -> JobManager:
    """A socket-connected manager that serves providers."""
    return make_live_manager(ADMIN)


@pytest.fixture
def reader(make_live_manager: ManagerFactory) -> JobManager:
    """A REST-only manager that reads."""
    return make_live_manager(ADMIN, socket=False)


@pytest.fixture
def frames() -> Iterator[Frames]:
    handler = Frames(frames={i: {"index": i, "energy": -1.5 * i} for i in range(50)})
    yield handler
    handler.gate.set()  # never leave a read thread waiting


def socket_of(manager: JobManager) -> SocketClient:
    assert isinstance(manager.tsio, SocketClient)
    return manager.tsio


def test_binary_results_arrive_byte_for_byte(
    worker: JobManager, reader: JobManager
) -> None:
    name = worker.register_provider(Thumbnail, name="png", room=ROOM)

    result = reader.read(name, room=ROOM, wait=PROMPT)

    assert name == f"{ROOM}:thumbnails:png"
    assert isinstance(result, ProviderResult)
    assert result.content == EVERY_BYTE
    assert result.content_type.startswith("image/png")
    # the read is cached: a second one needs no worker
    assert reader.read(name, room=ROOM, size=7).content == EVERY_BYTE[:7]


def test_json_values_and_typed_parameters(
    worker: JobManager, reader: JobManager, frames: Frames
) -> None:
    name = worker.register_provider(FrameRead, handler=frames, room=ROOM)

    result = reader.read(name, room=ROOM, wait=PROMPT, index=3)

    assert name == f"{ROOM}:frames:FrameRead"
    assert result.content_type.startswith("application/json")
    assert result.json() == {"index": 3, "energy": -4.5}
    assert frames.calls == [3]  # "3" from the query became the int 3


class Pick(Provider):
    """Parameters of several types, as a reader's query carries them."""

    category: ClassVar[str] = "frames"

    ids: list[int]
    label: str | None = None
    scale: float = 1.0
    flag: bool = False

    def read(self, handler: Any) -> dict[str, Any]:
        return self.model_dump()


def test_parameters_of_every_json_type(worker: JobManager, reader: JobManager) -> None:
    name = worker.register_provider(Pick, room=ROOM)

    result = reader.read(
        name, room=ROOM, wait=PROMPT, ids=[1, 2], label="two", scale=0.5, flag=True
    )

    assert result.json() == {"ids": [1, 2], "label": "two", "scale": 0.5, "flag": True}


def test_a_global_provider_is_read_from_any_room(
    worker: JobManager, reader: JobManager, frames: Frames
) -> None:
    name = worker.register_provider(FrameRead, name="global", handler=frames)

    assert name == "@global:frames:global"
    assert reader.read(name, room="elsewhere", index=1).json()["index"] == 1


def test_handlers_maps_full_names_to_handlers(
    worker: JobManager, frames: Frames
) -> None:
    thumbnails = object()
    one = worker.register_provider(FrameRead, handler=frames, room=ROOM)
    two = worker.register_provider(Thumbnail, handler=thumbnails, room=ROOM)

    assert worker.handlers == {one: frames, two: thumbnails}


def test_a_raising_read_fails_every_reader_at_once(
    worker: JobManager, reader: JobManager
) -> None:
    name = worker.register_provider(Broken, room=ROOM)
    started = time.monotonic()

    with pytest.raises(ProviderFailedError) as caught:
        reader.read(name, room=ROOM, wait=20, index=7)

    assert time.monotonic() - started < PROMPT  # not the 20 s wait
    error = caught.value
    assert error.status == 502
    assert error.type == "/v1/problems/provider-failed"
    assert "LookupError: no frame 7" in (error.detail or "")
    assert error.provider == name
    assert error.params == {"index": "7"}
    assert f"{ROOM}:frames:Broken" in str(error)


def test_parameters_off_the_schema_are_refused_before_any_worker(
    worker: JobManager, reader: JobManager, frames: Frames
) -> None:
    name = worker.register_provider(FrameRead, handler=frames, room=ROOM)

    with pytest.raises(InvalidPayloadError) as caught:
        reader.read(name, room=ROOM, wait=20, index="seven")

    assert caught.value.status == 422
    assert frames.calls == []


class EvenFrame(FrameRead):
    """A check the JSON Schema cannot say: only the worker's model refuses."""

    @field_validator("index")
    @classmethod
    def _even(cls, index: int) -> int:
        if index % 2:
            raise ValueError("odd frames are not stored")
        return index


def test_parameters_the_model_refuses_fail_the_read(
    worker: JobManager, reader: JobManager, frames: Frames
) -> None:
    name = worker.register_provider(EvenFrame, handler=frames, room=ROOM)

    with pytest.raises(ProviderFailedError) as caught:
        reader.read(name, room=ROOM, wait=20, index=3)

    assert "odd frames are not stored" in (caught.value.detail or "")
    assert frames.calls == []
    assert reader.read(name, room=ROOM, wait=PROMPT, index=2).json()["index"] == 2


def test_a_read_nobody_answers_in_time_is_a_timeout(
    worker: JobManager, reader: JobManager, frames: Frames
) -> None:
    name = worker.register_provider(FrameRead, handler=frames, room=ROOM)
    frames.gate.clear()

    with pytest.raises(ProviderTimeoutError) as caught:
        reader.read(name, room=ROOM, wait=1, index=4)

    assert caught.value.status == 504
    assert caught.value.provider == name
    assert caught.value.params == {"index": "4"}
    # The worker answers late: the answer is cached for the next read.
    frames.gate.set()
    assert reader.read(name, room=ROOM, wait=PROMPT, index=4).json()["index"] == 4
    assert frames.calls == [4]


def test_concurrent_identical_reads_are_served_by_one_read(
    worker: JobManager, make_live_manager: ManagerFactory, frames: Frames
) -> None:
    name = worker.register_provider(FrameRead, handler=frames, room=ROOM)
    readers = [make_live_manager(ADMIN, socket=False) for _ in range(8)]
    sent = threading.Semaphore(0)

    def count(request: httpx.Request) -> None:
        if "/providers/" in request.url.path:
            sent.release()

    for manager in readers:
        manager.api.http.event_hooks["request"].append(count)
    frames.gate.clear()  # the first read holds until every reader has asked

    def reading(manager: JobManager) -> Callable[[], ProviderResult]:
        return lambda: manager.read(name, room=ROOM, wait=10, index=9)

    threads = [in_thread(reading(manager)) for manager in readers]
    for _ in readers:
        assert sent.acquire(timeout=PROMPT)
    assert frames.entered.wait(PROMPT)
    frames.gate.set()
    for thread, _ in threads:
        thread.join(PROMPT * 2)

    results = [outcome[0] for _, outcome in threads]
    assert all(isinstance(r, ProviderResult) for r in results), results
    assert {r.content for r in results} == {b'{"index":9,"energy":-13.5}'}
    assert frames.calls == [9]


def test_unregister_removes_the_provider(
    worker: JobManager, reader: JobManager, frames: Frames
) -> None:
    name = worker.register_provider(FrameRead, handler=frames, room=ROOM)
    reader.read(name, room=ROOM, wait=PROMPT, index=1)

    worker.unregister_provider(name)

    assert name not in worker.handlers
    with pytest.raises(ProviderNotFoundError):
        reader.read(name, room=ROOM, index=2)
    with pytest.raises(KeyError):
        worker.unregister_provider(name)


def test_an_unknown_provider_is_not_found(reader: JobManager) -> None:
    with pytest.raises(ProviderNotFoundError) as caught:
        reader.read(f"{ROOM}:frames:Nobody", room=ROOM, index=1)
    assert caught.value.status == 404


def drop_socket(manager: JobManager) -> None:
    """Cut the manager's socket under python-socketio's feet; wait for it to return."""
    sock = socket_of(manager)
    # Handlers run in the order they were added: the manager's rejoin first.
    rejoined = threading.Event()
    sock.on("connect", rejoined.set)
    dropped = sock.client.eio.ws
    dropped.abort()
    try:
        assert rejoined.wait(10), "the socket did not reconnect"
    finally:
        dropped.shutdown()


def test_a_worker_the_server_dropped_registers_its_providers_again(
    worker: JobManager, reader: JobManager, frames: Frames
) -> None:
    # No grace (the default): the socket's drop removes the worker and its
    # providers at once; the manager comes back as a new worker.
    name = worker.register_provider(FrameRead, handler=frames, room=ROOM)
    first = worker.worker_id

    drop_socket(worker)

    # A read the cache cannot answer: it must reach the worker's new connection.
    assert reader.read(name, room=ROOM, wait=PROMPT, index=11).json()["index"] == 11
    assert worker.worker_id not in (None, first)
    assert worker.handlers == {name: frames}


@pytest.mark.parametrize(
    "settings", [make_settings(disconnect_grace_seconds=30)], indirect=True
)
def test_a_reconnected_socket_joins_the_provider_room_again(
    worker: JobManager, reader: JobManager, frames: Frames
) -> None:
    # With a grace time the server keeps the worker: it rejoins under its id.
    name = worker.register_provider(FrameRead, handler=frames, room=ROOM)
    first = worker.worker_id

    drop_socket(worker)

    assert reader.read(name, room=ROOM, wait=PROMPT, index=12).json()["index"] == 12
    assert worker.worker_id == first


def test_disconnect_removes_the_providers_and_close_ends_the_pool(
    worker: JobManager, reader: JobManager, frames: Frames
) -> None:
    name = worker.register_provider(FrameRead, handler=frames, room=ROOM)
    reader.read(name, room=ROOM, wait=PROMPT, index=5)  # the pool has threads now

    worker.disconnect()

    assert worker.handlers == {}
    with pytest.raises(ProviderNotFoundError):
        reader.read(name, room=ROOM, index=6)
    worker.close()
    pool = [t for t in threading.enumerate() if t.name.startswith("joblib provider")]
    assert not pool


def test_a_provider_class_needs_a_category() -> None:
    class NoCategory(Provider):
        path: str = "/"

    with pytest.raises(TypeError, match="category"):
        check_provider(NoCategory)
    with pytest.raises(TypeError, match="not a subclass of Provider"):
        check_provider(dict)
    assert check_provider(FrameRead) is FrameRead
    assert FrameRead.content_type == "application/json"


def test_a_manager_without_a_socket_registers_but_says_no_read_reaches_it(
    make_manager: ManagerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    manager = make_manager(ADMIN, heartbeat_interval=None)

    name = manager.register_provider(FrameRead, name="md", room=ROOM)

    assert name == f"{ROOM}:frames:md"
    assert manager.worker_id is not None  # registering made the worker
    assert "no read reaches this manager" in caplog.text
    listed = manager.api.http.get(
        f"{manager.api.base_url}/v1/joblib/rooms/{ROOM}/providers",
        headers=manager.api.get_headers(),
    )
    assert [p["full_name"] for p in listed.json()["items"]] == [name]
    assert listed.json()["items"][0]["worker_id"] == str(manager.worker_id)


def test_the_readme_provider_serves_reads(
    worker: JobManager, reader: JobManager
) -> None:
    namespace: dict[str, Any] = {}
    exec(readme_block("providers-example"), namespace)  # our own README
    frames = [{"index": i} for i in range(5)]

    name = worker.register_provider(
        namespace["Frame"], name="md", handler=frames, room="room_1"
    )

    assert name == "room_1:frames:md"
    assert worker.handlers == {name: frames}
    result = reader.read(name, room="room_1", index=3, wait=10)
    assert (result.content_type, result.json()) == ("application/json", {"index": 3})
