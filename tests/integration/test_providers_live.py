"""Providers end to end: a python-socketio worker answers reads over real sockets.

On the in-thread standalone server (both databases) a socket worker joins its
provider's room, gets `provider_request`, and uploads the answer over REST; its
socket's close removes its providers. With two `joblib-server serve` processes
sharing PostgreSQL and Redis, a read on A is served by a worker on B and shares
one dispatch with a read on B.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis

from joblib_protocol import request_hash
from tests.support.processes import server_process
from tests.support.rest import assert_problem, rest
from tests.support.servers import LiveServer, free_port
from tests.support.services import REDIS_URL, empty_postgres, require_redis
from tests.support.sockets import Peer, connect_peer, disconnect_handled
from tests.support.tokens import ADMIN, ALICE, BOB, TOKENS_JSON
from tests.support.waiting import eventually

ROOM = "live"


def register(client: httpx.Client, name: str = "local", **fields: Any) -> Any:
    body = {"category": "filesystem", "name": name, "schema": {}, **fields}
    answer = client.put(f"/rooms/{ROOM}/providers", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()


def serve(
    peer: Peer, api: str, provider: Any, answer: Callable[[dict[str, Any]], bytes]
) -> list[dict[str, Any]]:
    """Answer each `provider_request` the peer gets with `answer(request)`."""
    asked: list[dict[str, Any]] = []

    def on_request(data: dict[str, Any]) -> None:
        asked.append(data)
        peer.record("provider_request", data)
        with rest(api, ALICE) as client:
            client.post(
                f"/providers/{provider['id']}/results",
                content=answer(data),
                headers={"X-Request-Hash": data["request_id"]},
            )

    peer.sio.on("provider_request", on_request)
    return asked


def join(peer: Peer, provider: Any) -> Any:
    return peer.call(
        "join_provider_room",
        {"provider_name": provider["full_name"], "worker_id": provider["worker_id"]},
    )


def test_a_socket_worker_answers_reads(live_server: LiveServer) -> None:
    with rest(live_server.api, ALICE) as alice, rest(live_server.api, BOB) as bob:
        provider = register(alice, content_type="application/octet-stream")
        with connect_peer(live_server.url, token=ALICE) as worker:
            asked = serve(
                worker, live_server.api, provider, lambda r: r["params"].encode()
            )
            assert join(worker, provider)["ok"] is True
            url = f"/rooms/{ROOM}/providers/{provider['full_name']}"
            answer = bob.get(url, params={"path": "/data"})
            assert answer.status_code == 200, answer.text
            assert answer.content == b'{"path":"/data"}'
            assert answer.headers["content-type"] == "application/octet-stream"
            assert asked == [
                {
                    "request_id": request_hash({"path": "/data"}),
                    "provider_name": provider["full_name"],
                    "params": '{"path":"/data"}',
                }
            ]
            # Cached now: no second request.
            assert bob.get(url, params={"path": "/data"}).content == answer.content
            assert len(asked) == 1
            # Left: the next read reaches nobody.
            left = worker.call(
                "leave_provider_room",
                {
                    "provider_name": provider["full_name"],
                    "worker_id": provider["worker_id"],
                },
            )
            assert left == {"ok": True}
            late = bob.get(url, params={"path": "/x"}, headers={"Prefer": "wait=0.3"})
            assert_problem(late, 504, "provider-timeout")
            assert len(asked) == 1


def test_a_worker_error_reaches_the_reader(live_server: LiveServer) -> None:
    with rest(live_server.api, ALICE) as alice:
        provider = register(alice)
        with connect_peer(live_server.url, token=ALICE) as worker:

            def fail(data: dict[str, Any]) -> None:
                alice.post(
                    f"/providers/{provider['id']}/errors",
                    json={"request_hash": data["request_id"], "error": "disk on fire"},
                )

            worker.sio.on("provider_request", fail)
            assert join(worker, provider)["ok"] is True
            started = time.monotonic()
            answer = alice.get(
                f"/rooms/{ROOM}/providers/{provider['full_name']}",
                headers={"Prefer": "wait=10"},
            )
            body = assert_problem(answer, 502, "provider-failed")
            assert body["detail"] == "disk on fire"
            assert time.monotonic() - started < 5


def test_joining_is_for_the_providers_own_worker(live_server: LiveServer) -> None:
    with rest(live_server.api, ALICE) as alice, rest(live_server.api, BOB) as bob:
        provider = register(alice)
        other_worker = bob.post("/workers").json()["id"]
        with connect_peer(live_server.url, token=BOB) as intruder:
            refused = join(intruder, provider)
            assert refused["ok"] is False
            assert refused["error"]["status"] == 403
            not_served = intruder.call(
                "join_provider_room",
                {"provider_name": provider["full_name"], "worker_id": other_worker},
            )
            assert not_served["error"]["status"] == 403
            bad = intruder.call("join_provider_room", {"provider_name": "x"})
            assert bad["error"]["type"] == "/v1/problems/validation-error"
            unknown = intruder.call(
                "join_provider_room",
                {
                    "provider_name": provider["full_name"],
                    "worker_id": str(uuid.uuid4()),
                },
            )
            assert unknown["error"]["status"] == 404


def test_a_disconnect_removes_the_workers_providers(live_server: LiveServer) -> None:
    with rest(live_server.api, ALICE) as alice:
        provider = register(alice)
        register(alice, "second", worker_id=provider["worker_id"])
        with connect_peer(live_server.url, token=ADMIN, rooms=(ROOM,)) as observer:
            with connect_peer(live_server.url, token=ALICE) as worker:
                assert join(worker, provider)["ok"] is True
            eventually(lambda: disconnect_handled(live_server, worker))
            observer.wait_for(lambda e: e[0] == "providers_invalidate")
        assert alice.get(f"/rooms/{ROOM}/providers").json()["total"] == 0
        workers = [w["id"] for w in alice.get("/workers").json()["items"]]
        assert provider["worker_id"] not in workers


@pytest.mark.slow
def test_two_processes_share_one_dispatch_through_redis(postgres_url: str) -> None:
    require_redis()
    empty_postgres(postgres_url)
    env = {
        "JOBLIB_DATABASE_URL": postgres_url,
        "JOBLIB_REDIS_URL": REDIS_URL,
        "JOBLIB_TOKENS": TOKENS_JSON,
        "JOBLIB_SOCKETIO_PING_INTERVAL_SECONDS": "1",
        "JOBLIB_SOCKETIO_PING_TIMEOUT_SECONDS": "1",
    }
    listeners = redis.Redis.from_url(REDIS_URL)

    def subscribed() -> int:
        counts = dict(listeners.pubsub_numsub("joblib:provider:answers"))
        return int(counts.get(b"joblib:provider:answers", 0))

    with server_process(free_port(), env) as a, server_process(free_port(), env) as b:
        api_a, api_b = f"{a}/v1/joblib", f"{b}/v1/joblib"
        with rest(api_b, ALICE) as alice:
            provider = register(alice, content_type="text/plain")
        with connect_peer(b, token=ALICE) as worker:
            asked: list[dict[str, Any]] = []

            def on_request(data: dict[str, Any]) -> None:
                asked.append(data)

            worker.sio.on("provider_request", on_request)
            assert join(worker, provider)["ok"] is True
            url = f"/rooms/{ROOM}/providers/{provider['full_name']}"
            answers: dict[str, httpx.Response] = {}

            def read(name: str, api: str) -> None:
                with rest(api, BOB) as client:
                    answers[name] = client.get(
                        url, params={"frame": "7"}, headers={"Prefer": "wait=20"}
                    )

            on_a = threading.Thread(target=read, args=("a", api_a))
            on_a.start()
            eventually(lambda: asked, what="the worker on B to be asked (read on A)")
            on_b = threading.Thread(target=read, args=("b", api_b))
            on_b.start()
            # B's read listens for answers once it waits: both processes do now.
            eventually(lambda: subscribed() >= 2, what="B's read to wait")
            with rest(api_b, ALICE) as alice:
                done = alice.post(
                    f"/providers/{provider['id']}/results",
                    content=b"frame seven",
                    headers={"X-Request-Hash": asked[0]["request_id"]},
                )
                assert done.status_code == 204
            on_a.join(30)
            on_b.join(30)
        assert len(asked) == 1
        for name in ("a", "b"):
            assert answers[name].status_code == 200, answers[name].text
            assert answers[name].content == b"frame seven"
            assert answers[name].headers["content-type"].startswith("text/plain")
