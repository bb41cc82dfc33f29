"""The `joblib-conformance` command.

    joblib-conformance server BASE_URL --admin-token … --user-token … \\
        --other-user-token … [--group core,ours] [--check ID] [--json]
    joblib-conformance worker [--group worker] [--json] -- COMMAND …
    joblib-conformance list

Exit code 0 when every required check selected passed, 1 when one did not, 2 for
a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from joblib_conformance.checks import Registry
from joblib_conformance.runner import Report, Result


def _groups(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [part.strip() for part in text.split(",") if part.strip()]


def _printer(args: argparse.Namespace) -> Callable[[Result], None] | None:
    if args.json:
        return None

    def show(result: Result) -> None:
        print(result.line(), flush=True)

    return show


def _finish(report: Report, args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        print(report.summary())
    return 0 if report.ok else 1


def _server(args: argparse.Namespace) -> int:
    from joblib_conformance.server import run_server_checks
    from joblib_conformance.target import ServerTarget

    target = ServerTarget(
        url=args.base_url.rstrip("/"),
        admin_token=args.admin_token,
        user_token=args.user_token,
        other_user_token=args.other_user_token,
        category=args.category,
        max_body_bytes=args.max_body_bytes,
        socketio_path=args.socketio_path,
        timeout=args.timeout,
        disconnect_within=args.disconnect_within,
        max_list_offset=args.max_list_offset,
        heartbeat_task_margin=args.heartbeat_task_margin,
        body_timeout=args.body_timeout,
        locked_room=args.locked_room,
        max_result_bytes=args.max_result_bytes,
    )
    report = run_server_checks(
        target,
        groups=_groups(args.group),
        only=args.check or None,
        on_result=_printer(args),
    )
    return _finish(report, args)


def _worker(args: argparse.Namespace) -> int:
    from joblib_conformance.fake import WorkerScenario, check_worker_command

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        print("joblib-conformance: give the worker's command after --", file=sys.stderr)
        return 2
    scenario = WorkerScenario(
        tasks=args.tasks,
        payload=json.loads(args.payload),
        heartbeat_within=args.heartbeat_within,
        timeout=args.timeout,
    )
    try:
        report = check_worker_command(
            command,
            scenario,
            groups=_groups(args.group),
            only=args.check or None,
            on_result=_printer(args),
        )
    except OSError as exc:
        print(f"joblib-conformance: cannot run {command[0]}: {exc}", file=sys.stderr)
        return 2
    return _finish(report, args)


def _list(args: argparse.Namespace) -> int:
    from joblib_conformance.fake.checks import WORKER_CHECKS
    from joblib_conformance.server import SERVER_CHECKS

    registries: Sequence[Registry] = (SERVER_CHECKS, WORKER_CHECKS)
    for registry in registries:
        print(f"{registry.name} checks (joblib-conformance {registry.name}):")
        for check in registry:
            flag = "" if check.required else " [not required]"
            print(f"  {check.id}{flag} — {check.description}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit code."""
    parser = argparse.ArgumentParser(
        prog="joblib-conformance",
        description="Check that a joblib server or worker speaks the protocol.",
    )
    commands = parser.add_subparsers(dest="command_name", required=True)

    server = commands.add_parser(
        "server", help="black-box checks of a server over REST and Socket.IO"
    )
    server.add_argument("base_url", metavar="BASE_URL", help="e.g. http://host:8000")
    server.add_argument("--admin-token", required=True)
    server.add_argument("--user-token", required=True)
    server.add_argument(
        "--other-user-token", required=True, help="a second non-admin identity"
    )
    server.add_argument(
        "--category",
        default="modifiers",
        help="a job category the server allows (default: modifiers)",
    )
    server.add_argument(
        "--max-body-bytes",
        type=int,
        default=1_048_576,
        help="the server's request body limit, for the 413 check",
    )
    server.add_argument("--socketio-path", default="socket.io")
    server.add_argument(
        "--disconnect-within",
        type=float,
        default=3.0,
        help="seconds within which a dropped worker must be cleaned up (default 3)",
    )
    server.add_argument(
        "--max-list-offset",
        type=int,
        default=10_000,
        help="the largest ?offset= the server's lists take (default 10000)",
    )
    server.add_argument(
        "--heartbeat-task-margin",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how old a claim must be before a heartbeat that leaves it out "
        "releases it (default 10; the check waits this long)",
    )
    server.add_argument(
        "--body-timeout",
        type=float,
        metavar="SECONDS",
        help="the server's time limit for a request body: runs the 408 check, "
        "which sends part of a body and waits this long",
    )
    server.add_argument(
        "--locked-room",
        metavar="ROOM",
        help="a room the server's access policy locks for the user: runs the 423 check",
    )
    server.add_argument(
        "--max-result-bytes",
        type=int,
        metavar="N",
        help="the largest task result the server keeps, as JSON: runs the 413 "
        "check of results",
    )
    server.set_defaults(run=_server)

    worker = commands.add_parser(
        "worker",
        help="run a worker against the kit's fake server and check what it sent",
    )
    worker.add_argument(
        "--tasks", type=int, default=1, help="tasks to submit to its first job"
    )
    worker.add_argument(
        "--payload", default="{}", help="the tasks' payload, as JSON (default {})"
    )
    worker.add_argument(
        "--heartbeat-within",
        type=float,
        default=30.0,
        help="seconds within which the worker must send its first heartbeat",
    )
    worker.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        help="the worker's command, after --; it gets JOBLIB_URL and JOBLIB_TOKEN",
    )
    worker.set_defaults(run=_worker)

    for sub in (server, worker):
        sub.add_argument("--group", help="comma-separated groups to run (default: all)")
        sub.add_argument(
            "--check",
            action="append",
            help="run only this check id or dotted prefix (repeatable)",
        )
        sub.add_argument(
            "--timeout",
            type=float,
            default=10.0,
            help="seconds to wait for an answer or an event (default 10)",
        )
        sub.add_argument("--json", action="store_true", help="one JSON report")

    listing = commands.add_parser("list", help="list every check")
    listing.set_defaults(run=_list)

    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
    except ValueError as exc:
        print(f"joblib-conformance: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
