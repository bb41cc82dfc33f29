"""The `joblib-conformance` command: its lines, its JSON, its exit codes; against
`joblib-server serve` on both databases, and judging the README's worker."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from joblib_conformance.cli import main
from tests.conformance.broken import answers_500_on_bad_input, broken_server
from tests.support.processes import server_env, server_process
from tests.support.servers import LiveServer, free_port
from tests.support.tokens import ADMIN, ALICE, BOB

ROOT = Path(__file__).resolve().parents[2]
TOKENS = ["--admin-token", ADMIN, "--user-token", ALICE, "--other-user-token", BOB]


def test_one_line_per_check_and_a_summary(
    live_server: LiveServer, capsys: pytest.CaptureFixture[str]
) -> None:
    checks = ["--check", "core.claim.fifo", "--check", "ours.tasks.fencing"]
    assert main(["server", live_server.url, *TOKENS, *checks]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" — ")[0] for line in lines[:2]] == [
        "PASS core.claim.fifo",
        "PASS ours.tasks.fencing",
    ]
    assert lines[2].endswith(
        "2 passed, 0 failed, 0 skipped; every required check passed"
    )


def test_json_for_machines(
    live_server: LiveServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "server",
            live_server.url,
            *TOKENS,
            "--group",
            "core",
            "--check",
            "core.tasks.get",
            "--json",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["ok"] is True
    assert [(r["id"], r["status"]) for r in report["results"]] == [
        ("core.tasks.get", "pass")
    ]
    assert report["summary"]["required_failed"] == []


def test_exit_code_1_when_a_required_check_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with broken_server(answers_500_on_bad_input, tmp_path) as target:
        code = main(["server", target.url, *TOKENS, "--check", "ours.errors"])
    out = capsys.readouterr().out
    assert code == 1
    assert re.search(r"^FAIL ours\.errors\.bad-input — .*expected 422", out, re.M)
    assert "required checks failed: ours.errors.bad-input" in out


@pytest.mark.parametrize(
    "selection", [["--group", "nope"], ["--check", "core.no-such-check"]]
)
def test_a_selection_that_matches_nothing_is_a_usage_error(
    selection: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["server", "http://127.0.0.1:9", *TOKENS, *selection]) == 2
    assert "joblib-conformance:" in capsys.readouterr().err


def test_a_worker_command_that_cannot_run_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["worker", "--", "/nonexistent/worker"]) == 2
    assert main(["worker"]) == 2
    assert "joblib-conformance:" in capsys.readouterr().err


def test_list_names_every_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for check in (
        "core.events.after-commit",
        "results.round-trip",
        "progress.coalesced",
        "ours.cancel.notice",
        "worker.heartbeat",
        "worker-ours.progress",
    ):
        assert check in out
    assert "providers.provider-routes [not required]" in out
    assert "results.round-trip [not required]" not in out


@pytest.mark.slow
def test_the_command_against_joblib_server_serve(database_url: str) -> None:
    port = free_port()
    env = server_env(
        database_url, body_timeout_seconds=2, heartbeat_task_margin_seconds=1
    )
    with server_process(port, env) as url:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "joblib_conformance",
                "server",
                url,
                *TOKENS,
                "--body-timeout",
                "2",
                "--heartbeat-task-margin",
                "1",
                "--max-result-bytes",
                "1048576",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=110,
        )
    report = json.loads(done.stdout)
    failed = [r for r in report["results"] if r["status"] in ("fail", "error")]
    assert done.returncode == 0, json.dumps(failed, indent=2)
    skipped = {r["id"]: r["got"] for r in report["results"] if r["status"] == "skip"}
    # `joblib-server serve` locks no room: the 423 check says what it needs.
    assert "--locked-room" in skipped["ours.errors.room-locked"]
    assert list(skipped) == ["ours.errors.room-locked", "providers.provider-routes"]
    assert not failed


@pytest.mark.slow
def test_the_worker_command_passes_a_job_manager_worker(
    capsys: pytest.CaptureFixture[str],
) -> None:
    script = Path(__file__).with_name("manager_script.py")
    args = [
        "worker",
        "--heartbeat-within",
        "2",
        "--tasks",
        "2",
        "--",
        sys.executable,
        str(script),
    ]
    code = main(args)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "9 passed, 0 failed, 0 skipped" in out


@pytest.mark.slow
def test_the_readme_worker_is_a_well_behaved_worker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- worker-example -->\n```python\n(.*?)```", readme, re.S)
    assert block is not None, "README.md has no worker example"
    worker = tmp_path / "worker.py"
    worker.write_text(block.group(1))
    # The example heartbeats every 20 s (JobManager's default).
    args = [
        "worker",
        "--heartbeat-within",
        "25",
        "--json",
        "--",
        sys.executable,
        str(worker),
    ]
    code = main(args)
    report = json.loads(capsys.readouterr().out)
    assert code == 0, json.dumps(report["results"], indent=2)
    # The example reports progress: its reports are judged, not skipped.
    statuses = {r["id"]: r["status"] for r in report["results"]}
    assert statuses["worker-ours.progress"] == "pass"
