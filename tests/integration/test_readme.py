"""The README's commands work as written on a fresh checkout.

CI runs the README's test command verbatim (`.ci/run`), which proves that one; this
module runs the serve command in a fresh copy of the repository with its own fresh
virtual environment, until the server answers, then stops it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.processes import wait_until_answers
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


def readme_command(name: str) -> str:
    """The command README.md marks with `<!-- NAME-command -->`."""
    out = subprocess.run(
        [str(ROOT / ".ci" / "readme-command"), name],
        capture_output=True,
        text=True,
        check=True,
    )
    command = out.stdout.strip()
    assert command, f"README.md has no {name} command"
    return command


def fresh_checkout(target: Path) -> Path:
    """Copy the files git tracks (and new ones it does not ignore) into `target`."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for raw in filter(None, listed):
        source = ROOT / raw.decode()
        if source.is_file():
            destination = target / raw.decode()
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
    return target


def test_readme_commands_are_marked() -> None:
    assert "pytest" in readme_command("test")
    assert "joblib-server serve" in readme_command("serve")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_serve_command_starts_a_server_from_nothing(tmp_path: Path) -> None:
    checkout = fresh_checkout(tmp_path / "joblib")
    port = free_port()
    # The README serves on 8000; a test must not assume that port is free.
    command = re.sub(r"--port \d+", f"--port {port}", readme_command("serve"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBLIB_")}
    process = subprocess.Popen(
        ["bash", "-c", command],
        cwd=checkout,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    api = f"http://127.0.0.1:{port}/v1/joblib"
    try:
        # The first start installs the packages into a fresh environment: minutes.
        anonymous = wait_until_answers(
            f"{api}/workers",
            process=process,
            timeout=540,
            request_timeout=2,
            what="the server to answer",
        )
        assert anonymous.status_code == 401
        tokens = json.loads((checkout / "joblib-tokens.json").read_text())
        token = next(iter(tokens))
        answer = httpx.get(
            f"{api}/workers", headers={"Authorization": f"Bearer {token}"}, timeout=5
        )
        assert answer.status_code == 200
        assert (checkout / "joblib.db").exists()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
