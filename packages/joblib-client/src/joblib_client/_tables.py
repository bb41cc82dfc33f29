"""What the `joblib` command shows people: aligned tables, ages, progress, events.

Scripts get the server's JSON instead (`--json`); nothing here is parsed back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from joblib_protocol import (
    JobSummary,
    PaginatedResponse,
    TaskProgress,
    TaskResponse,
    TaskStatus,
    WorkerSummary,
)

SHORT = 40
"""Characters a result or an error keeps in a table row."""

LONG = 2000
"""Characters a payload, result or error keeps in a single task's view."""

_DAY = 86400.0


def shorten(text: str, limit: int = SHORT) -> str:
    """`text` on one line, cut to `limit` characters with an ellipsis."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def compact(value: Any, limit: int = SHORT) -> str:
    """A JSON value as short one-line JSON (`{"angle": 90.0}`)."""
    return shorten(json.dumps(value, ensure_ascii=False), limit)


def when(moment: datetime | None, now: datetime | None = None) -> str:
    """`12 s ago`, `in 3 min` within a day; the ISO time (UTC) beyond; `-` for none."""
    if moment is None:
        return "-"
    now = now or datetime.now(UTC)
    seconds = (now - moment).total_seconds()
    if abs(seconds) >= _DAY:
        return iso(moment)
    size = abs(seconds)
    if size < 1:
        return "just now"
    if size < 60:
        amount = f"{size:.0f} s"
    elif size < 3600:
        amount = f"{size // 60:.0f} min"
    else:
        amount = f"{size // 3600:.0f} h"
    return f"{amount} ago" if seconds > 0 else f"in {amount}"


def iso(moment: datetime) -> str:
    """The moment in UTC to the second: `2024-05-01T12:03:04Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def progress(value: TaskProgress | None, limit: int = SHORT) -> str:
    """`42%`, or the count when the total is unknown, and the message; `-`."""
    if value is None:
        return "-"
    if value.total:
        done = f"{min(value.current / value.total, 1.0) * 100:.0f}%"
    else:
        done = f"{value.current:g}"
    return shorten(f"{done} {value.message}", limit) if value.message else done


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns aligned by the widest cell; the last column is not padded."""
    widths = [len(header) for header in headers]
    for row in rows:
        widths = [
            max(width, len(cell)) for width, cell in zip(widths, row, strict=True)
        ]
    lines = []
    for row in [list(headers), *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _footer(page: PaginatedResponse[Any], noun: str) -> str:
    shown = len(page.items)
    if page.total == 1:
        noun = noun.removesuffix("s")
    if shown == 0:
        return f"no {noun}" if page.offset == 0 else f"no {noun} past {page.offset}"
    first, last = page.offset + 1, page.offset + shown
    if page.offset == 0 and shown >= page.total:
        return f"{page.total} {noun}"
    return f"{noun} {first}-{last} of {page.total} (--limit and --offset page on)"


def workers_table(page: PaginatedResponse[WorkerSummary]) -> str:
    """`joblib workers`."""
    rows = [
        [str(worker.id), str(worker.job_count), when(worker.last_heartbeat)]
        for worker in page.items
    ]
    return _with_footer(
        ["WORKER", "JOBS", "LAST HEARTBEAT"], rows, _footer(page, "workers")
    )


def jobs_table(page: PaginatedResponse[JobSummary]) -> str:
    """`joblib jobs`."""
    rows = [[job.full_name, job.category, str(len(job.workers))] for job in page.items]
    return _with_footer(["JOB", "CATEGORY", "WORKERS"], rows, _footer(page, "jobs"))


def _status(task: TaskResponse) -> str:
    status = task.status.value
    if task.status == TaskStatus.PENDING and task.queue_position is not None:
        return f"{status} #{task.queue_position}"
    if task.attempt > 1:
        return f"{status} (attempt {task.attempt})"
    return status


def outcome(task: TaskResponse, limit: int = SHORT) -> str:
    """What a finished task came to: its result, or its error (with its code)."""
    if task.status == TaskStatus.COMPLETED:
        return compact(task.result, limit)
    if task.error is not None or task.error_code is not None:
        code = f"[{task.error_code.value}] " if task.error_code is not None else ""
        return shorten(f"{code}{task.error or ''}", limit)
    return "-"


def tasks_table(page: PaginatedResponse[TaskResponse]) -> str:
    """`joblib tasks`."""
    rows = [
        [
            str(task.id),
            task.job_name,
            _status(task),
            when(task.created_at),
            progress(task.progress, 24),
            outcome(task),
        ]
        for task in page.items
    ]
    headers = ["TASK", "JOB", "STATUS", "CREATED", "PROGRESS", "RESULT / ERROR"]
    return _with_footer(headers, rows, _footer(page, "tasks"))


def _with_footer(headers: Sequence[str], rows: list[list[str]], footer: str) -> str:
    return f"{table(headers, rows)}\n{footer}" if rows else footer


def _moment(moment: datetime | None) -> str:
    return "-" if moment is None else f"{when(moment)} ({iso(moment)})"


def task_view(task: TaskResponse) -> str:
    """`joblib task ID`: one field a line."""
    fields: list[tuple[str, str]] = [
        ("task", str(task.id)),
        ("job", task.job_name),
        ("room", task.room_id),
        ("status", _status(task)),
        ("worker", str(task.worker_id) if task.worker_id else "-"),
        ("created", _moment(task.created_at)),
        ("started", _moment(task.started_at)),
        ("completed", _moment(task.completed_at)),
    ]
    if task.deadline_at is not None:
        fields.append(("deadline", _moment(task.deadline_at)))
    if task.expires_at is not None:
        fields.append(("expires", _moment(task.expires_at)))
    fields.append(("progress", progress(task.progress, LONG)))
    fields.append(("payload", compact(task.payload, LONG)))
    if task.status == TaskStatus.COMPLETED:
        fields.append(("result", compact(task.result, LONG)))
    if task.error is not None or task.error_code is not None:
        fields.append(("error", outcome(task, LONG)))
    width = max(len(name) for name, _ in fields)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in fields)


def event_line(name: str, data: Any, now: datetime | None = None) -> str:
    """One line for an event `joblib watch` heard (its local time first)."""
    stamp = (now or datetime.now()).strftime("%H:%M:%S")
    data = data if isinstance(data, dict) else {}
    if name == "task_status_event":
        parts = [str(data.get("id")), str(data.get("name")), str(data.get("status"))]
        if data.get("queue_position") is not None:
            parts[-1] += f" #{data['queue_position']}"
        if data.get("worker_id"):
            parts.append(f"worker {data['worker_id']}")
        if data.get("error") or data.get("error_code"):
            code = f"[{data['error_code']}] " if data.get("error_code") else ""
            parts.append(shorten(f"{code}{data.get('error') or ''}", 60))
        return f"{stamp}  status    " + "  ".join(parts)
    if name == "task_progress_event":
        try:
            value: TaskProgress | None = TaskProgress.model_validate(
                data.get("progress")
            )
        except ValueError:
            value = None
        return f"{stamp}  progress  {data.get('id')}  {progress(value, 60)}"
    if name == "jobs_invalidate":
        return f"{stamp}  jobs      the job list changed"
    return f"{stamp}  {name}  {compact(data, 60)}"
