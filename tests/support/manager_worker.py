"""A worker process on the SDK, for tests: `JobManager.listen()` and `run()`.

Usage: manager_worker.py URL TOKEN ROOM NAME [--socket-url URL] [--policy JSON]
[--ledger DIR] [--heartbeat SECONDS]. It registers ROOM:modifiers:NAME (with
`--policy` as its `on_disconnect`) and runs every task it is given until SIGTERM.
A task's payload is `{"seconds": S, "gate": DIR, "fail": "why"}`, each optional:
the job sleeps S seconds, then, given a gate, waits until the file DIR/<its pid>
exists (the test opens the gate of one process at a time), then raises with "why"
if given. With `--ledger`, the job's code appends this process's pid to
DIR/<task id> when it completes, before the manager reports. `--socket-url` sends
the socket elsewhere than REST (through a proxy).

It prints one JSON line per step, each with its "event":
registered {worker_id}; claimed {task_id, worker_id}; ran {task_id};
done {task_id, status, worker_id}; stopped {worker_id}.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

from joblib_client import ApiClient, Category, Extension, JobManager, SocketClient

_print_lock = threading.Lock()


def say(event: str, **fields: Any) -> None:
    """Print one JSON line for the test to read."""
    with _print_lock:
        print(json.dumps({"event": event, **fields}, default=str), flush=True)


class Work(Extension):
    """Sleep, then fail or record the completion; the job's name is set per run."""

    category: ClassVar[Category] = Category.MODIFIER
    seconds: float = 0.0
    gate: str | None = None
    fail: str | None = None

    def run(self, **kwargs: Any) -> None:
        time.sleep(self.seconds)
        if self.gate is not None:
            opened = Path(self.gate) / str(os.getpid())
            while not opened.exists():
                time.sleep(0.01)
        if self.fail:
            raise RuntimeError(self.fail)
        task_id = str(kwargs["task_id"])
        ledger: Path | None = kwargs.get("ledger")
        if ledger is not None:
            line = f"{os.getpid()}\n".encode()
            descriptor = os.open(
                ledger / task_id, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
            )
            try:
                os.write(descriptor, line)
            finally:
                os.close(descriptor)
        say("ran", task_id=task_id)


def _manager(args: argparse.Namespace) -> tuple[JobManager, list[Any]]:
    if args.socket_url is None:
        return (
            JobManager.connect(
                args.url, token=args.token, heartbeat_interval=args.heartbeat
            ),
            [],
        )
    api = ApiClient(args.url, args.token)
    sock = SocketClient(args.socket_url, args.token, connect_timeout=10)
    manager = JobManager(api, sock, heartbeat_interval=args.heartbeat)
    sock.connect()
    return manager, [sock, api]


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("url", "token", "room", "name"):
        parser.add_argument(name)
    parser.add_argument("--socket-url")
    parser.add_argument("--policy")
    parser.add_argument("--ledger", type=Path)
    parser.add_argument("--heartbeat", type=float, default=20.0)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    job = type(args.name, (Work,), {"__module__": __name__})
    manager, parts = _manager(args)
    try:
        policy = json.loads(args.policy) if args.policy else None
        manager.register(job, room=args.room, on_disconnect=policy)
        say("registered", worker_id=manager.worker_id)
        for task in manager.listen(stop_event=stop, polling_interval=1.0):
            say("claimed", task_id=task.id, worker_id=manager.worker_id)
            status = manager.run(task, task_id=task.id, ledger=args.ledger)
            say("done", task_id=task.id, status=status, worker_id=manager.worker_id)
        say("stopped", worker_id=manager.worker_id)
    finally:
        manager.close()
        for part in parts:
            part.close()


if __name__ == "__main__":
    main()
