"""The `joblib` command: look at a server, submit and cancel tasks, watch a room.

Tables for people, the server's JSON for scripts (`--json`), and exit codes that
say what happened (see `EPILOG`). It reads `JOBLIB_URL` and `JOBLIB_TOKEN`; the
library itself never reads the environment.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from joblib_client._http import ApiClient, Rest, _segment
from joblib_client._results import LONG_POLL_SECONDS
from joblib_client._socket import SocketClient
from joblib_client._tables import (
    event_line,
    jobs_table,
    task_view,
    tasks_table,
    workers_table,
)
from joblib_client.exceptions import JobLibError, TransportError, error_for_problem
from joblib_protocol import (
    DEFAULT_PAGE_LIMIT,
    MAX_PAGE_LIMIT,
    JobsInvalidate,
    JobSummary,
    JoinRoom,
    PaginatedResponse,
    TaskProgressEvent,
    TaskResponse,
    TaskStatus,
    TaskStatusEvent,
    WorkerSummary,
    is_terminal,
)

DEFAULT_URL = "http://127.0.0.1:8000"

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_TASK_FAILED = 4
EXIT_TIMEOUT = 5
EXIT_INTERRUPTED = 130

EPILOG = f"""\
exit codes:
  {EXIT_OK}    done
  {EXIT_REFUSED}    the server refused; its problem is on stderr as one line:
       error: <status> <type>: <detail> (<method> <url>)
  {EXIT_USAGE}    usage error
  {EXIT_UNREACHABLE}    the server cannot be reached; stderr says the URL and why
       (connection refused, name resolution, TLS, timeout)
  {EXIT_TASK_FAILED}    the task waited for (task --wait, submit --wait) failed or was
       cancelled; the task is printed, its error is on stderr
  {EXIT_TIMEOUT}    the wait timed out; the task as it stands is printed
  {EXIT_INTERRUPTED}  interrupted by Ctrl-C (watch ends with {EXIT_OK})

environment:
  JOBLIB_URL    the server when --url is not given (default {DEFAULT_URL})
  JOBLIB_TOKEN  the bearer token when --token is not given
"""

WATCHED = (
    TaskStatusEvent.event_name(),
    TaskProgressEvent.event_name(),
    JobsInvalidate.event_name(),
)
"""The room events `joblib watch` prints."""


# output


def _say(text: str) -> None:
    print(text, flush=True)


def _note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _error(text: str) -> None:
    _note(f"error: {text}")


def _show(args: argparse.Namespace, response: httpx.Response, render: str) -> None:
    # Scripts get the server's JSON as it came; people get the rendering.
    _say(response.text if args.json else render)


def _describe(exc: JobLibError, args: argparse.Namespace) -> str:
    """One line for a refusal: the problem first, then the request it answered."""
    text = exc.summary()
    if exc.status == 401 and not args.token:
        text += "; no token given: pass --token or set JOBLIB_TOKEN"
    if exc.method is not None and exc.url is not None:
        text += f" ({exc.method} {exc.url})"
    return text


# arguments


def _url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"{value!r} is not an http:// or https:// URL")
    return value.rstrip("/")


def _payload(value: str) -> dict[str, Any]:
    try:
        payload = json.loads(value)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise argparse.ArgumentTypeError("must be a JSON object ({...})")
    return payload


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not seconds >= 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return seconds


def _count(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive integer")
    return int(value)


def _page(args: argparse.Namespace) -> dict[str, str]:
    # Only what was asked for: the URLs in messages stay the plain ones.
    given = {"limit": args.limit, "offset": args.offset}
    return {name: str(value) for name, value in given.items() if value is not None}


# commands


def workers(args: argparse.Namespace, rest: Rest) -> int:
    """`joblib workers`: every worker the server knows."""
    response = rest.request("GET", "/workers", params=_page(args))
    page = PaginatedResponse[WorkerSummary].model_validate_json(response.content)
    _show(args, response, workers_table(page))
    return EXIT_OK


def jobs(args: argparse.Namespace, rest: Rest) -> int:
    """`joblib jobs --room R`: the jobs visible from a room."""
    path = f"/rooms/{_segment(args.room)}/jobs"
    response = rest.request("GET", path, params=_page(args))
    page = PaginatedResponse[JobSummary].model_validate_json(response.content)
    _show(args, response, jobs_table(page))
    return EXIT_OK


def tasks(args: argparse.Namespace, rest: Rest) -> int:
    """`joblib tasks --room R`: a room's tasks, newest first."""
    path = f"/rooms/{_segment(args.room)}"
    path += f"/jobs/{_segment(args.job)}/tasks" if args.job else "/tasks"
    params = _page(args)
    if args.status:
        params["status"] = args.status
    response = rest.request("GET", path, params=params)
    page = PaginatedResponse[TaskResponse].model_validate_json(response.content)
    _show(args, response, tasks_table(page))
    return EXIT_OK


