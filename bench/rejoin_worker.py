"""A `JobManager` worker that tells when it is back after its socket reconnected.

`python -m bench.rejoin_worker URL TOKEN ROOM NAME`: registers job
ROOM:modifiers:NAME with the SDK (`JobManager.connect`, `register`), prints
{"worker_id": ...}, and listens for tasks. Each time its socket connects again
(after a server restart), it prints {"rejoined": <time.time()>, "worker_id": ...}
once the manager's own connect handler (a heartbeat, then `join_job_room` per job,
acknowledged) has returned. Exits after `LIFETIME_SECONDS` if nobody stops it.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any, ClassVar

from joblib_client import Category, Extension, JobManager, SocketClient

LIFETIME_SECONDS = 300.0


class Idle(Extension):
    """Does nothing; the job's name is set per process."""

    category: ClassVar[Category] = Category.MODIFIER

    def run(self, **kwargs: Any) -> None:
        return None


def main(argv: list[str]) -> int:
    """Run the worker until its lifetime ends (or it is killed)."""
    url, token, room, name = argv
    logging.basicConfig(level=logging.ERROR)
    stop = threading.Event()
    threading.Timer(LIFETIME_SECONDS, stop.set).start()
    with JobManager.connect(url, token=token) as manager:
        manager.register(type(name, (Idle,), {"__module__": __name__}), room=room)
        worker_id = str(manager.worker_id)

        def rejoined() -> None:
            # Registered after the manager's handler, so it runs once that is done.
            line = {"rejoined": time.time(), "worker_id": str(manager.worker_id)}
            print(json.dumps(line), flush=True)

        socket = manager.tsio
        assert isinstance(socket, SocketClient)
        socket.on("connect", rejoined)
        print(json.dumps({"worker_id": worker_id}), flush=True)
        for task in manager.listen(stop_event=stop):
            manager.run(task)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
