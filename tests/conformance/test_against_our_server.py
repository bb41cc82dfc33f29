"""The kit against our own server, in process, on SQLite and on PostgreSQL.

The whole kit takes 15-30 s per database, so it runs with the slow tests (CI runs
those in a step of its own), as the command against `joblib-server serve`
(test_cli.py) and here against a server configured for every optional check; the
default run takes a few checks of the kit's main areas, the checks of tasks as
calls (a few seconds: two wait for a 1 s time limit), and the quick checks that
need the server's configuration.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from joblib_conformance import Report, ServerTarget, Status, run_server_checks
from joblib_server import Action, StandaloneSettings, TokenAuth, create_app
from joblib_server.auth import Identity
from tests.support.servers import LiveServer, make_settings, serve_in_thread
from tests.support.tokens import ADMIN, ALICE, BOB, TOKENS

SMOKE = [
    "core.claim.fifo",
    "core.events.after-commit",
    "core.disconnect.socket-drop",
    "ours.tasks.fencing",
    "ours.errors.bad-input",
]

CALLS = ["ours.payloads", "ours.limits", "ours.cancel", "results", "progress"]
"""The checks of tasks as calls: checked inputs, time limits, cancel notices,
results and progress."""

LOCKED_ROOM = "cf-locked"

MAX_RESULT_BYTES = 4096
"""The configured server's result limit (small, so the 413 check sends little)."""

CONFIGURED = [
    "ours.jobs.owner-only",
    "ours.pagination.offset-cap",
    "ours.tasks.idempotency-key",
    "ours.errors.request-timeout",
    "ours.errors.room-locked",
    "results.too-large",
]
"""The quick checks that need to know the server's settings and policy."""

OPTIONAL = [
    "ours.errors.request-timeout",
    "ours.errors.room-locked",
    "results.too-large",
]
"""Skipped unless the operator gives what they need."""

LATER = ["providers.provider-routes"]


class LocksOneRoom:
    """Open rooms, but one of them locked for writes (a room being edited)."""

    async def allows(self, identity: Identity, room_id: str, action: Action) -> bool:
        return True

    async def locked(self, identity: Identity, room_id: str) -> bool:
        return room_id == LOCKED_ROOM


@pytest.fixture
def configured_server(database_url: str) -> Iterator[ServerTarget]:
    """Our standalone app with short time limits, a lower offset cap and a locked
    room, and the target that tells the kit so."""
    settings = StandaloneSettings(
        database_url=database_url,
        socketio_ping_interval_seconds=1,
        socketio_ping_timeout_seconds=1,
        joblib=make_settings(
            body_timeout_seconds=1,
            heartbeat_task_margin_seconds=1,
            max_list_offset=200,
            max_result_bytes=MAX_RESULT_BYTES,
        ),
    )
    app = create_app(settings, TokenAuth(TOKENS), policy=LocksOneRoom())
    with serve_in_thread(app) as server:
        yield ServerTarget(
            server.url,
            ADMIN,
            ALICE,
            BOB,
            max_list_offset=200,
            heartbeat_task_margin=1,
            body_timeout=1,
            locked_room=LOCKED_ROOM,
            max_result_bytes=MAX_RESULT_BYTES,
        )


def target(server: LiveServer) -> ServerTarget:
    return ServerTarget(server.url, ADMIN, ALICE, BOB)


def failures(report: Report) -> str:
    return "\n".join(r.line() for r in report.results if r.failed)


def test_one_check_of_each_area_passes(live_server: LiveServer) -> None:
    report = run_server_checks(target(live_server), only=SMOKE)
    assert [r.id for r in report.results] == SMOKE
    assert report.failed == [], failures(report)


@pytest.mark.slow  # over ~5 s
def test_the_checks_of_tasks_as_calls_pass(live_server: LiveServer) -> None:
    report = run_server_checks(target(live_server), only=CALLS)
    assert report.failed == [], failures(report)
    assert report.ids(Status.SKIP) == ["results.too-large"]
    assert {r.group for r in report.results} == {"ours", "results", "progress"}


def test_the_checks_of_a_configured_server_pass(
    configured_server: ServerTarget,
) -> None:
    report = run_server_checks(configured_server, only=CONFIGURED)
    assert report.ids(Status.PASS) == CONFIGURED, failures(report)


def test_without_their_options_the_optional_checks_skip_and_say_why(
    configured_server: ServerTarget,
) -> None:
    bare = replace(
        configured_server, body_timeout=None, locked_room=None, max_result_bytes=None
    )
    report = run_server_checks(bare, only=OPTIONAL)
    assert report.ids(Status.SKIP) == OPTIONAL
    reasons = [r.got or "" for r in report.results]
    assert "--body-timeout" in reasons[0]
    assert "--locked-room" in reasons[1]
    assert "--max-result-bytes" in reasons[2]
    assert report.ok, "a skipped check fails nothing"


@pytest.mark.slow
def test_the_whole_kit_passes_on_a_configured_server(
    configured_server: ServerTarget,
) -> None:
    report = run_server_checks(configured_server)
    assert report.failed == [], failures(report)
    assert report.ids(Status.SKIP) == LATER
    assert report.ok
