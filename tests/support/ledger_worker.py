"""A `JobManager` worker that writes down every task its code ran to the end.

Usage: ledger_worker.py URL TOKEN ROOM NAME LEDGER. It registers
ROOM:modifiers:NAME and runs the tasks it is given (`listen()` and `run()`) until
SIGTERM, then leaves cleanly. A task's payload is `{"seconds": S}`: the job's code
sleeps S seconds, then appends one line to the file LEDGER,
`<task id> <worker id> <unix time>`, before the manager reports the task
completed. So LEDGER counts executions, whatever the server recorded: a task run
twice has two lines. The manager's own log goes to stderr.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

from joblib_client import Category, Extension, JobManager


class Sleep(Extension):
    """Sleep, then write the execution down; the job's name is set per run."""

    category: ClassVar[Category] = Category.MODIFIER
    seconds: float = 0.0

    def run(self, **kwargs: Any) -> None:
        time.sleep(self.seconds)
        line = f"{kwargs['task_id']} {kwargs['worker_id']} {time.time():.6f}\n"
        # One write of one short line with O_APPEND: lines never interleave.
        descriptor = os.open(
            kwargs["ledger"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
        )
        try:
            os.write(descriptor, line.encode())
        finally:
            os.close(descriptor)


def main() -> None:
    url, token, room, name, ledger = sys.argv[1:6]
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    job = type(name, (Sleep,), {"__module__": __name__})
    with JobManager.connect(url, token=token) as manager:
        manager.register(job, room=room)
        for task in manager.listen(stop_event=stop, polling_interval=1.0):
            worker_id = task.worker_id or manager.worker_id
            manager.run(task, task_id=task.id, worker_id=worker_id, ledger=Path(ledger))


if __name__ == "__main__":
    main()
