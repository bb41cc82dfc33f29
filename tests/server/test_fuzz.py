"""Schemathesis fuzzes every operation of the OpenAPI document the server serves.

For each operation Hypothesis draws requests from the document, valid ones and
ones the document forbids (negative mode), and sends them to the standalone app
under uvicorn, on each database, as alice (or with the bad tokens Schemathesis
tries itself). Each answer must be no 5xx, carry a documented status code and
content type, and match the documented schema of its body and headers. A few rows
are made first (alice's job and tasks, bob's worker), and the path parameters and
`worker_id`s drawn are sometimes those rows' ids, so that the requests reach past
the 404s into the operations, and into the 403s of another's rows.

The examples are bounded and derandomized: the same requests on every run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from joblib_server import Settings
from joblib_server.openapi import openapi_document
from tests.support.servers import LiveServer, make_settings
from tests.support.tokens import ALICE, BOB, bearer

# 15 operations x 2 databases x this many drawn requests, plus the examples and
# boundary values Schemathesis adds by itself: about 30 s on the 2-core machine.
EXAMPLES = 25

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

ROOM = "fuzz"

schema = schemathesis.openapi.from_dict(openapi_document(Settings()))


def _ok(answer: httpx.Response) -> dict[str, Any]:
    assert answer.is_success, answer.text
    body: dict[str, Any] = answer.json()
    return body


@dataclass
class Known:
    """Ids of rows that exist, for the fuzzer to use now and then."""

    values: dict[str, list[str]] = field(default_factory=dict)

    def fill(self, api: str) -> None:
        """Alice's job with a claimed, a running and a pending task; bob's worker."""
        with (
            httpx.Client(base_url=api, headers=bearer(ALICE), timeout=10) as alice,
            httpx.Client(base_url=api, headers=bearer(BOB), timeout=10) as bob,
        ):
            job = _ok(
                alice.put(
                    f"/rooms/{ROOM}/jobs",
                    json={"category": "modifiers", "name": "Fuzz", "schema": {}},
                )
            )
            worker_id, name = str(job["worker_id"]), str(job["full_name"])
            tasks = [
                _ok(alice.post(f"/rooms/{ROOM}/tasks/{name}", json={}))["id"]
                for _ in range(3)
            ]
            _ok(alice.post("/tasks/claim", json={"worker_id": worker_id}))
            started = {"worker_id": worker_id, "start": True}
            _ok(alice.post("/tasks/claim", json=started))
            bobs = _ok(bob.post("/workers"))["id"]
        self.values = {
            "room_id": [ROOM, "@global"],
            "full_name": [name, "@global:modifiers:Missing"],
            "worker_id": [worker_id, str(bobs)],
            "task_id": [str(task) for task in tasks],
        }

    def clear(self) -> None:
        self.values = {}


KNOWN = Known()


@schema.hook
def flatmap_path_parameters(
    context: Any, path_parameters: dict[str, Any]
) -> st.SearchStrategy[dict[str, Any]]:
    """Keep a drawn path parameter, or put a known row's id in its place."""
    if not path_parameters:
        return st.just(path_parameters)
    return st.fixed_dictionaries(
        {
            name: st.sampled_from([value, *KNOWN.values.get(name, [])])
            for name, value in path_parameters.items()
        }
    )


@schema.hook
def flatmap_body(context: Any, body: Any) -> st.SearchStrategy[Any]:
    """Keep a drawn body, or put known values in: a worker's id, a category."""
    if not isinstance(body, dict):
        return st.just(body)
    choices = [body]
    if "worker_id" in body:
        choices += [{**body, "worker_id": w} for w in KNOWN.values.get("worker_id", [])]
    if "category" in body:
        choices.append({**body, "category": "modifiers"})
    return st.sampled_from(choices)


@pytest.fixture
def settings() -> Settings:
    """Held claims and long-polls give up within 0.2 s: `Prefer: wait=30` is drawn."""
    return make_settings(long_poll_max_wait_seconds=0.2)


@pytest.fixture
def fuzzed(live_server: LiveServer) -> Iterator[LiveServer]:
    """The live server, with a few rows whose ids the fuzzer may use."""
    served = httpx.get(f"{live_server.api}/openapi.json", headers=bearer(ALICE))
    assert served.json() == schema.raw_schema, "the server serves another document"
    KNOWN.fill(live_server.api)
    try:
        yield live_server
    finally:
        KNOWN.clear()


@pytest.mark.slow
@schema.parametrize()
@hypothesis.settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_answers_are_documented_and_never_5xx(case: Any, fuzzed: LiveServer) -> None:
    # A token the case brings itself (a bad one, to try the 401) wins over ours.
    response = case.call(base_url=fuzzed.api, headers=bearer(ALICE), timeout=10)
    case.validate_response(response, checks=CHECKS)


def test_a_newline_in_a_path_reaches_the_routes(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.api, headers=bearer(ALICE)) as client:
        for room in ("a%0Db", "a%0Ab"):
            answer = client.get(f"/rooms/{room}/jobs")
            assert answer.status_code == 400, (room, answer.text)
            assert answer.json()["type"] == "/v1/problems/invalid-room-id"
