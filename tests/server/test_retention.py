"""Retention: the sweeper deletes finished tasks once old, in batches, nothing else."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

import anyio
import httpx
import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from joblib_server import JobLib, Settings, run_sweeper, sweep_once
from joblib_server.retention import delete_finished_tasks
from joblib_server.tables import TASK_TABLE, utcnow
from tests.support.rest import claim, serving_job, submit, update
from tests.support.servers import make_settings
from tests.support.waiting import aeventually

pytestmark = pytest.mark.anyio

WEEK = timedelta(days=7)


async def _age(joblib: JobLib, task_id: str, *, finished: timedelta) -> None:
    """Move a task back in time: submitted a month ago, finished `finished` ago.

    `completed_at` is set whatever the status, so an open task looks as old as
    a finished one.
    """
    now = utcnow()
    async with joblib.database.write() as session:
        await session.execute(
            sa.update(TASK_TABLE)
            .where(TASK_TABLE.c.id == uuid.UUID(task_id))
            .values(created_at=now - timedelta(days=30), completed_at=now - finished)
        )


async def _task_ids(joblib: JobLib) -> set[str]:
    async with joblib.database.read() as session:
        rows = await session.execute(sa.select(TASK_TABLE.c.id))
        return {str(task_id) for task_id in rows.scalars()}


async def _one_of_each(alice: httpx.AsyncClient, job: str) -> dict[str, str]:
    """Tasks in every state, of a new job `job`: status -> task id."""
    worker_id, job_name = await serving_job(alice, name=job)
    ids: dict[str, str] = {}
    for status in ("claimed", "running", "completed", "failed", "cancelled"):
        ids[status] = (await submit(alice, job_name))["id"]
        if status == "cancelled":
            await update(alice, ids[status], "cancelled")
            continue
        assert await claim(alice, worker_id, start=status != "claimed") is not None
        if status in ("completed", "failed"):
            await update(alice, ids[status], status)
    ids["pending"] = (await submit(alice, job_name))["id"]
    return ids


async def test_only_finished_tasks_past_the_retention_are_deleted(
    joblib: JobLib, alice: httpx.AsyncClient
) -> None:
    old = await _one_of_each(alice, "Old")
    for task_id in old.values():
        await _age(joblib, task_id, finished=WEEK + timedelta(hours=1))
    recent = await _one_of_each(alice, "Recent")  # an hour ago: kept
    for task_id in recent.values():
        await _age(joblib, task_id, finished=timedelta(hours=1))

    sweep = await sweep_once(joblib)

    assert sweep.tasks_deleted == 3
    assert sweep  # a sweep that deleted something counts as one that did work
    gone = {old["completed"], old["failed"], old["cancelled"]}
    everything = set(old.values()) | set(recent.values())
    assert await _task_ids(joblib) == everything - gone
    for task_id in gone:
        answer = await alice.get(f"/tasks/{task_id}")
        assert answer.status_code == 404
    for status in ("pending", "claimed", "running"):
        answer = await alice.get(f"/tasks/{old[status]}")
        assert answer.json()["status"] == status
    assert (await sweep_once(joblib)).tasks_deleted == 0


@pytest.mark.parametrize("settings", [make_settings(task_retention_seconds=3600)])
async def test_the_retention_is_a_setting(
    joblib: JobLib, alice: httpx.AsyncClient
) -> None:
    _, job_name = await serving_job(alice)
    ids = []
    for finished in (timedelta(hours=2), timedelta(minutes=30)):
        task_id = (await submit(alice, job_name))["id"]
        await update(alice, task_id, "cancelled")
        await _age(joblib, task_id, finished=finished)
        ids.append(task_id)

    assert (await sweep_once(joblib)).tasks_deleted == 1
    assert await _task_ids(joblib) == {ids[1]}


async def test_finished_tasks_are_deleted_in_batches_oldest_first(
    joblib: JobLib, alice: httpx.AsyncClient
) -> None:
    _, job_name = await serving_job(alice)
    ids = []
    for days in (12, 11, 10, 9, 8):
        task_id = (await submit(alice, job_name))["id"]
        await update(alice, task_id, "cancelled")
        await _age(joblib, task_id, finished=timedelta(days=days))
        ids.append(task_id)
    retention = WEEK.total_seconds()

    deleted = [await joblib.execute(delete_finished_tasks, retention, 2)]
    assert await _task_ids(joblib) == set(ids[2:])  # the two oldest went first
    while deleted[-1]:
        deleted.append(await joblib.execute(delete_finished_tasks, retention, 2))

    assert deleted == [2, 2, 1, 0]
    assert await _task_ids(joblib) == set()


async def test_the_sweeper_logs_how_many_it_deleted(
    joblib: JobLib, alice: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    _, job_name = await serving_job(alice)
    for _ in range(2):
        task_id = (await submit(alice, job_name))["id"]
        await update(alice, task_id, "cancelled")
        await _age(joblib, task_id, finished=WEEK * 2)
    caplog.set_level(logging.INFO, logger="joblib_server.sweeper")

    def logged() -> bool:
        return any(
            "deleted 2 finished tasks" in record.getMessage()
            for record in caplog.records
        )

    async with anyio.create_task_group() as group:
        group.start_soon(run_sweeper, joblib)
        await aeventually(logged, what="the sweep's log line")
        group.cancel_scope.cancel()
    assert await _task_ids(joblib) == set()


@pytest.mark.parametrize("settings", [make_settings(task_retention_seconds=60)])
async def test_a_key_whose_task_was_deleted_makes_a_new_task(
    joblib: JobLib, alice: httpx.AsyncClient
) -> None:
    # The key lives a day, the task only a minute past its finish: sending the
    # key again after the task went makes a new task (as an expired key would).
    _, job_name = await serving_job(alice)

    async def send() -> httpx.Response:
        answer = await alice.post(
            f"/rooms/room1/tasks/{job_name}",
            json={"payload": {}},
            headers={"Idempotency-Key": "order-17"},
        )
        assert answer.status_code == 202, answer.text
        return answer

    first = (await send()).json()["id"]
    await update(alice, first, "cancelled")
    await _age(joblib, first, finished=timedelta(minutes=5))
    assert (await sweep_once(joblib)).tasks_deleted == 1

    again = await send()
    assert "idempotent-replayed" not in again.headers
    assert again.json()["id"] != first
    assert again.json()["status"] == "pending"
    replayed = await send()
    assert replayed.headers["idempotent-replayed"] == "true"
    assert replayed.json()["id"] == again.json()["id"]
    assert await _task_ids(joblib) == {again.json()["id"]}


def test_the_retention_must_be_positive() -> None:
    assert Settings().task_retention_seconds == 7 * 24 * 3600
    with pytest.raises(ValidationError):
        Settings(task_retention_seconds=0)
