"""`python -m bench`: run the benchmark, print the table and one JSON line.

Sections: floor (once), then throughput, latency, disconnect, backlog, calls,
providers, crossprocess, batch, connections and idle for each database, each on a
fresh server and database.
A section that crashes is recorded with one error and the run goes on. The exit
status is 1 when any error occurred (missed targets are not errors).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from bench import (
    backlog,
    batch,
    calls,
    connections,
    crossprocess,
    disconnect,
    http_floor,
    idle,
    latency,
    providers,
    throughput,
)
from bench.config import DATABASES, SECTIONS, WORKER_KINDS, Config
from bench.report import count_errors, report

SectionRun = Callable[[str, Config], Awaitable[dict[str, Any]]]
PER_DATABASE: dict[str, SectionRun] = {
    "throughput": throughput.run,
    "latency": latency.run,
    "disconnect": disconnect.run,
    "backlog": backlog.run,
    "calls": calls.run,
    "providers": providers.run,
    "crossprocess": crossprocess.run,
    "batch": batch.run,
    "connections": connections.run,
    "idle": idle.run,
}


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("give positive integers, e.g. 1,4,16")
    return counts


def parse_args(argv: list[str] | None) -> Config:
    """The command line as a `Config`."""
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Benchmark joblib-server over its wire API."
    )
    parser.add_argument("--db", choices=[*DATABASES, "both"], default="both")
    parser.add_argument("--tasks", type=int, help="tasks per throughput case")
    parser.add_argument("--workers", type=_counts, help="worker counts, e.g. 1,4,16")
    parser.add_argument(
        "--worker-kind",
        choices=WORKER_KINDS,
        default="long-poll",
        help="how throughput workers wait for tasks",
    )
    parser.add_argument("--quick", action="store_true", help="tiny smoke sizes")
    parser.add_argument("--json-only", action="store_true", help="print only JSON")
    parser.add_argument("--only", choices=SECTIONS, action="append", help="repeatable")
    args = parser.parse_args(argv)
    config = Config()
    if args.quick:
        config = config.quick()
    overrides: dict[str, Any] = {
        "databases": DATABASES if args.db == "both" else (args.db,),
        "sections": tuple(s for s in SECTIONS if not args.only or s in args.only),
        "json_only": args.json_only,
        "worker_kind": args.worker_kind,
    }
    if args.tasks is not None:
        if args.tasks < 1:
            parser.error("--tasks must be positive")
        overrides["tasks"] = args.tasks
    if args.workers is not None:
        overrides["workers"] = args.workers
    return dataclasses.replace(config, **overrides)


def _progress(config: Config, message: str) -> None:
    if not config.json_only:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr)


async def _guarded(config: Config, label: str, run: Awaitable[dict[str, Any]]) -> Any:
    _progress(config, f"{label} ...")
    started = time.perf_counter()
    try:
        result = await run
    except Exception as exc:
        _progress(config, f"{label} crashed:\n{traceback.format_exc()}")
        return {"errors": 1, "error_samples": [f"{type(exc).__name__}: {exc}"]}
    _progress(config, f"{label} done in {time.perf_counter() - started:.1f} s")
    return result


async def run_all(config: Config) -> dict[str, Any]:
    """Every chosen section; the floor once, the others per database."""
    results: dict[str, Any] = {
        "config": dataclasses.asdict(config),
        "databases": {db: {} for db in config.databases},
    }
    if "floor" in config.sections:
        results["floor"] = await _guarded(config, "floor", http_floor.run(config))
    for db in config.databases:
        for section, run in PER_DATABASE.items():
            if section in config.sections:
                results["databases"][db][section] = await _guarded(
                    config, f"{db} {section}", run(db, config)
                )
    return results


def _run(config: Config) -> dict[str, Any]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(run_all(config))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(run_all(config))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when it made no errors."""
    config = parse_args(argv)
    started = time.perf_counter()
    results = _run(config)
    results["seconds"] = round(time.perf_counter() - started, 1)
    table, line = report(results, config)
    if not config.json_only:
        print(table)
        print(f"total time: {results['seconds']:.0f} s")
    print(line, flush=True)
    return 1 if count_errors(results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
