"""A minimal third-party worker, for tests: raw HTTP and Socket.IO, no joblib_client.

Usage: socket_worker.py URL TOKEN ROOM NAME. It registers ROOM:modifiers:NAME, joins
its job room, prints {"worker_id": ...}, then claims and starts one task (woken by
task_available), prints {"task_id": ...}, and waits on stdin. A line "close" closes
the socket cleanly; end of input exits without closing anything.
"""

from __future__ import annotations

import json
import sys
import threading

import httpx
import socketio


def main() -> None:
    url, token, room, name = sys.argv[1:5]
    http = httpx.Client(
        base_url=f"{url}/v1/joblib", headers={"Authorization": f"Bearer {token}"}
    )
    woken = threading.Event()
    sio = socketio.Client(reconnection=False)
    sio.on("task_available", lambda data: woken.set())
    sio.connect(url, auth={"token": token}, transports=["websocket"])
    job = http.put(
        f"/rooms/{room}/jobs",
        json={"category": "modifiers", "name": name, "schema": {}},
    ).json()
    worker_id = job["worker_id"]
    answer = sio.call(
        "join_job_room", {"job_name": job["full_name"], "worker_id": worker_id}
    )
    assert answer["ok"] is True, answer
    print(json.dumps({"worker_id": worker_id}), flush=True)
    while True:
        claimed = http.post(
            "/tasks/claim", json={"worker_id": worker_id, "start": True}
        ).json()
        if claimed["task"] is not None:
            break
        woken.wait(5)
        woken.clear()
    print(json.dumps({"task_id": claimed["task"]["id"]}), flush=True)
    for line in sys.stdin:
        if line.strip() == "close":
            sio.disconnect()
            print(json.dumps({"closed": True}), flush=True)


if __name__ == "__main__":
    main()
