"""A worker written the zndraw-joblib way, running on joblib with its imports changed.

`JOBLIB_URL=http://127.0.0.1:8000 JOBLIB_TOKEN=... python zndraw_style_worker.py`

The shape is zndraw-joblib's: the host builds an API object (`http`, `base_url`,
`get_headers()`) and a `zndraw_socketio` wrapper around a python-socketio client
(`tsio`), hands `JobManager` an `execute` callback that builds the `vis` object
each task runs against, registers its extensions (one with `run_kwargs`) and a
provider, and calls `wait()`: the manager claims and runs tasks in the
background until SIGINT or SIGTERM, then leaves. Only the `joblib_client` import
differs from a zndraw-joblib worker.

Optional: `JOBLIB_SOCKET=0` runs without a socket (REST only);
`JOBLIB_MAX_UNREACHABLE` sets `max_unreachable_seconds`. It prints one JSON line
when it serves and one when it stopped.
"""

import json
import logging
import os
import time
from typing import Any, ClassVar

import httpx
import socketio
from zndraw_socketio import wrap

from joblib_client import Category, ClaimedTask, Extension, JobManager, Provider


class Api:
    """The host's API object, as zndraw-joblib's `ApiManager` protocol has it."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.http = httpx.Client(timeout=10)
        self.token = token

    def get_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def raise_for_status(self, response: httpx.Response) -> None:
        response.raise_for_status()  # zndraw-joblib calls it; joblib does not need it


class Vis:
    """Stands in for the ZnDraw client of the task's room that `run()` receives."""

    def __init__(self, room: str) -> None:
        self.room = room


class Scale(Extension):
    """Scales by `factor` with the model it was registered with (`run_kwargs`)."""

    category: ClassVar[Category] = Category.MODIFIER
    factor: float = 1.0

    def run(self, vis: Any, **kwargs: Any) -> dict[str, Any]:
        return {
            "room": vis.room,
            "scaled": kwargs["model"]["size"] * self.factor,
            "handlers": sorted(kwargs["handlers"]),
        }


class Broken(Extension):
    """Always fails: the task is failed with the exception's text."""

    category: ClassVar[Category] = Category.ANALYSIS

    def run(self, vis: Any, **kwargs: Any) -> None:
        raise ValueError(f"no frames in room {vis.room}")


class Refuse(Extension):
    """`execute` fails it by id before it runs, as a host does with a bad task."""

    category: ClassVar[Category] = Category.ANALYSIS
    reason: str = "refused"

    def run(self, vis: Any, **kwargs: Any) -> None:
        raise AssertionError("never runs: execute fails it first")


class Abandon(Extension):
    """`execute` cancels it instead of running it."""

    category: ClassVar[Category] = Category.SELECTION

    def run(self, vis: Any, **kwargs: Any) -> None:
        raise AssertionError("never runs: execute cancels it first")


class Nap(Extension):
    """Takes `seconds` to run: a task in hand when the worker is told to stop."""

    category: ClassVar[Category] = Category.ANALYSIS
    seconds: float = 1.0

    def run(self, vis: Any, **kwargs: Any) -> dict[str, float]:
        time.sleep(self.seconds)  # the job's own work, not a wait on anything
        return {"slept": self.seconds}


class Frames(Provider):
    """A provider, so that `handlers` has something in it."""

    category: ClassVar[str] = "frames"
    index: int = 0

    def read(self, handler: Any) -> Any:
        return handler[self.index]


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    url, token = os.environ["JOBLIB_URL"], os.environ["JOBLIB_TOKEN"]
    api = Api(url, token)
    sio = socketio.Client()
    tsio = wrap(sio) if os.environ.get("JOBLIB_SOCKET", "1") != "0" else None
    if tsio is not None:
        # retry: a worker may start before its server does.
        sio.connect(url, auth={"token": token}, transports=["websocket"], retry=True)

    def execute(task: ClaimedTask) -> Any:
        if isinstance(task.extension, Refuse):
            manager.fail_by_id(task.task_id, task.extension.reason)
            return None
        if isinstance(task.extension, Abandon):
            manager.cancel(task)
            return None
        vis = Vis(task.room_id)
        return task.extension.run(vis, handlers=manager.handlers, **task.run_kwargs)

    manager = JobManager(
        api,
        tsio=tsio,
        execute=execute,
        polling_interval=0.5,
        max_unreachable_seconds=float(os.environ.get("JOBLIB_MAX_UNREACHABLE", 120)),
    )
    manager.register(Scale, run_kwargs={"model": {"size": 2.0}})
    for extension in (Broken, Refuse, Abandon, Nap):
        manager.register(extension)
    manager.register_provider(Frames, name="frames", handler=["first", "second"])
    serving = {"worker_id": str(manager.worker_id), "jobs": list(manager)}
    print(json.dumps(serving), flush=True)
    manager.wait()  # until SIGINT or SIGTERM, or the server stays away
    if tsio is not None:
        sio.disconnect()
    api.http.close()
    print(json.dumps({"stopped": True}), flush=True)


if __name__ == "__main__":
    main()