def task(args: argparse.Namespace, rest: Rest) -> int:
    """`joblib task ID [--wait [SECONDS]]`."""
    if args.wait is None:
        response = rest.request("GET", _task_path(args.id))
        _show_task(args, response)
        return EXIT_OK
    return _wait_and_show(args, rest, args.id, args.wait)


def submit(args: argparse.Namespace, rest: Rest) -> int:
    """`joblib submit JOB --room R --payload JSON [--wait [SECONDS]]`."""
    body: dict[str, Any] = {"payload": args.payload}
    if args.timeout_seconds is not None:
        body["timeout_seconds"] = args.timeout_seconds
    if args.pending_timeout_seconds is not None:
        body["pending_timeout_seconds"] = args.pending_timeout_seconds
    headers = {}
    if args.idempotency_key is not None:
        headers["Idempotency-Key"] = args.idempotency_key
    path = f"/rooms/{_segment(args.room)}/tasks/{_segment(args.job)}"
    response = rest.request("POST", path, json=body, headers=headers)
    if args.wait is None:
        _show_task(args, response)
        return EXIT_OK
    task_id = str(response.json()["id"])
    _note(f"submitted task {task_id}; waiting for it to end")
    return _wait_and_show(args, rest, task_id, args.wait)


def cancel(args: argparse.Namespace, rest: Rest) -> int:
    """`joblib cancel ID`: cancel a pending, claimed or running task."""
    response = rest.request(
        "PATCH", _task_path(args.id), json={"status": TaskStatus.CANCELLED.value}
    )
    _show_task(args, response)
    return EXIT_OK


def _task_path(task_id: str) -> str:
    return f"/tasks/{quote(task_id, safe='')}"


def _show_task(args: argparse.Namespace, response: httpx.Response) -> TaskResponse:
    found = TaskResponse.model_validate_json(response.content)
    _show(args, response, task_view(found))
    return found


def _wait_and_show(
    args: argparse.Namespace, rest: Rest, task_id: str, seconds: float
) -> int:
    response, ended = _wait(rest, task_id, seconds)
    found = _show_task(args, response)
    if not ended:
        limit = "" if math.isinf(seconds) else f" after {seconds:g} s"
        _error(f"task {found.id} is still {found.status.value}{limit}")
        return EXIT_TIMEOUT
    if found.status == TaskStatus.FAILED:
        code = f" ({found.error_code.value})" if found.error_code else ""
        _error(f"task {found.id} failed{code}: {found.error or 'no error given'}")
        return EXIT_TASK_FAILED
    if found.status == TaskStatus.CANCELLED:
        _error(f"task {found.id} was cancelled")
        return EXIT_TASK_FAILED
    return EXIT_OK


def _wait(rest: Rest, task_id: str, seconds: float) -> tuple[httpx.Response, bool]:
    """Long-poll the task until it ends or `seconds` pass; the last answer, and if
    it ended (`math.inf`: no limit)."""
    deadline = time.monotonic() + seconds
    while True:
        remaining = deadline - time.monotonic()
        hold = min(LONG_POLL_SECONDS, remaining)
        if hold > 0:
            held = max(1, math.ceil(hold))
            response = rest.request(
                "GET",
                _task_path(task_id),
                headers={"Prefer": f"wait={held}"},
                read_timeout=held + 10.0,
            )
        else:
            response = rest.request("GET", _task_path(task_id))
        if is_terminal(response.json()["status"]):
            return response, True
        if time.monotonic() >= deadline:
            return response, False
        if "preference-applied" not in response.headers:
            # The server does not hold the answer: do not ask in a tight loop.
            time.sleep(min(1.0, max(deadline - time.monotonic(), 0.0)))


def watch(args: argparse.Namespace, rest: Rest) -> int:
    """`joblib watch --room R`: print the room's events until Ctrl-C (or --count)."""
    sock = SocketClient(args.url, args.token, connect_timeout=args.connect_timeout)
    done = threading.Event()
    rejoin = threading.Event()
    lock = threading.Lock()
    printed = 0
    connected_once = False

    def printer(name: str) -> Callable[..., None]:
        def show(data: Any = None) -> None:
            nonlocal printed
            with lock:
                if done.is_set():
                    return
                if args.json:
                    _say(json.dumps({"event": name, "data": data}))
                else:
                    _say(event_line(name, data))
                printed += 1
                if args.count is not None and printed >= args.count:
                    done.set()

        return show

    def on_connect() -> None:
        if connected_once:  # a reconnection: the server forgot the old room
            _note(f"reconnected to {args.url}")
            rejoin.set()

    def on_disconnect(*_: Any) -> None:
        if not done.is_set():
            _note(f"lost the connection to {args.url}; reconnecting")

    for name in WATCHED:
        sock.on(name, printer(name))
    sock.on("connect", on_connect)
    sock.on("disconnect", on_disconnect)
    try:
        sock.connect()
        connected_once = True
        _join(sock, args.room)
        _note(f"watching room {args.room} at {args.url}; Ctrl-C to stop")
        while not done.wait(1.0):
            if rejoin.is_set():
                rejoin.clear()
                try:
                    _join(sock, args.room)
                    _note(f"watching room {args.room} again")
                except TransportError as exc:
                    _note(f"could not join room {args.room} again yet: {exc}")
                    rejoin.set()
    except KeyboardInterrupt:
        pass
    finally:
        done.set()
        sock.close()
    return EXIT_OK


