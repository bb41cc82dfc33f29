"""Prometheus metrics of one `JobLib`, in a registry of its own.

Two kinds. Counters and histograms move with committed changes: `JobLib` hands
`Metrics.observe` every batch of emissions after its commit, and each task
status change in it counts once (claims, dispatch and run times, finishes).
Gauges are read when scraped: the tasks by job and status and the queue depths
in one grouped query, the sockets from the `Realtime` connections. Every
`JobLib` has its own registry, never prometheus_client's global one, so two in
one process (a host with two, the tests) do not clash.

The counters count this process's changes; with several server processes,
Prometheus adds them up (`sum without (instance)`). The gauges read the shared
database, so every process reports the same tasks.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine

from joblib_protocol import Emission, TaskStatus, TaskStatusEvent, is_terminal
from joblib_server.database import Database
from joblib_server.tables import JOB_TABLE, TASK_TABLE, job_full_name

if TYPE_CHECKING:
    from joblib_server.realtime import Realtime

logger = logging.getLogger("joblib_server")

MAX_JOBS = 500
"""Jobs reported one by one in `joblib_tasks` and `joblib_queue_depth`: the ones
with the most tasks. The others are added up under `job="(other)"`."""

OTHER_JOBS = "(other)"
"""The `job` label of the jobs past `MAX_JOBS`; no job's full name (which holds
two colons) can be this."""

_DISPATCH_BUCKETS = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    *(30.0, 60.0, 300.0, 1800.0, 3600.0, float("inf")),
)
_RUN_BUCKETS = (
    *(0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0),
    *(4 * 3600.0, 24 * 3600.0, float("inf")),
)

_tasks = TASK_TABLE
_jobs = JOB_TABLE
_counts = (
    sa.select(_tasks.c.job_id, _tasks.c.status, sa.func.count().label("n"))
    .group_by(_tasks.c.job_id, _tasks.c.status)
    .subquery()
)
_TASK_COUNTS = (
    # One grouped query over ix_joblib_task_job_seq; jobs without tasks show
    # as one row with no status, soft-deleted ones only while tasks remain.
    sa.select(
        _jobs.c.room_id,
        _jobs.c.category,
        _jobs.c.name,
        _counts.c.status,
        _counts.c.n,
    )
    .select_from(_jobs.outerjoin(_counts, _counts.c.job_id == _jobs.c.id))
    .where(sa.or_(_jobs.c.deleted == sa.false(), _counts.c.n.is_not(None)))
)


@dataclass(frozen=True, slots=True)
class Sockets:
    """The Socket.IO connections of this process, at the moment of a scrape."""

    workers: int
    """Connections through which a worker joined its job rooms."""
    observers: int
    """The others: browsers and hosts watching rooms."""

    @classmethod
    def of(cls, realtime: Realtime) -> Sockets:
        """Count `realtime`'s connections."""
        connections = list(realtime.connections.values())
        workers = sum(1 for connection in connections if connection.workers)
        return cls(workers, len(connections) - workers)


@dataclass(frozen=True, slots=True)
class Scrape:
    """What a scrape read besides the counters: the database and the sockets."""

    tasks: Mapping[str, Mapping[str, int]] | None = None
    """Tasks by job full name and status; None when the database did not answer."""
    sockets: Sockets | None = None
    """None when this app has no Socket.IO (`Realtime`)."""
    other_jobs: int = 0
    """How many jobs were added up under `OTHER_JOBS`."""


async def read_task_counts(
    database: Database, max_jobs: int = MAX_JOBS
) -> tuple[dict[str, dict[str, int]], int]:
    """Tasks by job and status, the `max_jobs` biggest jobs apart; how many not.

    Every reported job has every status, zeros included, so a series does not
    vanish when its last task leaves that status.
    """
    async with database.read(slow=True) as session:
        rows = (await session.execute(_TASK_COUNTS)).all()
    by_job: dict[str, dict[str, int]] = defaultdict(dict)
    for room_id, category, name, status, count in rows:
        counts = by_job[job_full_name(room_id, category, name)]
        if status is not None:
            counts[status] = int(count)
    ranked = sorted(by_job.items(), key=lambda item: (-sum(item[1].values()), item[0]))
    reported = {job: _all_statuses(counts) for job, counts in ranked[:max_jobs]}
    rest = ranked[max_jobs:]
    if rest:
        other = _all_statuses({})
        for _job, counts in rest:
            for status, count in counts.items():
                other[status] = other.get(status, 0) + count
        reported[OTHER_JOBS] = other
    return reported, len(rest)


def _all_statuses(counts: Mapping[str, int]) -> dict[str, int]:
    return {status.value: counts.get(status.value, 0) for status in TaskStatus}


class _Scraped(Collector):
    """The families a scrape read: set just before the registry is written out."""

    def __init__(self) -> None:
        self.scrape: Scrape | None = None

    def describe(self) -> Iterable[Metric]:
        """Nothing: registering must not collect (there is nothing to read yet)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The task, queue and socket gauges of the scrape under way, if any."""
        scrape = self.scrape
        if scrape is None:
            return
        up = GaugeMetricFamily(
            "joblib_database_up",
            "1 when this scrape read the task counts from the database, else 0 "
            "(joblib_tasks and joblib_queue_depth are then left out).",
            value=0 if scrape.tasks is None else 1,
        )
        yield up
        if scrape.tasks is not None:
            yield from _task_families(scrape.tasks, scrape.other_jobs)
        if scrape.sockets is not None:
            sockets = GaugeMetricFamily(
                "joblib_sockets",
                "Socket.IO connections to this server process: `worker` ones "
                "joined job rooms for a worker, `observer` ones did not.",
                labels=["kind"],
            )
            sockets.add_metric(["worker"], scrape.sockets.workers)
            sockets.add_metric(["observer"], scrape.sockets.observers)
            yield sockets


