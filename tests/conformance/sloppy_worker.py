"""A worker written by hand with raw httpx and python-socketio, for the worker
checks to judge: each flag leaves out one thing a well-behaved worker does."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import httpx
import socketio

from joblib_protocol import API_PREFIX


@dataclass(frozen=True)
class Manners:
    """What the worker does; each False is one bad habit."""

    joins: bool = True
    heartbeats: bool = True
    fences: bool = True
    says_goodbye: bool = True
    progress_on_time: bool = True
    """Reports progress while the task runs (False: once it completed)."""


HEARTBEAT_SECONDS = 0.2


def run_sloppy_worker(
    url: str, token: str, manners: Manners, stop: threading.Event
) -> None:
    """Register @global:modifiers:Sloppy, serve its tasks until `stop` is set."""
    headers = {"Authorization": f"Bearer {token}"}
    sio = socketio.Client(reconnection=False, handle_sigint=False)
    sio.connect(url, headers=headers, transports=["websocket"], wait_timeout=10)
    with httpx.Client(base_url=url + API_PREFIX, headers=headers, timeout=10) as http:
        job = http.put(
            "/rooms/@global/jobs",
            json={"category": "modifiers", "name": "Sloppy", "schema": {}},
        ).json()
        worker_id, full_name = job["worker_id"], job["full_name"]
        ids = {"job_name": full_name, "worker_id": worker_id}
        if manners.joins:
            sio.call("join_job_room", ids, timeout=10)
        beat = time.monotonic()
        while not stop.is_set():
            if manners.heartbeats and time.monotonic() - beat >= HEARTBEAT_SECONDS:
                http.patch(f"/workers/{worker_id}")
                beat = time.monotonic()
            claimed = http.post(
                "/tasks/claim",
                json={"worker_id": worker_id},
                headers={"Prefer": f"wait={HEARTBEAT_SECONDS}"},
            )
            task = claimed.json()["task"]
            if task is None:
                continue
            fence = {"worker_id": worker_id} if manners.fences else {}
            progress = {"current": 1, "total": 1, **fence}
            http.patch(f"/tasks/{task['id']}", json={"status": "running", **fence})
            if manners.progress_on_time:
                http.put(f"/tasks/{task['id']}/progress", json=progress)
            done = {"status": "completed", "result": {"id": task["id"]}, **fence}
            http.patch(f"/tasks/{task['id']}", json=done)
            if not manners.progress_on_time:
                http.put(f"/tasks/{task['id']}/progress", json=progress)
        if manners.says_goodbye:
            sio.call("leave_job_room", ids, timeout=10)
            http.delete(f"/workers/{worker_id}")
    sio.disconnect()
