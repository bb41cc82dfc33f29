"""The kit against our own server, in process, on SQLite and on PostgreSQL.

The whole kit takes 15-30 s per database, so it runs with the slow tests (CI runs
those in a step of its own); the default run takes one check of each area.
"""

from __future__ import annotations

import pytest

from joblib_conformance import Report, ServerTarget, Status, run_server_checks
from tests.support.servers import LiveServer
from tests.support.tokens import ADMIN, ALICE, BOB

SMOKE = [
    "core.claim.fifo",
    "core.claim.exactly-once",
    "core.events.after-commit",
    "core.disconnect.socket-drop",
    "ours.tasks.fencing",
    "ours.errors.bad-input",
]


def target(server: LiveServer) -> ServerTarget:
    return ServerTarget(server.url, ADMIN, ALICE, BOB)


def failures(report: Report) -> str:
    return "\n".join(r.line() for r in report.results if r.failed)


def test_one_check_of_each_area_passes(live_server: LiveServer) -> None:
    report = run_server_checks(target(live_server), only=SMOKE)
    assert [r.id for r in report.results] == SMOKE
    assert report.failed == [], failures(report)


@pytest.mark.slow
def test_every_check_passes(live_server: LiveServer) -> None:
    report = run_server_checks(target(live_server))
    print("\n".join(r.line() for r in report.results))
    assert report.failed == [], failures(report)
    assert report.ok
    assert report.ids(Status.SKIP) == [
        "results.task-result",
        "progress.task-progress",
        "providers.provider-routes",
    ]
