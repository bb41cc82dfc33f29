"""Wake-ups across two `joblib-server` processes sharing one database.

Held claims and long-polls wait on B; the change that answers them is committed
through A. The re-check is 60 s, so an answer within seconds came through the
wake bus: PostgreSQL NOTIFY, or Redis pub/sub (on PostgreSQL and on a shared
SQLite file).
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.support import eventually
from tests.support.processes import ServerProcess, restartable_server, server_env
from tests.support.rest import rest
from tests.support.services import (
    PG_ADMIN_URL,
    REDIS_URL,
    empty_postgres,
    pg_exec,
    require_redis,
)
from tests.support.tokens import ADMIN, ALICE, BOB, bearer

# Two server processes per case: seconds of start-up.
pytestmark = pytest.mark.slow

RECHECK = 60
WOKEN_WITHIN = 5.0

CASES = {
    "postgresql-notify": ("postgresql", "postgresql"),
    "postgresql-redis": ("postgresql", "redis"),
    "sqlite-redis": ("sqlite", "redis"),
}


@dataclass
class Pair:
    a: ServerProcess
    b: ServerProcess
    bus: str


@pytest.fixture(scope="module", params=list(CASES))
def pair(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pair]:
    database, bus = CASES[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    if database == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        empty_postgres(url)
    else:
        url = f"sqlite:///{folder / 'joblib.db'}"
    settings: dict[str, object] = {
        "wake_bus": bus,
        "long_poll_recheck_seconds": RECHECK,
        "long_poll_max_wait_seconds": RECHECK,
    }
    if bus == "redis":
        require_redis()
        settings["redis_url"] = REDIS_URL
    env = server_env(url, **settings)
    with (
        restartable_server(env, folder / "a.log") as a,
        restartable_server(env, folder / "b.log") as b,
    ):
        yield Pair(a, b, bus)


def _metric(server: ServerProcess, name: str, labels: str = "") -> float:
    """One sample of the server's `/metrics` (0 when it is not there yet)."""
    answer = httpx.get(f"{server.url}/metrics", headers=bearer(ADMIN), timeout=10)
    answer.raise_for_status()
    pattern = rf"^{re.escape(name)}{re.escape(labels)} (\S+)$"
    found = re.search(pattern, answer.text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def _waiting(server: ServerProcess, kind: str) -> float:
    return _metric(server, "joblib_waiting_requests", f'{{kind="{kind}"}}')


class Waiting:
    """A request in a thread of its own: its answer, and when it came."""

    def __init__(self, call: Callable[[], httpx.Response]) -> None:
        self.answer: httpx.Response | None = None
        self.answered_at = 0.0
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], httpx.Response]) -> None:
        try:
            self.answer = call()
            self.answered_at = time.monotonic()
        except BaseException as exc:
            self._failure = exc

    def result(self) -> tuple[dict, float]:
        """The answer's body and when it came (waits for it)."""
        self._thread.join(RECHECK + 10)
        if self._failure is not None:
            raise self._failure
        assert self.answer is not None, "no answer"
        assert self.answer.status_code == 200, self.answer.text
        return self.answer.json(), self.answered_at


def _job(client: httpx.Client, room: str, name: str) -> tuple[str, str]:
    job = client.put(
        f"/rooms/{room}/jobs",
        json={"category": "modifiers", "name": name, "schema": {}},
    ).json()
    return str(job["worker_id"]), str(job["full_name"])


def _submit(client: httpx.Client, room: str, job_name: str) -> dict:
    answer = client.post(f"/rooms/{room}/tasks/{job_name}", json={"payload": {}})
    assert answer.status_code == 202, answer.text
    task: dict = answer.json()
    return task


