"""A worker for the kit to kill: raw REST and Socket.IO, nothing of joblib's SDK.

`python -m joblib_conformance.dropped_worker URL TOKEN ROOM CATEGORY NAME PATH
[ON_DISCONNECT]` connects its socket (`Authorization: Bearer`, Socket.IO path
PATH), registers `ROOM:CATEGORY:NAME` (with the disconnect policy ON_DISCONNECT,
JSON, when given), joins the job's room and prints `{"worker_id", "job_name"}`.
Each line `claim` on its input claims a task, reports it running and prints
`{"task_id"}`. It then waits for the kit to kill it; nothing closes its socket.
"""

from __future__ import annotations

import json
import sys
from urllib.parse import quote

import httpx
import socketio

from joblib_protocol import API_PREFIX


def say(**fields: object) -> None:
    """Print one JSON line for the kit."""
    print(json.dumps(fields), flush=True)


def main(argv: list[str]) -> int:
    """Register, join, claim on demand; see the module's docstring."""
    url, token, room_id, category, name, path, *policy = argv
    headers = {"Authorization": f"Bearer {token}"}
    http = httpx.Client(base_url=url + API_PREFIX, headers=headers, timeout=10)
    sio = socketio.Client(reconnection=False, handle_sigint=False)
    sio.connect(
        url,
        headers=headers,
        transports=["websocket"],
        socketio_path=path,
        wait_timeout=10,
    )
    body = {"category": category, "name": name, "schema": {}}
    if policy:
        body["on_disconnect"] = json.loads(policy[0])
    answer = http.put(f"/rooms/{quote(room_id, safe='@:')}/jobs", json=body)
    if answer.status_code not in (200, 201):
        say(error=f"registering answered {answer.status_code}: {answer.text}")
        return 1
    job = answer.json()
    ack = sio.call(
        "join_job_room",
        {"job_name": job["full_name"], "worker_id": job["worker_id"]},
        timeout=10,
    )
    if isinstance(ack, dict) and ack.get("ok") is False:
        say(error=f"join_job_room refused: {ack}")
        return 1
    say(worker_id=job["worker_id"], job_name=job["full_name"])
    for line in sys.stdin:
        if line.strip() != "claim":
            continue
        claimed = http.post("/tasks/claim", json={"worker_id": job["worker_id"]})
        task = claimed.json().get("task") if claimed.status_code == 200 else None
        if task is None:
            say(error=f"claiming answered {claimed.status_code}: {claimed.text}")
            continue
        started = http.patch(f"/tasks/{task['id']}", json={"status": "running"})
        if started.status_code != 200:
            say(error=f"starting answered {started.status_code}: {started.text}")
            continue
        say(task_id=task["id"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
