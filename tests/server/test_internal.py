"""`@internal` jobs run by the server itself: `InProcessExecutor` and its reports."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from joblib_protocol import TaskAvailable, TaskStatusEvent
from joblib_server import (
    Database,
    InProcessExecutor,
    JobLib,
    RecordingEmitter,
    Settings,
    StandaloneSettings,
    TokenAuth,
    create_app,
)
from joblib_server.disconnects import cleanup_worker_by_id
from joblib_server.outcome import Dispatch
from joblib_server.sweeper import sweep_once
from joblib_server.tables import utcnow
from joblib_server.tasks import cleanup_stuck_internal_tasks
from tests.support.command import COMMAND, command_env, serve
from tests.support.internal_jobs import Boom, Double, Gate, Seen, Sleepy
from tests.support.rest import assert_problem, get_task, register, submit
from tests.support.rows import task_row
from tests.support.servers import LiveServer, make_settings, serve_in_thread
from tests.support.sockets import connect_peer
from tests.support.tokens import ADMIN, ALICE, TOKENS, TOKENS_JSON, bearer
from tests.support.waiting import aeventually, eventually

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
DOUBLE = "@internal:modifiers:Double"
BOOM = "@internal:analysis:Boom"
SLEEPY = "@internal:modifiers:Sleepy"
GATE = "@internal:selections:Gate"


@pytest.fixture(autouse=True)
def seen() -> Iterator[type[Seen]]:
    Seen.reset()
    yield Seen
    Seen.release.set()  # nothing left waiting on it


def _executor(concurrency: int = 4) -> InProcessExecutor:
    executor = InProcessExecutor([Boom, Sleepy, Gate], concurrency=concurrency)
    executor.register(Double, unit="cm")
    return executor


async def _started(
    database_url: str,
    emitter: RecordingEmitter,
    executor: InProcessExecutor,
    settings: Settings | None = None,
) -> tuple[JobLib, Database]:
    database = Database.from_url(database_url)
    joblib = JobLib(
        database=database,
        auth=TokenAuth(TOKENS),
        settings=settings or make_settings(),
        emitter=emitter,
        sweeper=False,
        executor=executor,
    )
    return joblib, database


@pytest.fixture
async def internal(
    database_url: str, emitter: RecordingEmitter
) -> AsyncIterator[JobLib]:
    """A JobLib with an in-process executor (concurrency 2), its lifespan entered."""
    joblib, _ = await _started(database_url, emitter, _executor(concurrency=2))
    async with joblib.lifespan():
        yield joblib


@pytest.fixture
async def client(internal: JobLib) -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=[Mount("/v1/joblib", app=internal.asgi_app())])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver/v1/joblib",
        headers=bearer(ALICE),
    ) as client:
        yield client


async def _finished(client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    async def done() -> dict[str, Any]:
        task = await get_task(client, task_id)
        return task if task["status"] in ("completed", "failed", "cancelled") else {}

    return await aeventually(done, what=f"task {task_id} to finish")


def _statuses(emitter: RecordingEmitter, task_id: str) -> list[str]:
    return [
        e.event.status.value
        for e in emitter.sent
        if isinstance(e.event, TaskStatusEvent) and e.event.id == task_id
    ]


async def test_registered_jobs_are_listed_with_their_schemas(
    client: httpx.AsyncClient,
) -> None:
    answer = await client.get("/rooms/room1/jobs")
    names = {job["full_name"] for job in answer.json()["items"]}
    assert {DOUBLE, BOOM, SLEEPY, GATE} <= names
    job = (await client.get(f"/rooms/room1/jobs/{DOUBLE}")).json()
    assert job["schema"] == Double.model_json_schema()
    assert job["workers"] == []


async def test_a_submit_is_claimed_at_once_and_completes_with_no_worker(
    client: httpx.AsyncClient, emitter: RecordingEmitter
) -> None:
    task = await submit(client, DOUBLE, payload={"value": 21})
    assert task["status"] == "claimed"
    assert task["worker_id"] is None
    assert task["queue_position"] is None
    done = await _finished(client, task["id"])
    assert done["status"] == "completed"
    # The host's run_kwargs reach run().
    assert done["result"] == {"value": 42, "unit": "cm"}
    assert done["error_code"] is None
    assert _statuses(emitter, task["id"]) == ["claimed", "running", "completed"]
    assert all(
        e.room == "room:room1"
        for e in emitter.sent
        if isinstance(e.event, TaskStatusEvent)
    )
    # An internal task is never offered to workers.
    assert not [e for e in emitter.sent if isinstance(e.event, TaskAvailable)]


async def test_a_batch_is_claimed_for_the_executor_and_runs_in_full(
    client: httpx.AsyncClient, emitter: RecordingEmitter
) -> None:
    answer = await client.post(
        f"/rooms/room1/tasks/{DOUBLE}/batch",
        json={"payloads": [{"value": n} for n in range(6)]},
    )
    assert answer.status_code == 202, answer.text
    items = answer.json()["items"]
    assert {item["status"] for item in items} == {"claimed"}
    assert {item["queue_position"] for item in items} == {None}
    results = [(await _finished(client, item["id"]))["result"] for item in items]
    assert results == [{"value": 2 * n, "unit": "cm"} for n in range(6)]
    for item in items:
        assert _statuses(emitter, item["id"]) == ["claimed", "running", "completed"]
    assert not [e for e in emitter.sent if isinstance(e.event, TaskAvailable)]


async def test_progress_reaches_the_room(
    client: httpx.AsyncClient, emitter: RecordingEmitter
) -> None:
    task = await submit(client, DOUBLE, payload={"value": 1})
    await _finished(client, task["id"])
    done = await get_task(client, task["id"])
    assert done["progress"] == {"current": 1, "total": 2, "message": "halfway"}


async def test_an_exception_fails_the_task_with_its_message(
    client: httpx.AsyncClient,
) -> None:
    task = await submit(client, BOOM)
    done = await _finished(client, task["id"])
    assert done["status"] == "failed"
    assert done["error"] == "ValueError: boom went the job"
    assert done["error_code"] == "job_failed"


async def test_a_payload_the_schema_refuses_is_refused_at_submit(
    client: httpx.AsyncClient,
) -> None:
    answer = await client.post(
        f"/rooms/room1/tasks/{DOUBLE}", json={"payload": {"value": "many"}}
    )
    assert_problem(answer, 422, "invalid-payload")


async def test_cancel_reaches_the_running_code(
    client: httpx.AsyncClient, seen: type[Seen]
) -> None:
    task = await submit(client, SLEEPY)
    await aeventually(lambda: task["id"] in seen.started, what="its code to run")
    answer = await client.patch(f"/tasks/{task['id']}", json={"status": "cancelled"})
    assert answer.status_code == 200, answer.text
    await aeventually(lambda: task["id"] in seen.cancelled, what="the code to stop")
    assert seen.cancelled[task["id"]] == "cancelled"
    # What the code returned once cancelled is not reported.
    assert (await get_task(client, task["id"]))["status"] == "cancelled"


async def test_a_deadline_fails_the_task_and_stops_its_code(
    client: httpx.AsyncClient, seen: type[Seen]
) -> None:
    answer = await client.post(
        f"/rooms/room1/tasks/{SLEEPY}",
        json={"payload": {}, "timeout_seconds": 0.3},
    )
    task = answer.json()
    done = await _finished(client, task["id"])
    assert done["status"] == "failed"
    assert done["error_code"] == "deadline_exceeded"
    await aeventually(lambda: task["id"] in seen.cancelled, what="the code to stop")
    assert seen.cancelled[task["id"]] == "deadline_exceeded"


async def test_concurrency_is_bounded_and_the_rest_stay_claimed(
    client: httpx.AsyncClient, internal: JobLib, seen: type[Seen]
) -> None:
    tasks = [await submit(client, GATE) for _ in range(4)]

    async def statuses() -> list[str]:
        return sorted([(await get_task(client, t["id"]))["status"] for t in tasks])

    async def two_running() -> bool:
        return await statuses() == ["claimed", "claimed", "running", "running"]

    await aeventually(two_running, what="two tasks running, two waiting")
    await aeventually(lambda: seen.running == 2, what="two jobs in their code")
    seen.release.set()
    for task in tasks:
        assert (await _finished(client, task["id"]))["status"] == "completed"
    assert seen.most_running == 2


async def test_a_cancelled_claim_never_runs(
    client: httpx.AsyncClient, emitter: RecordingEmitter, seen: type[Seen]
) -> None:
    first = [await submit(client, GATE) for _ in range(2)]
    await aeventually(lambda: seen.running == 2, what="both slots taken")
    waiting = await submit(client, DOUBLE)
    answer = await client.patch(f"/tasks/{waiting['id']}", json={"status": "cancelled"})
    assert answer.status_code == 200
    seen.release.set()
    for task in first:
        await _finished(client, task["id"])
    assert _statuses(emitter, waiting["id"]) == ["claimed", "cancelled"]


async def test_a_report_with_another_claim_is_refused(
    internal: JobLib, client: httpx.AsyncClient, seen: type[Seen]
) -> None:
    from joblib_server.executors import Reports

    task = await submit(client, GATE)
    await aeventually(lambda: seen.running == 1, what="the job to run")
    stale = Dispatch(uuid.UUID(task["id"]), GATE, "room1", {}, 1, "inprocess:old")
    reports = Reports(internal)
    assert not await reports.completed(stale, "not mine")
    assert not await reports.failed(stale, "not mine")
    seen.release.set()
    assert (await _finished(client, task["id"]))["status"] == "completed"


async def test_the_job_survives_a_worker_disconnect_cleanup(
    internal: JobLib, client: httpx.AsyncClient
) -> None:
    admin = httpx.AsyncClient(
        transport=client._transport, base_url=client.base_url, headers=bearer(ADMIN)
    )
    async with admin:
        # An admin's worker links itself to the internal job, then goes away:
        # the job is left with no worker and no open task.
        job = await register(
            admin, "@internal", "Double", schema=Double.model_json_schema(), expect=200
        )
        task = await submit(client, DOUBLE)
        await _finished(client, task["id"])
        receipt = await internal.execute(
            cleanup_worker_by_id, uuid.UUID(job["worker_id"])
        )
        assert receipt.jobs_removed == ()
    names = {
        job["full_name"]
        for job in (await client.get("/rooms/room1/jobs")).json()["items"]
    }
    assert DOUBLE in names
    again = await submit(client, DOUBLE, payload={"value": 2})
    assert (await _finished(client, again["id"]))["status"] == "completed"


async def test_stuck_claimed_and_running_tasks_are_swept(
    internal: JobLib, client: httpx.AsyncClient, seen: type[Seen]
) -> None:
    first = [await submit(client, GATE) for _ in range(2)]
    await aeventually(lambda: seen.running == 2, what="both slots taken")
    waiting = await submit(client, GATE)
    assert (await get_task(client, waiting["id"]))["status"] == "claimed"
    later = utcnow() + timedelta(hours=2)
    swept = await internal.execute(cleanup_stuck_internal_tasks, 3600, now=later)
    assert sorted(map(str, swept)) == sorted(t["id"] for t in [*first, waiting])
    for task in [*first, waiting]:
        done = await get_task(client, task["id"])
        assert (done["status"], done["error_code"]) == ("failed", "internal_timed_out")
    # The code of the running ones was told to stop, and the waiting one never ran.
    await aeventually(lambda: seen.running == 0, what="the jobs to stop")
    assert seen.most_running == 2


async def test_the_sweeper_leaves_a_fresh_claim_alone(
    internal: JobLib, client: httpx.AsyncClient, seen: type[Seen]
) -> None:
    first = [await submit(client, GATE) for _ in range(2)]
    await aeventually(lambda: seen.running == 2, what="both slots taken")
    waiting = await submit(client, GATE)
    sweep = await sweep_once(internal)
    assert sweep.internal_tasks == []
    assert sweep.unstarted == []
    assert (await get_task(client, waiting["id"]))["status"] == "claimed"
    seen.release.set()
    for task in [*first, waiting]:
        assert (await _finished(client, task["id"]))["status"] == "completed"


async def test_a_restart_fails_what_the_previous_server_left_claimed_or_running(
    database_url: str, seen: type[Seen]
) -> None:
    before = RecordingEmitter()
    joblib, _ = await _started(database_url, before, _executor(concurrency=1))
    async with joblib.lifespan():
        app = Starlette(routes=[Mount("/v1/joblib", app=joblib.asgi_app())])
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://testserver/v1/joblib",
            headers=bearer(ALICE),
        ) as client:
            task = await submit(client, SLEEPY)
            await aeventually(lambda: task["id"] in seen.started, what="its code")
            waiting = await submit(client, DOUBLE)  # no free thread: stays claimed
    # Its code was told to stop with the server, and nothing was reported.
    await aeventually(lambda: task["id"] in seen.cancelled, what="the code to stop")
    after = RecordingEmitter()
    joblib, _ = await _started(database_url, after, _executor())
    async with joblib.lifespan():
        for left in (task, waiting):
            row = await task_row(joblib, left["id"])
            assert (row.status, row.error_code) == ("failed", "internal_interrupted")
            assert _statuses(after, left["id"]) == ["failed"]


@pytest.fixture
def standalone(database_url: str) -> Iterator[LiveServer]:
    """The standalone app with two internal jobs named in its settings."""
    settings = StandaloneSettings(
        database_url=database_url,
        internal_extensions=[
            "tests.support.internal_jobs:Double",
            "tests.support.internal_jobs:Sleepy",
        ],
        internal_concurrency=1,
        joblib=make_settings(),
    )
    with serve_in_thread(create_app(settings, TokenAuth(TOKENS))) as server:
        yield server


def test_standalone_settings_run_internal_jobs_and_observers_see_them(
    standalone: LiveServer, seen: type[Seen]
) -> None:
    with (
        httpx.Client(base_url=standalone.api, headers=bearer(ALICE)) as client,
        connect_peer(standalone.url, token=ALICE, rooms=("room1",)) as observer,
    ):
        task = client.post(
            f"/rooms/room1/tasks/{DOUBLE}", json={"payload": {"value": 5}}
        ).json()
        assert task["status"] == "claimed"

        def statuses() -> list[str]:
            return [
                data["status"]
                for name, data in list(observer.events)
                if name == "task_status_event" and data["id"] == task["id"]
            ]

        eventually(lambda: "completed" in statuses(), what="the completed event")
        assert statuses() == ["claimed", "running", "completed"]
        assert client.get(f"/tasks/{task['id']}").json()["result"] == {"value": 10}
        # Cancelled through REST, seen in the room, and by the running code.
        sleepy = client.post(f"/rooms/room1/tasks/{SLEEPY}", json={}).json()
        eventually(lambda: sleepy["id"] in seen.started, what="its code to run")
        client.patch(f"/tasks/{sleepy['id']}", json={"status": "cancelled"})
        observer.wait_for(
            lambda e: (
                e[0] == "task_status_event"
                and e[1]["id"] == sleepy["id"]
                and e[1]["status"] == "cancelled"
            )
        )
        eventually(lambda: sleepy["id"] in seen.cancelled, what="the code to stop")


def test_joblib_server_serve_runs_a_module_class_from_its_environment(
    database_url: str, tmp_path: Path
) -> None:
    env = command_env(
        JOBLIB_DATABASE_URL=database_url,
        JOBLIB_TOKENS=TOKENS_JSON,
        JOBLIB_INTERNAL_EXTENSIONS='["tests.support.internal_jobs:Double"]',
        PYTHONPATH=str(ROOT),
    )
    with serve([COMMAND], env, tmp_path) as served, served.client(ALICE) as client:
        task = client.post(
            f"/rooms/room1/tasks/{DOUBLE}", json={"payload": {"value": 7}}
        ).json()
        assert task["status"] == "claimed"

        def result() -> object:
            return client.get(f"/tasks/{task['id']}").json()["result"]

        assert eventually(result, what="the result") == {"value": 14}


async def test_a_rest_report_with_another_claim_id_is_409(
    client: httpx.AsyncClient, seen: type[Seen]
) -> None:
    task = await submit(client, GATE)
    await aeventually(lambda: seen.running == 1, what="the job to run")
    admin = httpx.AsyncClient(
        transport=client._transport, base_url=client.base_url, headers=bearer(ADMIN)
    )
    async with admin:
        for status in ("completed", "failed"):
            answer = await admin.patch(
                f"/tasks/{task['id']}",
                json={"status": status, "claim_id": "inprocess:someone-else"},
            )
            assert_problem(answer, 409, "task-worker-mismatch")
        answer = await admin.put(
            f"/tasks/{task['id']}/progress",
            json={"current": 1, "claim_id": "inprocess:someone-else"},
        )
        assert_problem(answer, 409, "task-worker-mismatch")
    seen.release.set()
    assert (await _finished(client, task["id"]))["status"] == "completed"


async def test_an_idempotent_submit_sent_again_runs_once(
    client: httpx.AsyncClient, emitter: RecordingEmitter
) -> None:
    headers = {"Idempotency-Key": "once"}
    body = {"payload": {"value": 3}}
    first = await client.post(
        f"/rooms/room1/tasks/{DOUBLE}", json=body, headers=headers
    )
    assert first.json()["status"] == "claimed"
    await _finished(client, first.json()["id"])
    again = await client.post(
        f"/rooms/room1/tasks/{DOUBLE}", json=body, headers=headers
    )
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["status"] == "completed"
    assert _statuses(emitter, first.json()["id"]) == ["claimed", "running", "completed"]


async def test_the_readme_internal_job_runs_as_it_says(tmp_path: Path) -> None:
    from tests.integration.test_examples import readme_block

    code = readme_block("internal-example").replace(
        "sqlite:///host.db", f"sqlite:///{tmp_path / 'host.db'}"
    )
    namespace: dict[str, Any] = {}
    exec(code, namespace)  # our own README
    joblib: JobLib = namespace["joblib"]
    joblib.auth = TokenAuth(TOKENS)
    async with joblib.lifespan():
        app = Starlette(routes=[Mount("/v1/joblib", app=joblib.asgi_app())])
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://testserver/v1/joblib",
            headers=bearer(ALICE),
        ) as client:
            task = await submit(client, "@internal:modifiers:Smooth")
            assert task["status"] == "claimed"
            done = await _finished(client, task["id"])
            assert done["result"] == {"passes": 3, "unit": "nm"}
            assert done["progress"]["total"] == 3


def test_an_executor_name_that_cannot_start_a_claim_is_refused(
    tmp_path: Path,
) -> None:
    executor = InProcessExecutor([Double], name="in:process")
    with pytest.raises(ValueError, match="an executor's name"):
        JobLib(
            database=Database.from_url(f"sqlite:///{tmp_path / 'x.db'}"),
            auth=TokenAuth(TOKENS),
            executor=executor,
        )