def _claim_held_on_b(pair: Pair, worker_id: str, job_name: str) -> dict:
    """Hold a claim on B, submit through A once it waits; the claim's answer."""
    room = job_name.split(":")[0]
    with rest(pair.b.api, ALICE) as on_b, rest(pair.a.api, BOB) as on_a:
        held = _waiting(pair.b, "claim")
        claim = Waiting(
            lambda: on_b.post(
                "/tasks/claim",
                json={"worker_id": worker_id, "start": True},
                headers={"Prefer": f"wait={RECHECK}"},
            )
        )
        eventually(lambda: _waiting(pair.b, "claim") > held, what="a claim held on B")
        submitted_at = time.monotonic()
        task = _submit(on_a, room, job_name)
        claimed, answered_at = claim.result()
    assert claimed["task"]["id"] == task["id"]
    took = answered_at - submitted_at
    assert took < WOKEN_WITHIN, f"answered {took:.2f} s after the submit"
    return claimed


def test_a_submit_on_a_answers_a_claim_held_on_b(pair: Pair) -> None:
    room = f"room-{uuid.uuid4().hex[:8]}"
    with rest(pair.b.api, ALICE) as on_b:
        worker_id, job_name = _job(on_b, room, "Held")
    _claim_held_on_b(pair, worker_id, job_name)
    assert _metric(pair.b, "joblib_wake_bus_messages_total", '{direction="received"}')
    assert _metric(pair.a, "joblib_wake_bus_messages_total", '{direction="sent"}')


def test_a_completion_on_a_answers_a_long_poll_on_b(pair: Pair) -> None:
    room = f"room-{uuid.uuid4().hex[:8]}"
    with rest(pair.a.api, ALICE) as on_a, rest(pair.b.api, BOB) as on_b:
        worker_id, job_name = _job(on_a, room, "Polled")
        task = _submit(on_b, room, job_name)
        claimed = on_a.post(
            "/tasks/claim", json={"worker_id": worker_id, "start": True}
        )
        assert claimed.json()["task"]["id"] == task["id"]
        polls = _waiting(pair.b, "long_poll")
        poll = Waiting(
            lambda: on_b.get(
                f"/tasks/{task['id']}", headers={"Prefer": f"wait={RECHECK}"}
            )
        )
        eventually(
            lambda: _waiting(pair.b, "long_poll") > polls, what="a long-poll on B"
        )
        completed_at = time.monotonic()
        done = on_a.patch(f"/tasks/{task['id']}", json={"status": "completed"})
        assert done.status_code == 200, done.text
        seen, answered_at = poll.result()
    assert seen["status"] == "completed"
    took = answered_at - completed_at
    assert took < WOKEN_WITHIN, f"answered {took:.2f} s after the completion"


def _cut_listener(pair: Pair) -> None:
    """Terminate B's wake bus connection from the server side."""
    assert pair.b.process is not None
    name = f"joblib-wake-{pair.b.process.pid}"
    if pair.bus == "postgresql":
        import asyncio

        asyncio.run(
            pg_exec(
                PG_ADMIN_URL,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE application_name = '{name}'",
            )
        )
        return
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        killed = 0
        for info in client.client_list():
            if info.get("name") == name:
                killed += int(client.client_kill_filter(_id=info["id"]))
        assert killed, f"no Redis connection named {name}"
    finally:
        client.close()


def test_a_listener_cut_off_listens_again_and_a_later_submit_still_wakes(
    pair: Pair,
) -> None:
    room = f"room-{uuid.uuid4().hex[:8]}"
    with rest(pair.b.api, ALICE) as on_b:
        worker_id, job_name = _job(on_b, room, "AfterCut")
    subscriptions = "joblib_wake_bus_subscriptions_total"
    before = _metric(pair.b, subscriptions)
    assert before >= 1
    _cut_listener(pair)
    eventually(
        lambda: _metric(pair.b, subscriptions) > before,
        timeout=15,
        what="B's listener to subscribe again",
    )
    _claim_held_on_b(pair, worker_id, job_name)
    assert "Traceback" not in pair.b.log_tail(200)
