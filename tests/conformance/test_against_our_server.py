"""The kit against our own server, in process, on SQLite and on PostgreSQL.

The whole kit takes 15-30 s per database, so it runs with the slow tests (CI runs
those in a step of its own), as the command against `joblib-server serve`
(test_cli.py); the default run takes a few checks of the kit's main areas.
"""

from __future__ import annotations

from joblib_conformance import Report, ServerTarget, run_server_checks
from tests.support.servers import LiveServer
from tests.support.tokens import ADMIN, ALICE, BOB

SMOKE = [
    "core.claim.fifo",
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
