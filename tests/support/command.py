"""The installed `joblib-server` command, run in a subprocess as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.processes import stop_process, wait_until_answers
from tests.support.servers import free_port

START_LINE = "joblib-server on http://"
# The installed command of the environment running the tests, found without PATH.
COMMAND = str(Path(sys.executable).parent / "joblib-server")


def command_env(**values: str) -> dict[str, str]:
    """The test's environment without its JOBLIB_ settings, plus `values`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBLIB_")}
    env.update(values)
    return env


def run_command(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `joblib-server ARGS` to its end; its exit code and output."""
    return subprocess.run(
        [COMMAND, *args],
        env=env if env is not None else command_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@dataclass
class Served:
    """A `joblib-server serve` subprocess that answers HTTP."""

    api: str
    log: Path

    @property
    def url(self) -> str:
        return self.api.removesuffix("/v1/joblib")

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.api, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines()

    def json_lines(self) -> list[dict[str, Any]]:
        """Every line of the log as JSON (fails on a line that is not)."""
        return [json.loads(line) for line in self.lines() if line.strip()]

    def start_lines(self) -> list[str]:
        return [line for line in self.lines() if START_LINE in line]


@contextmanager
def serve(
    command: list[str], env: dict[str, str], cwd: Path, extra: Sequence[str] = ()
) -> Iterator[Served]:
    """Run `command serve` on a free port until it answers; stop it afterwards.

    Its stdout and stderr go to `cwd/serve.log`.
    """
    port = free_port()
    log = cwd / "serve.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [*command, "serve", "--port", str(port), *extra],
            env=env,
            cwd=cwd,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    api = f"http://127.0.0.1:{port}/v1/joblib"
    try:
        try:
            wait_until_answers(f"{api}/workers", process=process)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log.read_text()}") from None
        yield Served(api, log)
    finally:
        stop_process(process)