def _join(sock: SocketClient, room: str) -> None:
    ack = sock.emit(JoinRoom(room_id=room))
    if isinstance(ack, dict) and ack.get("ok") is False:
        raise error_for_problem(ack.get("error") or {})


# the parser


def _common(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The global options; `defaults=False` on subcommands so they override only
    when given there (`joblib tasks --room r --json` works as well)."""

    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--url",
        type=_url,
        default=default(os.environ.get("JOBLIB_URL") or DEFAULT_URL),
        help="the server's root URL (env JOBLIB_URL; default %(default)s)"
        if defaults
        else argparse.SUPPRESS,
    )
    parser.add_argument(
        "--token",
        default=default(os.environ.get("JOBLIB_TOKEN") or None),
        help="the bearer token (env JOBLIB_TOKEN)" if defaults else argparse.SUPPRESS,
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print the server's JSON (one object a line for watch)"
        if defaults
        else argparse.SUPPRESS,
    )


def _paged(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--limit",
        type=int,
        help=f"how many to show (default {DEFAULT_PAGE_LIMIT}, at most "
        f"{MAX_PAGE_LIMIT})",
    )
    parser.add_argument("--offset", type=int, help="how many to skip (default 0)")


def _waits(parser: argparse.ArgumentParser, then: str) -> None:
    parser.add_argument(
        "--wait",
        nargs="?",
        type=_seconds,
        const=math.inf,
        metavar="SECONDS",
        help="wait until the task is completed, failed or cancelled (for at most "
        f"SECONDS, if given), {then}",
    )


def build_parser() -> argparse.ArgumentParser:
    """The `joblib` argument parser."""
    parser = argparse.ArgumentParser(
        prog="joblib",
        description="Look at a joblib server, submit and cancel tasks, watch a room.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(parser, defaults=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run: Callable[..., int], help: str) -> Any:
        sub = commands.add_parser(name, help=help, description=help)
        _common(sub, defaults=False)
        sub.set_defaults(run=run)
        return sub

    sub = command("workers", workers, "list the workers the server knows")
    _paged(sub)

    sub = command("jobs", jobs, "list the jobs visible from a room")
    sub.add_argument("--room", required=True, help="the room id")
    _paged(sub)

    sub = command("tasks", tasks, "list a room's tasks, newest first")
    sub.add_argument("--room", required=True, help="the room id")
    sub.add_argument(
        "--status", choices=[status.value for status in TaskStatus], help="only these"
    )
    sub.add_argument(
        "--job", metavar="FULL_NAME", help="only this job's (@global:modifiers:Rotate)"
    )
    _paged(sub)

    sub = command("task", task, "show one task")
    sub.add_argument("id", metavar="ID", help="the task's id")
    _waits(sub, "then show it")

    sub = command("submit", submit, "submit a task")
    sub.add_argument("job", metavar="JOB", help="the job's full name")
    sub.add_argument("--room", required=True, help="the room to submit in")
    sub.add_argument(
        "--payload",
        type=_payload,
        default={},
        metavar="JSON",
        help="the job's parameters, a JSON object (default {})",
    )
    _waits(sub, "and show how it ended")
    sub.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="the same key again within a day answers the same task",
    )
    sub.add_argument(
        "--timeout-seconds",
        type=float,
        metavar="N",
        help="fail the task once it has run this long",
    )
    sub.add_argument(
        "--pending-timeout-seconds",
        type=float,
        metavar="N",
        help="fail the task if no worker took it within this long",
    )

    sub = command("cancel", cancel, "cancel a task")
    sub.add_argument("id", metavar="ID", help="the task's id")

    sub = command("watch", watch, "print a room's events as they come, until Ctrl-C")
    sub.add_argument("--room", required=True, help="the room to watch")
    sub.add_argument("--count", type=_count, metavar="N", help="stop after N events")
    sub.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long the connection may take (default %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `joblib` command; return its exit code (see `EPILOG`)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse explained
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    client = ApiClient(args.url, args.token)
    try:
        code: int = args.run(args, Rest(client))
        return code
    except TransportError as exc:
        if exc.reason == "rejected":  # the server answered, and said no
            _error(str(exc))
            return EXIT_REFUSED
        if exc.method is not None:
            _error(f"cannot reach {args.url}: {exc.detail} ({exc.method} {exc.url})")
        else:
            _error(str(exc))
        return EXIT_UNREACHABLE
    except JobLibError as exc:
        _error(_describe(exc, args))
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
