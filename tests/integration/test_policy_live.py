"""The standalone server's token table with rooms, end to end.

`joblib-server serve` in a process of its own, its tokens from `JOBLIB_TOKENS` or
from a file the `token --room` command wrote; real REST and Socket.IO clients.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import server_env, server_process
from tests.support.rest import rest
from tests.support.servers import free_port
from tests.support.sockets import connect_peer
from tests.support.tokens import ADMIN, BOB, TOKENS_JSON

SCHEMA = {"category": "modifiers", "name": "Probe", "schema": {}}
LAB = "lab-1"
OTHER = "other"


def _statuses(event: tuple[str, dict[str, object]], task_id: str) -> bool:
    return event[0] == "task_status_event" and event[1]["id"] == task_id


def _token_command(tokens_file: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "joblib_server.cli", "token", *args,
         "--tokens-file", str(tokens_file)],
        capture_output=True,
        text=True,
        check=True,
    )  # fmt: skip
    return done.stdout.strip()


@pytest.fixture(params=["JOBLIB_TOKENS", "tokens file"])
def served(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Path
) -> Iterator[tuple[str, str]]:
    """A standalone server where lab's token is held to `lab-*`: (url, lab's token)."""
    env = server_env(database_url)
    if request.param == "JOBLIB_TOKENS":
        lab = f"lab-{uuid.uuid4().hex}"
        tokens = json.loads(TOKENS_JSON)
        tokens[lab] = {"id": "lab", "rooms": ["lab-*"]}
        env["JOBLIB_TOKENS"] = json.dumps(tokens)
    else:
        tokens_file = tmp_path / "tokens.json"
        tokens_file.write_text(TOKENS_JSON)  # a 0.1.0 file, without rooms
        lab = _token_command(tokens_file, "--name", "lab", "--room", "lab-*")
        env["JOBLIB_TOKENS"] = ""
        env["JOBLIB_TOKENS_FILE"] = str(tokens_file)
    with server_process(free_port(), env) as url:
        yield url, lab


def test_a_held_token_works_in_its_rooms_only(served: tuple[str, str]) -> None:
    url, lab = served
    api = f"{url}/v1/joblib"
    with rest(api, lab) as client, rest(api, BOB) as bob, rest(api, ADMIN) as admin:
        assert client.put(f"/rooms/{OTHER}/jobs", json=SCHEMA).status_code == 403
        assert client.get(f"/rooms/{OTHER}/tasks").status_code == 403
        job = client.put(f"/rooms/{LAB}/jobs", json=SCHEMA).json()
        assert job["full_name"] == f"{LAB}:modifiers:Probe"
        # Bob may use every room, as before; the lab job is not his to serve.
        assert bob.get(f"/rooms/{OTHER}/tasks").status_code == 200
        assert bob.put(f"/rooms/{LAB}/jobs", json=SCHEMA).status_code == 403
        assert admin.put(f"/rooms/{LAB}/jobs", json=SCHEMA).status_code == 200

        with connect_peer(url, token=lab) as peer:
            refused = peer.call("join_room", {"room_id": OTHER})
            assert refused["ok"] is False
            assert refused["error"]["status"] == 403
            assert peer.call("join_room", {"room_id": LAB}) == {"ok": True}
            join = {"job_name": job["full_name"], "worker_id": job["worker_id"]}
            assert peer.call("join_job_room", join)["ok"] is True

            task = bob.post(
                f"/rooms/{LAB}/tasks/{job['full_name']}", json={"payload": {"n": 1}}
            ).json()
            peer.wait_for(lambda e: e[0] == "task_available")
            peer.wait_for(lambda e: _statuses(e, task["id"]))
            claimed = client.post(
                "/tasks/claim", json={"worker_id": job["worker_id"], "start": True}
            ).json()["task"]
            assert (claimed["id"], claimed["payload"]) == (task["id"], {"n": 1})
            done = client.patch(f"/tasks/{task['id']}", json={"status": "completed"})
            assert done.status_code == 200, done.text
            assert bob.get(f"/tasks/{task['id']}").json()["status"] == "completed"
