"""A `JobManager` worker whose job waits to be cancelled, and says when it saw it.

`python -m bench.cancel_worker URL TOKEN ROOM`: registers job
ROOM:modifiers:Cancellable with the SDK (`JobManager.connect`, socket on), prints
{"worker_id": ..., "job": ...}, and runs the tasks it claims. Each task's `run()`
prints {"started": <task id>, "at": <time.time()>}, then waits on
`current_task().cancelled`; once it is set, it prints
{"cancelled": <task id>, "seen": <time.time()>, "reason": ...}, taken the moment the
wait returned. A task nobody cancels within `WAIT_SECONDS` prints
{"timeout": <task id>} and completes. Exits after `LIFETIME_SECONDS` if nobody
stops it.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any, ClassVar

from joblib_client import Category, Extension, JobManager, current_task
from joblib_protocol import format_job_name

LIFETIME_SECONDS = 300.0
WAIT_SECONDS = 30.0


def _emit(line: dict[str, Any]) -> None:
    print(json.dumps(line), flush=True)


class Cancellable(Extension):
    """Waits until its task is cancelled (at most `WAIT_SECONDS`)."""

    category: ClassVar[Category] = Category.MODIFIER

    round: int = 0

    def run(self, **kwargs: Any) -> None:
        context = current_task()
        task_id = str(context.id)
        _emit({"started": task_id, "round": self.round, "at": time.time()})
        if context.cancelled.wait(WAIT_SECONDS):
            seen = time.time()
            reason = context.cancel_reason
            _emit(
                {
                    "cancelled": task_id,
                    "seen": seen,
                    "reason": None if reason is None else str(reason),
                }
            )
        else:
            _emit({"timeout": task_id})


def main(argv: list[str]) -> int:
    """Run the worker until its lifetime ends (or it is killed)."""
    url, token, room = argv
    logging.basicConfig(level=logging.ERROR)
    stop = threading.Event()
    lifetime = threading.Timer(LIFETIME_SECONDS, stop.set)
    lifetime.daemon = True
    lifetime.start()
    with JobManager.connect(url, token=token) as manager:
        manager.register(Cancellable, room=room)
        job = format_job_name(room, str(Cancellable.category), Cancellable.__name__)
        _emit({"worker_id": str(manager.worker_id), "job": job})
        for task in manager.listen(stop_event=stop):
            manager.run(task)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
