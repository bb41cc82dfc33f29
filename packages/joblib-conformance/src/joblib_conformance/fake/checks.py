"""What a well-behaved worker does, judged from what the fake server recorded.

Groups: `worker` (what any worker of the zndraw-joblib API must do) and
`worker-ours` (what a worker of ours does on top: fenced reports, and progress
reports, if it sends any, only while its task runs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from joblib_conformance import expect
from joblib_conformance.checks import CheckSkipped, Registry
from joblib_conformance.fake.recording import Recording, RestCall, SocketCall
from joblib_conformance.fake.server import WORKER
from joblib_protocol import JoinJobRoom, LeaveJobRoom, TaskStatus, is_terminal

WORKER_CHECKS = Registry("worker")
"""Checks of a worker's behaviour, run over a `WorkerSession`."""

check = WORKER_CHECKS.check

_JOBS = re.compile(r"^/rooms/[^/]+/jobs$")
_WORKER = re.compile(r"^/workers/([^/]+)$")
_TASK = re.compile(r"^/tasks/([0-9a-fA-F-]{36})$")
_PROGRESS = re.compile(r"^/tasks/([0-9a-fA-F-]{36})/progress$")


@dataclass(frozen=True)
class Registration:
    """A job the worker registered: when (the answer's time), what, as whom."""

    at: float
    full_name: str
    worker_id: str


@dataclass
class WorkerSession:
    """What happened while a worker ran against the fake server.

    `stopped_at` is when the worker was asked to stop (`time.monotonic()`);
    `heartbeat_within` is how soon after registering it must heartbeat.
    """

    recording: Recording
    heartbeat_within: float
    tasks: list[str] = field(default_factory=list)
    stopped_at: float | None = None
    identity: str = WORKER

    def rest(self) -> list[RestCall]:
        """The worker's REST calls."""
        return self.recording.rest(self.identity)

    def sockets(self) -> list[SocketCall]:
        """The worker's socket events."""
        return self.recording.socket(self.identity)

    def registrations(self) -> list[Registration]:
        """Each job registration the server accepted."""
        return [
            Registration(c.at, str(c.answer["full_name"]), str(c.answer["worker_id"]))
            for c in self.rest()
            if c.method == "PUT"
            and _JOBS.match(c.path)
            and c.status in (200, 201)
            and isinstance(c.answer, dict)
        ]

    def worker_ids(self) -> list[str]:
        """The workers it registered jobs for, first seen first."""
        return list(dict.fromkeys(r.worker_id for r in self.registrations()))

    def calls_to(self, method: str, pattern: re.Pattern[str]) -> list[RestCall]:
        """Its REST calls of `method` whose path matches `pattern`."""
        return [c for c in self.rest() if c.method == method and pattern.match(c.path)]

    def events(self, name: str) -> list[SocketCall]:
        """Its socket events called `name`."""
        return [c for c in self.sockets() if c.event == name]


def _ok(ack: Any) -> bool:
    return not (isinstance(ack, dict) and ack.get("ok") is False)


def _field(data: Any, name: str) -> Any:
    return data.get(name) if isinstance(data, dict) else None


@check("worker.auth", "every request and socket handshake carries valid credentials")
def _auth(session: WorkerSession) -> None:
    expect.that(session.rest(), "the worker to make requests", "none at all")
    strangers = [
        f"{c.method} {c.path}" for c in session.recording.rest() if c.identity is None
    ]
    refused = [
        c.sid
        for c in session.recording.socket()
        if c.event == "connect" and c.ack is False
    ]
    expect.that(not strangers, "no request without valid credentials", strangers)
    expect.that(not refused, "no refused socket handshake", refused)


@check(
    "worker.register",
    "registers its jobs with PUT /rooms/{room}/jobs, and the server accepts them",
)
def _register(session: WorkerSession) -> None:
    puts = session.calls_to("PUT", _JOBS)
    expect.that(puts, "at least one PUT /rooms/{room}/jobs", "none")
    refused = [(c.path, c.status, c.answer) for c in puts if c.status >= 400]
    expect.that(not refused, "every registration accepted", refused)


@check(
    "worker.join-after-register",
    "after registering a job it sends join_job_room with that job and the "
    "worker_id the server gave it, and the server accepts it",
)
def _join_after_register(session: WorkerSession) -> None:
    registrations = session.registrations()
    expect.that(registrations, "a registered job", "none")
    joins = session.events(JoinJobRoom.event_name)
    missing = []
    for job in registrations:
        found = [
            c
            for c in joins
            if c.at >= job.at
            and _field(c.data, "job_name") == job.full_name
            and _field(c.data, "worker_id") == job.worker_id
            and _ok(c.ack)
        ]
        if not found:
            missing.append((job.full_name, job.worker_id))
    shown = [(c.data, c.ack) for c in joins]
    expect.that(
        not missing,
        f"an accepted join_job_room after each registration; missing {missing}",
        f"join_job_room events {shown}",
    )


@check(
    "worker.heartbeat",
    "heartbeats each worker (PATCH /workers/{id}) within the allowed time of "
    "registering it, and keeps doing so",
)
def _heartbeat(session: WorkerSession) -> None:
    within = session.heartbeat_within
    registrations = session.registrations()
    expect.that(registrations, "a registered job", "none")
    for worker_id in session.worker_ids():
        start = min(r.at for r in registrations if r.worker_id == worker_id)
        beats = [
            c.at
            for c in session.calls_to("PATCH", _WORKER)
            if c.path == f"/workers/{worker_id}" and c.status == 200
        ]
        end = _gone_at(session, worker_id)
        times = [start, *sorted(beats)]
        if end is not None:
            times.append(end)
        gaps = [later - earlier for earlier, later in pairwise(times)]
        expect.that(
            beats,
            f"a heartbeat of worker {worker_id} within {within:g} s",
            "none",
        )
        expect.that(
            max(gaps) <= within,
            f"no more than {within:g} s without a heartbeat of {worker_id}",
            f"a gap of {max(gaps):.1f} s",
        )


