"""The README's worker and curl blocks, and every example, run for real.

Each example runs as a user would start it (`python examples/<file>.py`) in its own
process on a loopback port; the worker is stopped with a signal and must leave
cleanly, so the server has forgotten it afterwards.
"""

from __future__ import annotations

import inspect
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import socketio

from tests.integration.test_readme import ROOT
from tests.support.processes import (
    WorkerProcess,
    python_process,
    server_process,
    wait_until_answers,
)
from tests.support.rest import rest
from tests.support.servers import free_port, serve_in_thread
from tests.support.sockets import connect_peer
from tests.support.waiting import eventually

EXAMPLES = ROOT / "examples"
ROTATE = "@global:modifiers:Rotate"


def readme_block(marker: str) -> str:
    """The fenced block after `<!-- marker -->` in README.md."""
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- {marker} -->\n```\w*\n(.*?)```", text, re.DOTALL)
    assert match, f"README.md has no {marker} block"
    return match.group(1)


def wait_for_job(api: str, token: str, full_name: str) -> None:
    """Block until the job is registered (the worker is up)."""
    with rest(api, token) as client:
        eventually(
            lambda: client.get(f"/rooms/room_1/jobs/{full_name}").status_code == 200,
            timeout=30,
            interval=0.1,
            what="the worker to register",
        )


def stop_gracefully(worker: WorkerProcess, how: signal.Signals) -> None:
    worker.process.send_signal(how)
    assert worker.process.wait(20) == 0


def assert_no_workers(api: str, token: str) -> None:
    with rest(api, token) as client:
        assert client.get("/workers").json()["total"] == 0
        assert client.get("/rooms/room_1/jobs").json()["total"] == 0


@pytest.mark.slow  # a server, a worker and curl in processes of their own: ~5 s
def test_readme_worker_and_curl_blocks(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "worker.py").write_text(readme_block("worker-example"))
    # The README uses port 8000; the test must not assume it is free.
    curl = readme_block("curl-example").replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    env = {"JOBLIB_TOKENS": "", "JOBLIB_DATABASE_URL": "sqlite:///./joblib.db"}
    with server_process(port, env, cwd=tmp_path) as url:
        token = readme_token(tmp_path)
        worker_env = {"JOBLIB_URL": url, "JOBLIB_TOKEN": token}
        with python_process([str(tmp_path / "worker.py")], worker_env) as worker:
            wait_for_job(f"{url}/v1/joblib", token, ROTATE)
            out = subprocess.run(
                ["bash", "-c", curl], cwd=tmp_path, capture_output=True, text=True
            )
            assert '"status":"completed"' in out.stdout, out
            assert '"result":{"angle":90.0}' in out.stdout, out
            done = '"progress":{"current":1.0,"total":1.0,"message":"done"}'
            assert done in out.stdout, out
            assert worker.read_line() == "rotating by 90.0 degrees\n"
            # The Python submitter waits for its result the same way.
            (tmp_path / "submit.py").write_text(readme_block("submit-example"))
            submitted = subprocess.run(
                [sys.executable, str(tmp_path / "submit.py")],
                cwd=tmp_path,
                env={**os.environ, **worker_env},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert submitted.stdout == "{'angle': 45.0}\n", submitted
            assert worker.read_line() == "rotating by 45.0 degrees\n"
            stop_gracefully(worker, signal.SIGINT)
        assert_no_workers(f"{url}/v1/joblib", token)


def readme_token(directory: Path) -> str:
    """The admin token the server stored on first start, read as the README says."""
    line = readme_block("curl-example").splitlines()[0]
    assert line.startswith("TOKEN=$(")
    assert line.endswith(")")
    return subprocess.run(
        ["bash", "-c", line[len("TOKEN=$(") : -1]],
        cwd=directory,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@pytest.mark.slow  # a host, a worker and two token commands as processes: ~5 s
@pytest.mark.parametrize(
    ("host", "how"),
    [("starlette_host", signal.SIGTERM), ("fastapi_host", signal.SIGINT)],
)
def test_host_example_serves_a_worker_example(
    tmp_path: Path, host: str, how: signal.Signals
) -> None:
    port = free_port()
    script = str(EXAMPLES / f"{host}.py")

    def token(user: str, *extra: str) -> str:
        return subprocess.run(
            [sys.executable, script, "--print-token", user, *extra],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    admin, alice = token("ops", "--admin"), token("alice")
    url = f"http://127.0.0.1:{port}"
    api = f"{url}/v1/joblib"
    with python_process([script, "--port", str(port), "--database-url",
                  f"sqlite:///{tmp_path / 'host.db'}"]):  # fmt: skip
        wait_until_up(url)
        assert (
            httpx.get(
                f"{api}/workers", headers={"Authorization": "Bearer x.y"}
            ).status_code
            == 401
        )
        with connect_peer(url, token=alice, rooms=("room_1",)) as observer:
            worker_args = [str(EXAMPLES / "worker.py"), "--url", url, "--token", admin]
            with python_process(worker_args) as worker:
                assert "serving @global:modifiers:Rotate" in worker.read_line()
                with rest(api, alice) as client:
                    task = client.post(
                        f"/rooms/room_1/tasks/{ROTATE}", json={"payload": {"angle": 45}}
                    ).json()
                    done = client.get(
                        f"/tasks/{task['id']}", headers={"Prefer": "wait=20"}
                    ).json()
                assert done["status"] == "completed"
                observer.wait_for(
                    lambda e: (
                        e[0] == "task_status_event" and e[1]["status"] == "completed"
                    )
                )
                stop_gracefully(worker, how)
                assert "disconnected" in worker.process.stdout.read()  # type: ignore[union-attr]
        assert_no_workers(api, alice)


def wait_until_up(url: str) -> None:
    assert wait_until_answers(url, what="the host to answer").status_code == 200


def test_readme_host_blocks_serve_rest_and_sockets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's mounting block, with its own-handlers and cleanup blocks."""
    monkeypatch.chdir(tmp_path)  # the block keeps its database in ./host.db
    namespace: dict[str, object] = {"__name__": "readme_host"}
    for marker in ("host-example", "own-handlers-example", "cleanup-example"):
        exec(readme_block(marker), namespace)
    assert inspect.iscoroutinefunction(namespace["forget_worker"])
    alice = {"X-User": "alice"}
    with serve_in_thread(namespace["app"]) as server:
        api = f"{server.url}/v1/joblib"
        assert httpx.get(f"{api}/workers").status_code == 401
        job = httpx.put(
            f"{api}/rooms/room_1/jobs",
            headers=alice,
            json={"category": "modifiers", "name": "Host", "schema": {}},
        ).json()
        sio = socketio.Client(reconnection=False)
        sio.connect(server.url, headers=alice, transports=["websocket"])
        answer = sio.call(
            "join_job_room",
            {"job_name": job["full_name"], "worker_id": job["worker_id"]},
            timeout=10,
        )
        assert answer["ok"] is True
        sio.disconnect()
        # The host's own disconnect handler cleaned the worker up through joblib.
        eventually(
            lambda: httpx.get(f"{api}/workers", headers=alice).json()["total"] == 0,
            what="the worker to be cleaned up",
        )
