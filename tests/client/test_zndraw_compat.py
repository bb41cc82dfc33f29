"""zndraw-joblib's worker SDK calls on our JobManager, against the in-process server.

`run_kwargs`, `run(task, vis)`, `ClaimedTask.task_id`, `listen(polling_interval,
stop_event)`, `fail_by_id`, `cancel`, auto-serve with `execute=` and `wait()`.
The same, as a worker script in its own process, is test_zndraw_worker.py.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import pytest
import socketio
import zndraw_socketio
from pydantic_core import to_jsonable_python

from joblib_client import (
    Category,
    ClaimedTask,
    Extension,
    InvalidTaskTransitionError,
    JobManager,
)
from joblib_protocol import CLIENT_EVENTS, SERVER_EVENTS, JoinJobRoom, TaskStatus
from tests.client.conftest import ManagerFactory, in_thread
from tests.support import eventually
from tests.support.tokens import ADMIN, ALICE


class Measure(Extension):
    """zndraw-joblib's shape: `run(vis, **kwargs)`."""

    category: ClassVar[Category] = Category.ANALYSIS
    scale: float = 1.0

    def run(self, vis: Any, **kwargs: Any) -> dict[str, Any]:
        return {"vis": vis, "scale": self.scale, "kwargs": kwargs}


class Explode(Extension):
    category: ClassVar[Category] = Category.ANALYSIS

    def run(self, vis: Any, **kwargs: Any) -> None:
        raise ValueError(f"cannot measure in {vis}")


MEASURE = "@global:analysis:Measure"


@pytest.fixture
def submitter(make_manager: ManagerFactory) -> JobManager:
    return make_manager(ALICE)


def claim(manager: JobManager) -> ClaimedTask[Any]:
    task = manager.claim()
    assert task is not None
    return task


def test_run_kwargs_reach_run_with_vis_and_the_task_id_is_a_string(
    make_manager: ManagerFactory, submitter: JobManager
) -> None:
    worker = make_manager(ADMIN)
    worker.register(Measure, run_kwargs={"model": "loaded once", "frame": 0})
    task_id = submitter.submit(Measure(scale=2), "room1")

    task = claim(worker)
    status = worker.run(task, "the room's vis", frame=7)

    assert task.task_id == str(task_id)
    assert task.run_kwargs == {"model": "loaded once", "frame": 0}
    assert worker.get_run_kwargs(MEASURE) == {"model": "loaded once", "frame": 0}
    assert status == TaskStatus.COMPLETED
    assert submitter.result(task_id, timeout=10) == {
        "vis": "the room's vis",
        "scale": 2.0,
        "kwargs": {"model": "loaded once", "frame": 7},  # the call's kwargs win
    }


def test_listen_takes_zndraw_joblibs_argument_order(
    make_manager: ManagerFactory, submitter: JobManager
) -> None:
    worker = make_manager(ADMIN)
    worker.register(Measure)
    task_id = submitter.submit(Measure(), "room1")
    stop = threading.Event()

    task = next(worker.listen(0.1, stop))  # (polling_interval, stop_event)

    assert task.id == task_id
    with pytest.raises(TypeError):
        next(worker.listen("soon", stop))  # type: ignore[call-overload]


def test_fail_by_id_and_cancel_end_held_tasks(
    make_manager: ManagerFactory, submitter: JobManager
) -> None:
    worker = make_manager(ADMIN)
    worker.register(Measure)
    failing = submitter.submit(Measure(), "room1")
    cancelled = submitter.submit(Measure(), "room1")
    by_id = submitter.submit(Measure(), "room1")
    claims = [claim(worker) for _ in range(3)]

    worker.fail_by_id(str(failing), "the room has no frames")
    worker.cancel(claims[1])
    worker.cancel(str(by_id))

    done = {task.id: submitter.wait(task.id, timeout=10) for task in claims}
    assert done[failing].status == TaskStatus.FAILED
    assert done[failing].error == "the room has no frames"
    assert done[cancelled].status == TaskStatus.CANCELLED
    assert done[by_id].status == TaskStatus.CANCELLED
    with pytest.raises(InvalidTaskTransitionError):
        worker.fail_by_id(failing, "again")  # it ended: the server says so


