"""A JobManager worker as `joblib-conformance worker` runs one: it reads
JOBLIB_URL and JOBLIB_TOKEN, serves @global:modifiers:Rotate (which reports
progress and returns a result), heartbeats every 0.2 s, and says goodbye on
SIGINT or SIGTERM."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any, ClassVar

from joblib_client import Category, Extension, JobManager, current_task


class Rotate(Extension):
    category: ClassVar[Category] = Category.MODIFIER
    angle: float = 0.0

    def run(self, **kwargs: Any) -> dict[str, float]:
        current_task().progress(1, total=1, message="rotated")
        return {"angle": self.angle}


def main() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with JobManager.connect(
        os.environ["JOBLIB_URL"],
        token=os.environ["JOBLIB_TOKEN"],
        heartbeat_interval=0.2,
    ) as manager:
        manager.register(Rotate)
        for task in manager.listen(stop_event=stop, polling_interval=0.2):
            manager.run(task)


if __name__ == "__main__":
    main()
