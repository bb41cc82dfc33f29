"""The printed report and the JSON line that carries every result.

Printed: the HTTP floor; a throughput table (one line per database and case); and a
table of the other metrics with one column per database, the issue's target and a
PASS/MISS verdict per database. Metric rows are declared once (`Row`): a label, how
to read the value from one database's results, and optionally a target and its
check. A check returns None where a target does not apply (the HTTP-floor fraction
is a SQLite target; "PostgreSQL with 16 workers vs SQLite with 4" a PostgreSQL one).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from bench.config import Config

Results = dict[str, Any]
# A value is a number, a preformatted string, or None when not measured.
Value = Callable[[Results, Results], Any]
Check = Callable[[float, str, Results], bool | None]

MAX_REQUESTS_PER_TASK = 3.0
FLOOR_FRACTION = 0.70
BACKLOG_RATIO = 1.5
RSS_GROWTH_MIB = 2.0
CANCEL_SEEN_MS = 20.0
VALIDATION_OVERHEAD_PCT = 10.0
CROSS_DISPATCH_MS = 20.0
BATCH_SERVER_SECONDS = 1.0
IDLE_CPU = 0.05
IDLE_WORKERS = 1000


@dataclass(frozen=True)
class Row:
    """One metric per database, with an optional target."""

    section: str
    metric: str
    value: Value
    unit: str = ""
    target: str = ""
    check: Check | None = None


def _get(data: Any, *path: str | int) -> Any:
    for key in path:
        if isinstance(data, dict):
            data = data.get(key)
        elif isinstance(data, list) and isinstance(key, int) and data:
            data = data[key] if -len(data) <= key < len(data) else None
        else:
            return None
    return data


def _at(*path: str | int) -> Value:
    return lambda db, everything: _get(db, *path)


def _floor_fraction(db: Results, everything: Results, case: str) -> float | None:
    rate = _get(db, "throughput", "cases", case, "requests_per_s")
    floor = _get(everything, "floor", "requests_per_s")
    return None if rate is None or not floor else rate / floor


def _backlog_ratio(route: str) -> Value:
    def value(db: Results, everything: Results) -> float | None:
        top = _get(db, "backlog", "levels", -1, f"{route}_ms", "p50")
        empty = _get(db, "backlog", "levels", 0, f"{route}_ms", "p50")
        return None if top is None or not empty else top / empty

    return value


def _control_ratio(route: str) -> Value:
    def value(db: Results, everything: Results) -> float | None:
        top = _get(db, "backlog", "levels", -1, f"{route}_ms", "p50")
        control = _get(db, "backlog", "levels", -1, "control_ms", route, "p50")
        return None if top is None or not control else top / control

    return value


def _at_most(limit: float) -> Check:
    return lambda value, db, everything: value <= limit


def _rounded_at_most(limit: float) -> Check:
    # Judged to 2 decimals: 3.002 (one worker's final empty claim) is a 3.
    return lambda value, db, everything: round(value, 2) <= limit


def _below(limit: float) -> Check:
    return lambda value, db, everything: value < limit


def _on_sqlite_at_least(limit: float) -> Check:
    return lambda value, db, everything: value >= limit if db == "sqlite" else None


def _postgres_beats_sqlite(value: float, db: str, everything: Results) -> bool | None:
    sqlite = _get(everything, "databases", "sqlite", "throughput", "cases", "stream-4")
    rate = _get(sqlite, "tasks_per_s")
    return value >= rate if db == "postgresql" and rate is not None else None


def _p50_row(section: str, label: str, *path: str, target: str, check: Check) -> Row:
    return Row(section, f"{label} p50", _at(section, *path, "p50"), "ms", target, check)


def _spread_row(section: str, label: str, *path: str) -> Row:
    def value(db: Results, everything: Results) -> Any:
        summary = _get(db, section, *path)
        return None if not summary else _triple(summary)

    return Row(section, f"{label} p50/p95/p99", value, "ms")


def _throughput_rows(config: Config) -> Iterator[Row]:
    yield Row(
        "throughput",
        "4 workers (stream) requests/s, share of HTTP floor",
        lambda db, everything: _floor_fraction(db, everything, "stream-4"),
        "",
        f"≥ {FLOOR_FRACTION:.2f} on SQLite",
        _on_sqlite_at_least(FLOOR_FRACTION),
    )
    for workers in config.workers:
        for mode in ("stream", "backlog"):
            yield Row(
                "throughput",
                f"requests/task, {mode} {workers}w",
                _at("throughput", "cases", f"{mode}-{workers}", "requests_per_task"),
                "",
                f"≤ {MAX_REQUESTS_PER_TASK:.2f}",
                _rounded_at_most(MAX_REQUESTS_PER_TASK),
            )
    if 16 in config.workers and 4 in config.workers:
        yield Row(
            "throughput",
            "16 workers (stream)",
            _at("throughput", "cases", "stream-16", "tasks_per_s"),
            "tasks/s",
            "PostgreSQL ≥ SQLite 4w",
            _postgres_beats_sqlite,
        )


def _latency_rows(config: Config) -> Iterator[Row]:
    socket = ("socket_dispatch", "to_claim_ms")
    yield _p50_row(
        "latency", "socket-woken dispatch", *socket, target="< 5", check=_below(5)
    )
    yield _spread_row("latency", "socket-woken dispatch", *socket)
    yield _spread_row("latency", "  its server part", "socket_dispatch", "server_ms")
    parked = ("parked_claim_dispatch", "to_claim_ms")
    yield _spread_row("latency", "parked-claim dispatch (JobManager)", *parked)
    yield _spread_row(
        "latency", "  its server part", "parked_claim_dispatch", "server_ms"
    )
    interval = f"polling dispatch ({config.poll_interval * 1000:g} ms poll)"
    yield _spread_row("latency", interval, "polling_dispatch", "to_claim_ms")
    wake = ("long_poll", "wake_ms")
    yield _p50_row(
        "latency", "long-poll wake-up", *wake, target="< 20", check=_below(20)
    )
    yield _spread_row("latency", "long-poll wake-up", *wake)


def _disconnect_rows(config: Config) -> Iterator[Row]:
    kill = ("kill_to_failed_ms",)
    yield _p50_row(
        "disconnect", "kill -9 → task failed", *kill, target="≤ 20", check=_at_most(20)
    )
    yield _spread_row("disconnect", "kill -9 → task failed", *kill)
    yield _spread_row(
        "disconnect", "  kill -9 → cleanup began", "kill_to_cleanup_start_ms"
    )
    yield _spread_row(
        "disconnect", "kill -9 (requeue) → task pending again", "kill_to_requeued_ms"
    )
    yield _spread_row(
        "disconnect",
        "kill -9 (requeue) → claimed again by a held claim",
        "kill_to_reclaimed_ms",
    )
    yield _spread_row(
        "disconnect", "restart (SIGTERM) → server answers", "restart_to_ready_ms"
    )
    yield _spread_row(
        "disconnect",
        "restart (SIGTERM) → all JobManager workers re-joined",
        "restart_to_rejoined_ms",
    )
    yield _spread_row("disconnect", "leave + DELETE → worker gone", "leave_to_gone_ms")
    yield _spread_row(
        "disconnect", "leave + DELETE → task failed event", "leave_to_failed_event_ms"
    )


def _backlog_rows(config: Config) -> Iterator[Row]:
    for index, level in enumerate(sorted(config.backlog_levels)):

        def value(db: Results, everything: Results, index: int = index) -> Any:
            level = _get(db, "backlog", "levels", index)
            if not level:
                return None
            return (
                "/".join(
                    _format(_get(level, f"{route}_ms", "p50"))
                    for route in ("submit", "claim", "complete")
                )
                + f", {_format(level.get('rss_mib'))} MiB"
            )

        yield Row(
            "backlog", f"{level:,} pending: submit/claim/complete p50, RSS", value, "ms"
        )
    top = f"{max(config.backlog_levels):,}"
    for route in ("submit", "claim"):
        yield Row(
            "backlog",
            f"{route} p50 at {top} pending / at 0",
            _backlog_ratio(route),
            "x",
            f"≤ {BACKLOG_RATIO:g}",
            _at_most(BACKLOG_RATIO),
        )
    for route in ("submit", "claim"):
        yield Row(
            "backlog",
            f"{route} p50 at {top} pending / empty job, same moments",
            _control_ratio(route),
            "x",
        )
    memory = ("backlog", "memory", "rss_mib")
    batch = config.memory_tasks
    yield Row("memory", "server RSS at start", _at(*memory, "start"), "MiB")
    yield Row(
        "memory", f"RSS after {batch:,} tasks", _at(*memory, "after_batch_1"), "MiB"
    )
    yield Row(
        "memory", f"RSS after {2 * batch:,} tasks", _at(*memory, "after_batch_2"), "MiB"
    )
    yield Row(
        "memory",
        f"RSS growth over the 2nd {batch:,} tasks",
        _at("backlog", "memory", "growth_mib"),
        "MiB",
        f"≤ {RSS_GROWTH_MIB:g} (no growth)",
        _at_most(RSS_GROWTH_MIB),
    )


def _calls_rows(config: Config) -> Iterator[Row]:
    seen = ("cancel", "to_seen_ms")
    yield _p50_row(
        "calls",
        "cancel → seen by the running code",
        *seen,
        target=f"< {CANCEL_SEEN_MS:g}",
        check=_below(CANCEL_SEEN_MS),
    )
    yield _spread_row("calls", "cancel → seen by the running code", *seen)
    yield _spread_row(
        "calls", "  cancel → PATCH answered", "cancel", "to_patch_answered_ms"
    )
    yield _spread_row(
        "calls", "  cancel committed → seen", "cancel", "commit_to_seen_ms"
    )

    def submits(db: Results, everything: Results) -> str | None:
        validation = _get(db, "calls", "validation")
        if not validation:
            return None
        return "/".join(
            _format(_get(validation, f"{kind}_submit_ms", "p50"))
            for kind in ("schema", "empty")
        )

    yield Row("calls", "submit p50, realistic schema/empty schema", submits, "ms")
    yield Row(
        "calls",
        "payload validation overhead of submit p50",
        _at("calls", "validation", "overhead_pct"),
        "%",
        f"< {VALIDATION_OVERHEAD_PCT:g}",
        _below(VALIDATION_OVERHEAD_PCT),
    )
    yield Row(
        "calls",
        "  paired difference p50",
        _at("calls", "validation", "paired_difference_p50_ms"),
        "ms",
    )
    yield Row(
        "calls",
        "check_payload in process, per payload",
        _at("calls", "validation", "check_payload", "schema_us", "p50"),
        "µs",
    )


def _providers_rows(config: Config) -> Iterator[Row]:
    yield _spread_row("providers", "cache-hit read", "hit_ms")
    yield _spread_row("providers", "miss → result via a JobManager worker", "miss_ms")
    yield Row(
        "providers",
        f"{config.provider_readers} readers on a hot key",
        _at("providers", "hot_key", "reads_per_s"),
        "reads/s",
    )
    yield Row(
        "providers",
        "  server CPU during the hot-key reads",
        _at("providers", "hot_key", "server_cpu"),
        "cores",
    )


def _crossprocess_rows(config: Config) -> Iterator[Row]:
    section = "crossprocess"
    for bus, label in (("notify", "PostgreSQL NOTIFY"), ("redis", "Redis")):
        dispatch = (bus, "dispatch", "to_claim_ms")
        yield _p50_row(
            section,
            f"submit on A → claim held on B, {label}",
            *dispatch,
            target=f"< {CROSS_DISPATCH_MS:g}",
            check=_below(CROSS_DISPATCH_MS),
        )
        yield _spread_row(section, f"submit on A → claim held on B, {label}", *dispatch)
        yield _spread_row(
            section,
            f"completion on A → long-poll on B, {label}",
            bus,
            "long_poll",
            "wake_ms",
        )
    yield _spread_row(
        section,
        "submit on A → claim held on B, no bus, 2 s re-check (0.1)",
        "off_recheck_2s",
        "dispatch",
        "to_claim_ms",
    )


def _batch_rows(config: Config) -> Iterator[Row]:
    batches = config.batch_tasks // config.batch_size
    what = f"{batches * config.batch_size:,} tasks as {batches} batches of "
    what += f"{config.batch_size:,}"
    yield Row("batch", f"batch submit, {what}", _at("batch", "tasks_per_s"), "tasks/s")
    yield Row(
        "batch",
        "  server CPU for them",
        _at("batch", "server_cpu_s"),
        "s",
        f"< {BATCH_SERVER_SECONDS:g} for 10,000",
        _per_10k_below(BATCH_SERVER_SECONDS),
    )
    yield Row(
        "batch", "  wall time, first sent → last answered", _at("batch", "wall_s"), "s"
    )
    yield _spread_row("batch", "  one batch", "batch_ms")
    yield Row(
        "batch",
        "single submits, one after another",
        _at("batch", "single", "tasks_per_s"),
        "tasks/s",
    )


def _connections_rows(config: Config) -> Iterator[Row]:
    for index, total in enumerate(config.connection_counts):

        def at(*path: str, index: int = index) -> Value:
            return _at("connections", "counts", index, *path)

        label = f"{total:,} sockets"
        yield Row(
            "connections",
            f"{label}: memory per connection",
            at("kib_per_connection"),
            "KiB",
        )
        yield Row(
            "connections",
            "  connect all, per connection",
            at("connect_ms_per_connection"),
            "ms",
        )
        yield Row(
            "connections",
            "  submit → last observer has pending",
            at("fanout", "pending_to_observers_ms", "last"),
            "ms",
        )
        yield Row(
            "connections",
            "  submit → observers' median",
            at("fanout", "pending_to_observers_ms", "p50"),
            "ms",
        )
        yield Row(
            "connections",
            "  submit → last worker has task_available",
            at("fanout", "available_to_workers_ms", "last"),
            "ms",
        )
        yield Row(
            "connections",
            "  cancel → last observer has cancelled",
            at("fanout", "cancelled_to_observers_ms", "last"),
            "ms",
        )
        yield Row(
            "connections",
            "  server CPU per event delivered",
            at("fanout", "server_cpu_us_per_event"),
            "µs",
        )
        yield Row(
            "connections",
            "  workers' sockets closed → all cleaned up",
            at("workers_cleaned_up_s"),
            "s",
        )
        yield Row(
            "connections",
            "  jobs_invalidate per observer in that storm",
            at("jobs_invalidate_per_observer"),
        )
        yield Row(
            "connections", "  observers' sockets closed", at("observers_closed_s"), "s"
        )


def _per_10k_below(limit: float) -> Check:
    # Judged per 10,000 tasks, so the --quick sizes are judged alike.
    def check(value: float, db: str, everything: Results) -> bool | None:
        tasks = _get(everything, "databases", db, "batch", "tasks")
        return value * 10_000 / tasks < limit if tasks else None

    return check


def _idle_rows(config: Config) -> Iterator[Row]:
    for index, count in enumerate(config.idle_workers):
        level = ("idle", "levels", index)
        # Judged at 1,000 only: a smaller N scaled up would count the server's
        # fixed costs (its timers, the sweeper) a thousand times over.
        judged = count >= IDLE_WORKERS
        yield Row(
            "idle",
            f"{count:,} idle workers: server CPU",
            _at(*level, "server_cpu"),
            "core",
            f"< {IDLE_CPU:g}" if judged else "",
            _below(IDLE_CPU) if judged else None,
        )
        yield Row(
            "idle", "  database statements", _at(*level, "statements_per_s"), "/s"
        )


def _errors_row() -> Row:
    def value(db: Results, everything: Results) -> float:
        return float(sum(int(s.get("errors", 0)) for s in db.values()))

    return Row("all", "errors", value, "", "0", _at_most(0))


ROW_GROUPS: dict[str, Callable[[Config], Iterator[Row]]] = {
    "throughput": _throughput_rows,
    "latency": _latency_rows,
    "disconnect": _disconnect_rows,
    "backlog": _backlog_rows,
    "calls": _calls_rows,
    "providers": _providers_rows,
    "crossprocess": _crossprocess_rows,
    "batch": _batch_rows,
    "connections": _connections_rows,
    "idle": _idle_rows,
}


def _rows(config: Config) -> Iterator[Row]:
    for section, rows in ROW_GROUPS.items():
        if section in config.sections:
            yield from rows(config)
    yield _errors_row()


def _format(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if float(value).is_integer() and abs(value) >= 1:
        return f"{int(value):,}"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _triple(summary: dict[str, Any]) -> str:
    return "/".join(_format(summary.get(q)) for q in ("p50", "p95", "p99"))


def _render(header: list[str], lines: list[list[str]]) -> str:
    columns = zip(header, *lines, strict=True)
    widths = [max(len(cell) for cell in column) for column in columns]

    def line(cells: list[str]) -> str:
        padded = (cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(header), rule, *(line(cells) for cells in lines)])


def evaluate(
    results: Results, config: Config
) -> tuple[list[list[str]], list[dict[str, Any]]]:
    """The metric table's lines and every target verdict."""
    databases = list(results["databases"])
    lines: list[list[str]] = []
    verdicts: list[dict[str, Any]] = []
    for row in _rows(config):
        values = [row.value(results["databases"][db], results) for db in databases]
        outcomes: list[str] = []
        for db, value in zip(databases, values, strict=True):
            verdict = None
            if row.check is not None and isinstance(value, int | float):
                verdict = row.check(value, db, results)
            outcomes.append("" if verdict is None else "PASS" if verdict else "MISS")
            if verdict is not None:
                verdicts.append(
                    {
                        "db": db,
                        "section": row.section,
                        "metric": row.metric,
                        "value": value,
                        "target": row.target,
                        "pass": verdict,
                    }
                )
        result = " / ".join(o or "-" for o in outcomes) if any(outcomes) else ""
        unit = f" ({row.unit})" if row.unit else ""
        lines.append(
            [row.section, row.metric + unit, *map(_format, values), row.target, result]
        )
    return lines, verdicts