def test_fail_by_id_from_the_running_code_is_the_tasks_one_report(
    make_manager: ManagerFactory, submitter: JobManager
) -> None:
    worker = make_manager(ADMIN)
    worker.register(Measure)
    task_id = submitter.submit(Measure(), "room1")
    task = claim(worker)

    def refuse(vis: Any, **kwargs: Any) -> str:
        worker.fail_by_id(task.task_id, "refused by the host")
        return "not reported: the task already failed"

    status = worker._runner.run(task, lambda: refuse("vis"))

    assert status == TaskStatus.FAILED
    answer = submitter.wait(task_id, timeout=10)
    assert (answer.status, answer.error, answer.result) == (
        TaskStatus.FAILED,
        "refused by the host",
        None,
    )


def test_execute_serves_tasks_in_the_background(
    make_manager: ManagerFactory, submitter: JobManager
) -> None:
    seen: list[str] = []

    def execute(task: ClaimedTask[Any]) -> Any:
        seen.append(task.task_id)
        return task.extension.run(f"vis of {task.room_id}", **task.run_kwargs)

    worker = make_manager(ADMIN, execute=execute, polling_interval=0.1)
    worker.register(Measure, run_kwargs={"model": "m"})
    worker.register(Explode)

    done = submitter.submit(Measure(scale=3), "room1")
    broken = submitter.submit(Explode(), "room2")

    assert submitter.result(done, timeout=10) == {
        "vis": "vis of room1",
        "scale": 3.0,
        "kwargs": {"model": "m"},
    }
    failed = submitter.wait(broken, timeout=10)
    assert failed.status == TaskStatus.FAILED
    assert failed.error == "ValueError: cannot measure in vis of room2"
    assert seen == [str(done), str(broken)]


def test_wait_without_a_task_returns_once_the_manager_closes(
    make_manager: ManagerFactory,
) -> None:
    worker = make_manager(ADMIN, execute=lambda task: None)
    worker.register(Measure)
    thread, outcome = in_thread(worker.wait)  # not the main thread: no signals

    assert thread.is_alive()
    worker.close()
    thread.join(10)

    assert outcome == [None]
    assert worker.worker_id is None


def test_zndraw_socketio_names_our_events_as_the_wire_does() -> None:
    # zndraw-socketio's get_event_name reads `Model.event_name`; a method there
    # went on the wire as the event name (not JSON serializable).
    for event in (*SERVER_EVENTS, *CLIENT_EVENTS):
        name = zndraw_socketio.get_event_name(event)
        assert isinstance(name, str)
        assert name == event.event_name()
    join = JoinJobRoom(job_name="@global:analysis:Measure", worker_id="w")
    assert to_jsonable_python(join) == join.payload()


def test_a_registration_while_wait_blocks_starts_the_claim_loop(
    make_manager: ManagerFactory, submitter: JobManager
) -> None:
    """wait() blocks in one thread; the first registration, from another, starts
    the claim loop, and the tasks it runs are completed with execute's value."""
    worker = make_manager(ADMIN, execute=lambda task: "done", polling_interval=0.1)
    thread, outcome = in_thread(worker.wait)
    worker.register(Measure)
    task_id = submitter.submit(Measure(), "room1")

    assert submitter.result(task_id, timeout=10) == "done"
    worker.close()
    thread.join(10)
    eventually(lambda: outcome == [None], what="wait() to return")


def test_a_zndraw_socketio_wrapper_whose_socket_is_down_does_not_fail_register(
    make_manager: ManagerFactory,
) -> None:
    # python-socketio raises its own error for a socket that is not connected;
    # the wrapper lets it through. The job is registered; the socket's
    # connection will join its room.
    tsio = zndraw_socketio.wrap(socketio.Client())
    worker = make_manager(ADMIN, tsio)

    worker.register(Measure)

    assert MEASURE in worker
    assert worker.claim() is None  # a worker the server knows, with the job