def _task_families(
    tasks: Mapping[str, Mapping[str, int]], other_jobs: int
) -> Iterator[Metric]:
    by_status = GaugeMetricFamily(
        "joblib_tasks",
        f"Tasks in the database by job (full name) and status; the {MAX_JOBS} "
        f'jobs with the most tasks, the rest added up as job="{OTHER_JOBS}".',
        labels=["job", "status"],
    )
    depth = GaugeMetricFamily(
        "joblib_queue_depth",
        "Pending tasks by job: submitted, waiting for a worker to claim them.",
        labels=["job"],
    )
    for job, counts in tasks.items():
        for status, count in counts.items():
            by_status.add_metric([job, status], count)
        depth.add_metric([job], counts.get(TaskStatus.PENDING.value, 0))
    yield by_status
    yield depth
    yield GaugeMetricFamily(
        "joblib_jobs_other",
        f'Jobs past the {MAX_JOBS} biggest, counted under job="{OTHER_JOBS}".',
        value=other_jobs,
    )


class Metrics:
    """One `JobLib`'s metrics: a registry of its own and what moves them.

    `registry` holds the counters, the histograms and the process collectors; a
    host may write it out itself (`prometheus_client.generate_latest`), but the
    gauges read from the database and the sockets appear only through the
    `/metrics` route (`health.health_routes`), which reads them first.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.claimed = Counter(
            "joblib_tasks_claimed",
            "Tasks claimed by workers; a task requeued and claimed again counts again.",
            registry=self.registry,
        )
        self.finished = Counter(
            "joblib_tasks_finished",
            "Tasks that finished, by final status and error_code (empty for none; "
            "failed tasks by error_code are the cleanups by cause).",
            ["status", "error_code"],
            registry=self.registry,
        )
        self.dispatch = Histogram(
            "joblib_task_dispatch_seconds",
            "Seconds from a task's submit (created_at) to its start (started_at).",
            buckets=_DISPATCH_BUCKETS,
            registry=self.registry,
        )
        self.run_time = Histogram(
            "joblib_task_run_seconds",
            "Seconds from a task's start to its finish, by final status (tasks "
            "that never started are not counted).",
            ["status"],
            buckets=_RUN_BUCKETS,
            registry=self.registry,
        )
        self.wake_bus_messages = Counter(
            "joblib_wake_bus_messages",
            "Wake bus messages (`wakebus`): `sent` for changes of this process "
            "that concern waiters, `received` from other processes (this "
            "process's own are not counted).",
            ["direction"],
            registry=self.registry,
        )
        self.wake_bus_subscriptions = Counter(
            "joblib_wake_bus_subscriptions",
            "Times the wake bus listener subscribed: once at start, once more "
            "after each lost connection (every waiter then re-checks).",
            registry=self.registry,
        )
        self.statements = Counter(
            "joblib_db_statements",
            "SQL statements this process sent to the database (each execute, an "
            "executemany once; BEGIN and COMMIT the drivers send are not counted).",
            registry=self.registry,
        )
        self._scraped = _Scraped()
        self.registry.register(self._scraped)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def count_statements(self, engine: AsyncEngine) -> None:
        """Count every statement `engine` sends in `joblib_db_statements_total`."""
        counter = self.statements

        def counted(*_args: object) -> None:
            counter.inc()

        # Engine events belong to the sync engine under the async one; the hook
        # costs a counter increment, about a microsecond, per statement.
        sa.event.listen(engine.sync_engine, "before_cursor_execute", counted)

    def watch_waiters(
        self, held_claims: Callable[[], int], long_polls: Callable[[], int]
    ) -> None:
        """Report the requests waiting in this process, counted when scraped."""
        waiting = Gauge(
            "joblib_waiting_requests",
            "Requests waiting in this process: held claims (`claim`) and task "
            "long-polls (`long_poll`).",
            ["kind"],
            registry=self.registry,
        )
        waiting.labels("claim").set_function(held_claims)
        waiting.labels("long_poll").set_function(long_polls)

    def observe(self, batch: Iterable[Emission]) -> None:
        """Count the task status changes of one committed change, each once."""
        try:
            self._observe(batch)
        except Exception:
            # The change is committed; counting it must never fail it.
            logger.exception("updating the metrics failed")

    def _observe(self, batch: Iterable[Emission]) -> None:
        seen: set[tuple[str, TaskStatus]] = set()
        for emission in batch:
            event = emission.event
            if not isinstance(event, TaskStatusEvent):
                continue
            if (event.id, event.status) in seen:
                continue
            seen.add((event.id, event.status))
            if event.status == TaskStatus.CLAIMED:
                # A claim that starts at once also announces `claimed`: one claim.
                self.claimed.inc()
            elif event.status == TaskStatus.RUNNING and event.started_at:
                waited = (event.started_at - event.created_at).total_seconds()
                self.dispatch.observe(max(waited, 0.0))
            elif is_terminal(event.status):
                code = event.error_code.value if event.error_code else ""
                self.finished.labels(event.status.value, code).inc()
                if event.started_at and event.completed_at:
                    ran = (event.completed_at - event.started_at).total_seconds()
                    self.run_time.labels(event.status.value).observe(max(ran, 0.0))

    def render(self, scrape: Scrape, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition of everything, with `scrape`'s gauges; its content type.

        `accept` (the request's header) may ask for OpenMetrics; otherwise the
        Prometheus text format.
        """
        encoder, content_type = choose_encoder(accept or "")
        # No await in between: no other scrape's gauges can slip in.
        self._scraped.scrape = scrape
        try:
            return encoder(self.registry), content_type
        finally:
            self._scraped.scrape = None
