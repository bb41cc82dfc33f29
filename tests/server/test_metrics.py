"""`/metrics`: Prometheus text an admin reads, moved by real tasks, read from the DB."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.routing import Mount

from joblib_server import Database, JobLib, Settings, TokenAuth
from joblib_server.health import health_routes
from joblib_server.metrics import OTHER_JOBS, read_task_counts
from joblib_server.tables import TASK_TABLE
from tests.support.rest import (
    ClientFactory,
    assert_problem,
    claim,
    rest,
    serving_job,
    submit,
    update,
)
from tests.support.servers import LiveServer, free_port, make_settings
from tests.support.sockets import connect_peer
from tests.support.tokens import ADMIN, ALICE, TOKENS, bearer
from tests.support.waiting import eventually

pytestmark = pytest.mark.anyio

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series is not there (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def present(samples: Samples, name: str, **labels: str) -> bool:
    """Whether the series is there (a zero is there; a missing series is not)."""
    return (name, frozenset(labels.items())) in samples


@pytest.fixture
async def scraper(joblib: JobLib) -> AsyncIterator[ClientFactory]:
    """Clients of an app with the REST API and the health routes, as a token."""
    app = Starlette(
        routes=[Mount("/v1/joblib", app=joblib.asgi_app()), *health_routes(joblib)]
    )
    clients: list[httpx.AsyncClient] = []

    def factory(token: str | None = ADMIN) -> httpx.AsyncClient:
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://testserver",
            headers=bearer(token),
        )
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.aclose()


async def scrape(client: httpx.AsyncClient) -> Samples:
    answer = await client.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(answer.text)


async def test_metrics_take_an_admins_token(scraper: ClientFactory) -> None:
    body = assert_problem(await scraper(None).get("/metrics"), 401, "unauthorized")
    assert "metrics_public" in body["detail"]
    assert_problem(await scraper("nobody").get("/metrics"), 401, "unauthorized")
    assert_problem(await scraper(ALICE).get("/metrics"), 403, "forbidden")
    samples = await scrape(scraper(ADMIN))
    assert value(samples, "joblib_database_up") == 1


@pytest.mark.parametrize("settings", [make_settings(metrics_public=True)])
async def test_metrics_public_needs_no_token(scraper: ClientFactory) -> None:
    samples = await scrape(scraper(None))
    assert value(samples, "joblib_tasks_claimed_total") == 0


async def test_counters_and_histograms_move_with_a_task_through_rest(
    make_client: ClientFactory, scraper: ClientFactory
) -> None:
    alice = make_client(ALICE)
    admin = scraper(ADMIN)
    worker_id, job_name = await serving_job(alice)

    task = await submit(alice, job_name)
    assert await claim(alice, worker_id) is not None
    await update(alice, task["id"], "running")
    await update(alice, task["id"], "completed")

    samples = await scrape(admin)
    assert value(samples, "joblib_tasks_claimed_total") == 1
    assert value(samples, "joblib_task_dispatch_seconds_count") == 1
    dispatch = value(samples, "joblib_task_dispatch_seconds_sum")
    assert 0 <= dispatch < 10
    assert value(samples, "joblib_task_run_seconds_count", status="completed") == 1
    finished = {"status": "completed", "error_code": ""}
    assert value(samples, "joblib_tasks_finished_total", **finished) == 1

    # A claim that starts at once is one claim and one start, not two claims.
    second = await submit(alice, job_name)
    started = await claim(alice, worker_id, start=True)
    assert started is not None
    assert started["id"] == second["id"]
    await update(alice, second["id"], "failed", "it broke")
    # A cancelled pending task finishes without having run.
    third = await submit(alice, job_name)
    await update(alice, third["id"], "cancelled")

    samples = await scrape(admin)
    assert value(samples, "joblib_tasks_claimed_total") == 2
    assert value(samples, "joblib_task_dispatch_seconds_count") == 2
    failed = {"status": "failed", "error_code": "job_failed"}
    assert value(samples, "joblib_tasks_finished_total", **failed) == 1
    cancelled = {"status": "cancelled", "error_code": ""}
    assert value(samples, "joblib_tasks_finished_total", **cancelled) == 1
    assert value(samples, "joblib_task_run_seconds_count", status="failed") == 1
    assert value(samples, "joblib_task_run_seconds_count", status="cancelled") == 0


async def test_cleanups_are_counted_by_error_code(
    make_client: ClientFactory, scraper: ClientFactory
) -> None:
    alice = make_client(ALICE)
    worker_id, job_name = await serving_job(alice)
    task = await submit(alice, job_name)
    assert await claim(alice, worker_id, start=True) is not None

    assert (await alice.delete(f"/workers/{worker_id}")).status_code == 204

    samples = await scrape(scraper(ADMIN))
    removed = {"status": "failed", "error_code": "worker_removed"}
    assert value(samples, "joblib_tasks_finished_total", **removed) == 1
    assert (await alice.get(f"/tasks/{task['id']}")).json()["status"] == "failed"


async def test_tasks_by_status_and_queue_depth_are_read_from_the_database(
    joblib: JobLib, make_client: ClientFactory, scraper: ClientFactory
) -> None:
    alice = make_client(ALICE)
    admin = scraper(ADMIN)
    worker_id, job_name = await serving_job(alice)
    _, idle_job = await serving_job(alice, name="Idle")
    ids = [(await submit(alice, job_name))["id"] for _ in range(3)]
    assert await claim(alice, worker_id) is not None

    samples = await scrape(admin)
    assert value(samples, "joblib_tasks", job=job_name, status="pending") == 2
    assert value(samples, "joblib_tasks", job=job_name, status="claimed") == 1
    assert present(samples, "joblib_tasks", job=job_name, status="running")
    assert value(samples, "joblib_tasks", job=job_name, status="running") == 0
    assert value(samples, "joblib_queue_depth", job=job_name) == 2
    assert present(samples, "joblib_queue_depth", job=idle_job)
    assert value(samples, "joblib_queue_depth", job=idle_job) == 0

    # Changed behind the server's back: the next scrape sees the rows as they are.
    async with joblib.database.write() as session:
        await session.execute(
            sa.delete(TASK_TABLE).where(TASK_TABLE.c.id == uuid.UUID(ids[2]))
        )
    samples = await scrape(admin)
    assert value(samples, "joblib_queue_depth", job=job_name) == 1


async def test_only_the_biggest_jobs_are_reported_one_by_one(
    joblib: JobLib, make_client: ClientFactory
) -> None:
    alice = make_client(ALICE)
    names = []
    for name, tasks in (("Big", 3), ("Middle", 2), ("Small", 1)):
        _, job_name = await serving_job(alice, name=name)
        names.append(job_name)
        for _ in range(tasks):
            await submit(alice, job_name)

    counts, other = await read_task_counts(joblib.database, max_jobs=2)

    assert list(counts) == [names[0], names[1], OTHER_JOBS]
    assert counts[names[0]]["pending"] == 3
    assert counts[OTHER_JOBS]["pending"] == 1
    assert other == 1


async def test_each_joblib_counts_its_own_changes(
    database_url: str, joblib: JobLib, make_client: ClientFactory
) -> None:
    alice = make_client(ALICE)
    worker_id, job_name = await serving_job(alice)
    await submit(alice, job_name)
    assert await claim(alice, worker_id) is not None

    other = JobLib(
        database=Database.from_url(database_url),
        auth=TokenAuth(TOKENS),
        settings=Settings(metrics_public=True),
        sweeper=False,
    )
    try:
        app = Starlette(routes=health_routes(other))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as client:
            samples = await scrape(client)
    finally:
        await other.database.dispose()
    assert value(samples, "joblib_tasks_claimed_total") == 0  # not the other's
    assert value(samples, "joblib_tasks", job=job_name, status="claimed") == 1


async def test_metrics_answer_without_the_database(
    database_url: str, tmp_path: Path
) -> None:
    if database_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'no-such-directory' / 'joblib.db'}"
    else:
        url = f"postgresql://postgres@127.0.0.1:{free_port()}/joblib"
    joblib = JobLib(
        database=Database.from_url(url),
        auth=TokenAuth(TOKENS),
        settings=Settings(metrics_public=True),
        sweeper=False,
    )
    try:
        app = Starlette(routes=health_routes(joblib))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as client:
            samples = await scrape(client)
    finally:
        await joblib.database.dispose()
    assert value(samples, "joblib_database_up") == 0
    assert not any(name == "joblib_tasks" for name, _ in samples)
    assert present(samples, "joblib_tasks_claimed_total")


def test_the_standalone_server_counts_worker_and_observer_sockets(
    live_server: LiveServer,
) -> None:
    def sockets() -> Samples:
        answer = httpx.get(f"{live_server.url}/metrics", headers=bearer(ADMIN))
        assert answer.status_code == 200, answer.text
        return parse(answer.text)

    with rest(live_server.api, ALICE) as alice:
        job = alice.put(
            "/rooms/room1/jobs",
            json={"category": "modifiers", "name": "Rotate", "schema": {}},
        ).json()
    join = {"job_name": job["full_name"], "worker_id": job["worker_id"]}
    with (
        connect_peer(live_server.url, token=ALICE) as worker,
        connect_peer(live_server.url, token=ADMIN, rooms=("room1",)),
    ):
        assert worker.call("join_job_room", join)["ok"] is True
        samples = sockets()
        assert value(samples, "joblib_sockets", kind="worker") == 1
        assert value(samples, "joblib_sockets", kind="observer") == 1
        assert value(samples, "process_resident_memory_bytes") > 0

    eventually(
        lambda: (
            value(sockets(), "joblib_sockets", kind="worker") == 0
            and value(sockets(), "joblib_sockets", kind="observer") == 0
        ),
        what="the closed sockets to be gone from the gauge",
    )


async def test_database_statements_are_counted(
    make_client: ClientFactory, scraper: ClientFactory
) -> None:
    alice = make_client(ALICE)
    admin = scraper(ADMIN)
    before = value(await scrape(admin), "joblib_db_statements_total")
    worker_id, job_name = await serving_job(alice)
    await submit(alice, job_name)
    assert await claim(alice, worker_id) is not None
    after = value(await scrape(admin), "joblib_db_statements_total")
    # Registering, submitting and claiming take several statements each.
    assert after - before >= 4