THROUGHPUT_HEADER = [
    "db", "case", "tasks/s", "req/s", "of floor", "req/task", "empty claims",
    "submit ms p50/95/99", "claim ms p50/95/99", "complete ms p50/95/99",
    "server CPU", "errors",
]  # fmt: skip


def _throughput_table(results: Results) -> str:
    lines: list[list[str]] = []
    for db, sections in results["databases"].items():
        for case, data in (_get(sections, "throughput", "cases") or {}).items():
            fraction = _floor_fraction(sections, results, case)
            routes = data["routes"]
            lines.append(
                [
                    db,
                    case,
                    _format(data["tasks_per_s"]),
                    _format(data["requests_per_s"]),
                    _format(fraction),
                    _format(data["requests_per_task"]),
                    _format(data["empty_claims"]),
                    *(
                        _triple(routes.get(r, {}))
                        for r in ("submit", "claim", "complete")
                    ),
                    _format(data["server_cpu"]),
                    _format(data["errors"]),
                ]
            )
    return _render(THROUGHPUT_HEADER, lines)


def _floor_text(results: Results) -> str:
    floor = results.get("floor")
    if not floor or "levels" not in floor:
        return "HTTP floor: not measured"
    levels = ", ".join(
        f"{level['concurrency']} conn: {level['requests_per_s']:,.0f}/s "
        f"(client CPU {level['client_cpu']:.2f}, server CPU {level['server_cpu']:.2f})"
        for level in floor["levels"]
    )
    return f"HTTP floor: {floor['requests_per_s']:,.0f} requests/s [{levels}]"


def count_errors(results: Results) -> int:
    """Errors over every section of every database, and the floor."""
    total = int(_get(results, "floor", "errors") or 0)
    for sections in results["databases"].values():
        total += sum(int(section.get("errors", 0)) for section in sections.values())
    return total


def report(results: Results, config: Config) -> tuple[str, str]:
    """The printed report and the JSON line."""
    lines, verdicts = evaluate(results, config)
    databases = list(results["databases"])
    errors = count_errors(results)
    passed = sum(1 for v in verdicts if v["pass"])
    parts = [_floor_text(results), ""]
    if any(_get(s, "throughput", "cases") for s in results["databases"].values()):
        parts += [
            f"Throughput, {config.tasks:,} tasks per case (requests/task counts "
            "submit + claim + complete: 3 at best)",
            _throughput_table(results),
            "",
        ]
    parts += [
        _render(["section", "metric", *databases, "target", "result"], lines),
        "",
        f"errors: {errors}; targets: {passed} PASS, {len(verdicts) - passed} MISS",
    ]
    document = {
        "errors": errors,
        "passed": passed,
        "missed": len(verdicts) - passed,
        "targets": verdicts,
        **results,
    }
    return "\n".join(parts), json.dumps(document, separators=(",", ":"), default=str)
