"""Moved to `tests.support.rest` and `tests.support.rows`; kept while imports move."""

from tests.support.rest import (
    JSON,
    ROOM,
    SCHEMA,
    assert_problem,
    claim,
    claimed_task,
    create_worker,
    events,
    full_name,
    get_task,
    parse_time,
    register,
    serving_job,
    submit,
    update,
)
from tests.support.rows import TABLES, job_row, row_counts, snapshot, task_row

__all__ = [
    "JSON",
    "ROOM",
    "SCHEMA",
    "TABLES",
    "assert_problem",
    "claim",
    "claimed_task",
    "create_worker",
    "events",
    "full_name",
    "get_task",
    "job_row",
    "parse_time",
    "register",
    "row_counts",
    "serving_job",
    "snapshot",
    "submit",
    "task_row",
    "update",
]