def _gone_at(session: WorkerSession, worker_id: str) -> float | None:
    deletes = [
        c.at
        for c in session.calls_to("DELETE", _WORKER)
        if c.path == f"/workers/{worker_id}"
    ]
    return min(deletes) if deletes else session.stopped_at


def _claims(session: WorkerSession) -> list[RestCall]:
    return [
        c for c in session.rest() if c.method == "POST" and c.path == "/tasks/claim"
    ]


def _claimed(session: WorkerSession) -> dict[str, tuple[str, str]]:
    """Task id -> (the worker that claimed it, the status the claim answered)."""
    got = {}
    for call in _claims(session):
        task = _field(call.answer, "task")
        if call.status == 200 and isinstance(task, dict):
            got[str(task["id"])] = (str(_field(call.body, "worker_id")), task["status"])
    return got


@check(
    "worker.claims",
    "claims with POST /tasks/claim for its own workers only, every claim accepted",
)
def _claims_check(session: WorkerSession) -> None:
    claims = _claims(session)
    expect.that(claims, "at least one claim", "none")
    own = set(session.worker_ids())
    strange = [
        (_field(c.body, "worker_id"), c.status)
        for c in claims
        if c.status != 200 or _field(c.body, "worker_id") not in own
    ]
    expect.that(not strange, f"claims for {sorted(own)} answered 200", strange)
    missing = [t for t in session.tasks if t not in _claimed(session)]
    expect.that(not missing, "every submitted task claimed", missing)


def _reports(session: WorkerSession, task_id: str) -> list[RestCall]:
    return [
        c for c in session.calls_to("PATCH", _TASK) if c.path == f"/tasks/{task_id}"
    ]


@check(
    "worker.reports",
    "reports each task it claimed running, then completed or failed; the server "
    "accepts every report",
)
def _reports_check(session: WorkerSession) -> None:
    claimed = _claimed(session)
    expect.that(claimed, "a claimed task", "none")
    for task_id, (_worker, status) in claimed.items():
        reports = _reports(session, task_id)
        statuses = [status] + [str(_field(c.body, "status")) for c in reports]
        refused = [(c.status, c.answer) for c in reports if c.status != 200]
        expect.that(not refused, f"every report of {task_id} accepted", refused)
        ran = TaskStatus.RUNNING.value in statuses
        finished = bool(statuses) and is_terminal(statuses[-1])
        expect.that(
            ran and finished and statuses[-1] != TaskStatus.CANCELLED.value,
            f"task {task_id} reported running, then completed or failed",
            statuses,
        )


@check(
    "worker-ours.fenced-reports",
    "every report (PATCH /tasks/{id}) names the worker that claimed the task",
)
def _fenced(session: WorkerSession) -> None:
    claimed = _claimed(session)
    expect.that(claimed, "a claimed task", "none")
    unfenced = []
    for task_id, (worker_id, _status) in claimed.items():
        for report in _reports(session, task_id):
            if _field(report.body, "worker_id") != worker_id:
                unfenced.append((task_id, report.body))
    expect.that(not unfenced, "worker_id in every report body", unfenced)


@check(
    "worker-ours.progress",
    "its progress reports (PUT /tasks/{id}/progress), if any, name the worker "
    "that claimed the task and come while it runs, before its final report: "
    "each accepted (204)",
)
def _progress(session: WorkerSession) -> None:
    reports = session.calls_to("PUT", _PROGRESS)
    if not reports:
        raise CheckSkipped("the worker sent no progress report")
    claimed = _claimed(session)
    wrong = []
    for report in reports:
        match = _PROGRESS.match(report.path)
        assert match is not None
        worker_id = claimed.get(match.group(1), (None, None))[0]
        if _field(report.body, "worker_id") != worker_id or report.status != 204:
            wrong.append((report.path, report.body, report.status, report.answer))
    expect.that(
        not wrong,
        "progress only for tasks it claimed, naming their worker, each 204",
        wrong[:5],
    )


@check(
    "worker.leave-and-delete",
    "when stopped it sends leave_job_room for each job it joined, then DELETE "
    "/workers/{id}, and nothing as that worker afterwards",
)
def _leave_and_delete(session: WorkerSession) -> None:
    expect.that(session.stopped_at is not None, "the worker to be stopped", "no stop")
    joined = {
        (_field(c.data, "job_name"), _field(c.data, "worker_id"))
        for c in session.events(JoinJobRoom.event_name)
        if _ok(c.ack)
    }
    leaves = [c for c in session.events(LeaveJobRoom.event_name) if _ok(c.ack)]
    for worker_id in session.worker_ids():
        deletes = [
            c
            for c in session.calls_to("DELETE", _WORKER)
            if c.path == f"/workers/{worker_id}" and c.status in (200, 204)
        ]
        expect.that(deletes, f"DELETE /workers/{worker_id} accepted", "none")
        deleted = deletes[0].at
        for job_name, joined_as in sorted(joined):
            if joined_as != worker_id:
                continue
            left = [
                c
                for c in leaves
                if c.at <= deleted
                and _field(c.data, "job_name") == job_name
                and _field(c.data, "worker_id") == worker_id
            ]
            expect.that(
                left,
                f"leave_job_room {job_name} before DELETE /workers/{worker_id}",
                [c.data for c in leaves],
            )
        after = [
            f"{c.method} {c.path}"
            for c in session.rest()
            if c.at > deleted and worker_id in f"{c.path} {c.body}"
        ]
        expect.that(not after, f"nothing as {worker_id} once deleted", after)
