"""A worker process for the kill -9 measurement, on the stock python-socketio client.

`python -m bench.killable_worker URL TOKEN ROOM NAME`: registers job
ROOM:modifiers:NAME, joins its room, prints {"worker_id": ...}, claims and starts
one task when woken by `task_available` (re-claiming at least every second), prints
{"task_id": ...}, and then waits to be killed (at most `LIFETIME_SECONDS`).
"""

from __future__ import annotations

import json
import sys
import threading
import time

import httpx
import socketio

LIFETIME_SECONDS = 300.0


def main(argv: list[str]) -> int:
    """Run the worker; exits by itself after `LIFETIME_SECONDS` if nobody kills it."""
    url, token, room, name = argv
    deadline = time.monotonic() + LIFETIME_SECONDS
    http = httpx.Client(
        base_url=f"{url}/v1/joblib", headers={"Authorization": f"Bearer {token}"}
    )
    woken = threading.Event()
    sio = socketio.Client(reconnection=False)
    sio.on("task_available", lambda data: woken.set())
    sio.connect(url, auth={"token": token}, transports=["websocket"])
    job = http.put(
        f"/rooms/{room}/jobs",
        json={"category": "modifiers", "name": name, "schema": {"type": "object"}},
    ).json()
    worker_id = job["worker_id"]
    answer = sio.call(
        "join_job_room", {"job_name": job["full_name"], "worker_id": worker_id}
    )
    if not isinstance(answer, dict) or answer.get("ok") is not True:
        print(json.dumps({"error": answer}), flush=True)
        return 1
    print(json.dumps({"worker_id": worker_id, "job": job["full_name"]}), flush=True)
    while time.monotonic() < deadline:
        woken.clear()
        claimed = http.post(
            "/tasks/claim", json={"worker_id": worker_id, "start": True}
        ).json()
        if claimed["task"] is not None:
            print(json.dumps({"task_id": claimed["task"]["id"]}), flush=True)
            break
        woken.wait(1.0)
    time.sleep(max(0.0, deadline - time.monotonic()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
