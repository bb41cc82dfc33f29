"""The kit can fail: against servers broken on purpose, exactly the right checks do.

Each server is ours with one flaw (see `broken.py`). The default run covers the
checks near each flaw; the slow run covers the whole kit (for the flaw that slows
every write down, every check that reads events), so a flaw that tripped an
unrelated check would show that the checks are not independent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from joblib_conformance import Report, run_server_checks
from tests.conformance.broken import (
    Flaw,
    answers_500_on_bad_input,
    broken_server,
    emits_before_commit,
    forgets_idempotency_keys,
    lets_anyone_connect,
    never_cleans_up,
    never_tells_workers,
)

FLAWS: dict[str, tuple[Flaw, list[str]]] = {
    "emits-before-commit": (emits_before_commit, ["core.events.after-commit"]),
    "500-on-bad-input": (
        answers_500_on_bad_input,
        [
            "ours.pagination.offset-cap",
            "ours.errors.bad-input",
            "ours.payloads.invalid-payload",
            "ours.payloads.invalid-schema",
            "results.completed-only",
            "progress.report",
        ],
    ),
    "never-cleans-up": (
        never_cleans_up,
        [
            "core.disconnect.socket-drop",
            "ours.disconnect.error-code",
            "ours.disconnect.grace-expires",
        ],
    ),
    "lets-anyone-connect": (
        lets_anyone_connect,
        ["core.socket.auth", "ours.socket.auth-payload"],
    ),
    "forgets-idempotency-keys": (
        forgets_idempotency_keys,
        ["ours.tasks.idempotency-key"],
    ),
    "never-tells-workers": (
        never_tells_workers,
        ["ours.limits.deadline", "ours.cancel.notice"],
    ),
}

NEAR = {
    "emits-before-commit": ["core.events.after-commit", "core.events.task-status"],
    "500-on-bad-input": [
        "ours.errors",
        "core.pagination",
        "ours.pagination",
        "ours.payloads",
        "results",
        "progress.report",
    ],
    "never-cleans-up": ["core.disconnect", "ours.disconnect"],
    "lets-anyone-connect": ["core.socket", "ours.socket.auth-payload"],
    "forgets-idempotency-keys": ["core.tasks.submit", "ours.tasks"],
    "never-tells-workers": ["ours.cancel", "ours.limits", "core.events.task-status"],
}

EVERYWHERE = {
    # Every write of this server takes `EARLY_BY` longer: the whole kit would
    # take minutes, so it gets every check that watches events.
    "emits-before-commit": ["core.events", "core.disconnect", "ours.claim.start"],
}


def failed(report: Report) -> list[str]:
    for result in report.results:
        print(result.line())
    return report.failed


@pytest.mark.slow  # over ~5 s
@pytest.mark.parametrize("name", list(FLAWS))
def test_the_checks_near_a_flaw_fail_exactly_there(name: str, tmp_path: Path) -> None:
    flaw, expected = FLAWS[name]
    with broken_server(flaw, tmp_path) as target:
        report = run_server_checks(target, only=NEAR[name])
    assert failed(report) == expected
    assert not report.ok


@pytest.mark.slow  # over ~5 s
def test_the_same_checks_pass_on_the_unbroken_server(tmp_path: Path) -> None:
    near = list(dict.fromkeys(check for checks in NEAR.values() for check in checks))
    with broken_server(None, tmp_path) as target:
        report = run_server_checks(target, only=near)
    assert failed(report) == []
    assert report.ok


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FLAWS))
def test_the_whole_kit_fails_only_at_the_flaw(name: str, tmp_path: Path) -> None:
    flaw, expected = FLAWS[name]
    with broken_server(flaw, tmp_path) as target:
        report = run_server_checks(target, only=EVERYWHERE.get(name))
    assert failed(report) == expected
