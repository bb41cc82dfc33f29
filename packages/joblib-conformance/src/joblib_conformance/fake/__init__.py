"""The client side of the kit: a reference fake server a worker SDK's tests run
against, recording what the worker sends, and the checks of what it must do.

Needs the `fake-server` extra (Starlette, uvicorn). In a test:

    with FakeServer() as fake:
        ...start the worker with fake.url and fake.worker_token...
        session = drive_worker(fake, WorkerScenario(), stop=stop_the_worker)
    report = check_worker(session)
    assert report.ok, report.failed
"""

from joblib_conformance.fake.app import FakeApp
from joblib_conformance.fake.checks import WORKER_CHECKS, WorkerSession
from joblib_conformance.fake.drive import (
    WorkerScenario,
    check_worker,
    check_worker_command,
    drive_worker,
)
from joblib_conformance.fake.recording import Recording, RestCall, SocketCall
from joblib_conformance.fake.server import DRIVER, WORKER, FakeServer

__all__ = [
    "DRIVER",
    "WORKER",
    "WORKER_CHECKS",
    "FakeApp",
    "FakeServer",
    "Recording",
    "RestCall",
    "SocketCall",
    "WorkerScenario",
    "WorkerSession",
    "check_worker",
    "check_worker_command",
    "drive_worker",
]
