"""What `joblib` shows people: ages, progress, aligned columns, event lines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from joblib_client._tables import event_line, progress, shorten, table, when
from joblib_protocol import TaskProgress

NOW = datetime(2025, 5, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("delta", "shown"),
    [
        (timedelta(0), "just now"),
        (timedelta(seconds=-12), "12 s ago"),
        (timedelta(minutes=-3, seconds=-20), "3 min ago"),
        (timedelta(hours=-5), "5 h ago"),
        (timedelta(seconds=30), "in 30 s"),
        (timedelta(days=-2), "2025-04-29T12:00:00Z"),
    ],
)
def test_times_are_relative_within_a_day(delta: timedelta, shown: str) -> None:
    assert when(NOW + delta, NOW) == shown
    assert when(None, NOW) == "-"


def test_progress_is_a_percentage_when_the_total_is_known() -> None:
    assert progress(TaskProgress(current=21, total=50)) == "42%"
    assert progress(TaskProgress(current=3, message="frames")) == "3 frames"
    assert progress(TaskProgress(current=1, total=4, message="x" * 80), 12) == (
        "25% xxxxxxx…"
    )
    assert progress(None) == "-"


def test_long_text_is_cut_to_one_line() -> None:
    assert shorten("a\nb   c") == "a b c"
    assert shorten("x" * 50, 10) == "x" * 9 + "…"


def test_columns_are_aligned() -> None:
    shown = table(["ID", "STATUS"], [["1", "pending"], ["1234", "failed"]])

    assert shown.splitlines() == ["ID    STATUS", "1     pending", "1234  failed"]


def test_event_lines() -> None:
    status = {
        "id": "t1",
        "name": "@global:analysis:Explode",
        "status": "failed",
        "error": "ValueError: boom",
        "error_code": "job_error",
    }
    moved = {"id": "t1", "room_id": "r", "progress": {"current": 1, "total": 2}}

    assert event_line("task_status_event", status, NOW) == (
        "12:00:00  status    t1  @global:analysis:Explode  failed  "
        "[job_error] ValueError: boom"
    )
    assert event_line("task_progress_event", moved, NOW) == (
        "12:00:00  progress  t1  50%"
    )
    assert event_line("jobs_invalidate", {}, NOW) == (
        "12:00:00  jobs      the job list changed"
    )
