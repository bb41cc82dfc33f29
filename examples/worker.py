"""A complete joblib worker: `python examples/worker.py --url URL --token TOKEN`.

It serves the job `@global:modifiers:Rotate` (registering in @global needs an admin
token; pass `--room room_1` to serve one room instead), runs each task it is given,
and on Ctrl-C or SIGTERM leaves cleanly: the server forgets it at once.
"""

import argparse
import os
import signal
import threading
from typing import Any, ClassVar

from joblib_client import Category, Extension, JobManager


class Rotate(Extension):
    """Rotate the selection; the fields are the job's parameters."""

    category: ClassVar[Category] = Category.MODIFIER
    angle: float = 0.0

    def run(self, **kwargs: Any) -> None:
        print(f"rotating by {self.angle} degrees", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--token", default=os.environ.get("JOBLIB_TOKEN"))
    parser.add_argument("--room", default=None, help="default: @global")
    args = parser.parse_args()

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    with JobManager.connect(args.url, token=args.token) as manager:
        manager.register(Rotate, room=args.room)
        print(f"worker {manager.worker_id} serving {', '.join(manager)}", flush=True)
        for task in manager.listen(stop_event=stop):
            print(f"{task.job_name} -> {manager.run(task)}", flush=True)
    print("disconnected", flush=True)


if __name__ == "__main__":
    main()
