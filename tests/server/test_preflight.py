"""`joblib-server serve` refuses every startup mistake in one line, exit 2, and
writes nothing: no tokens file, no SQLite database, no folder.

Each case runs the installed command in a subprocess, in an empty folder where the
default database (`./joblib.db`) and tokens file (`./joblib-tokens.json`) would go.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.command import command_env, run_command
from tests.support.servers import free_port
from tests.support.services import PG_ADMIN_URL, pg_exec, service_missing

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Mistake:
    says: str
    """A part of the one line on stderr."""
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def _in_a_missing_folder(here: Path) -> Mistake:
    database = here / "missing" / "joblib.db"
    return Mistake(
        f"the folder {here / 'missing'} of the SQLite database does not exist",
        ["--database-url", f"sqlite:///{database}"],
    )


def _tokens_not_json(here: Path) -> Mistake:
    (here / "joblib-tokens.json").write_text("{not json")
    return Mistake(f"{here / 'joblib-tokens.json'}: not JSON")


def _tokens_unreadable(here: Path) -> Mistake:
    # A folder where the file should be: unreadable as a file, even for root.
    (here / "tokens").mkdir()
    return Mistake(
        f"cannot read the tokens file {here / 'tokens'}",
        ["--tokens-file", str(here / "tokens")],
    )


def _tokens_in_a_missing_folder(here: Path) -> Mistake:
    tokens = here / "nowhere" / "tokens.json"
    return Mistake(
        f"the folder {tokens.parent} of the tokens file does not exist",
        ["--tokens-file", str(tokens)],
    )


def _redis_not_installed(here: Path) -> Mistake:
    # Simulates an installation without the `redis` extra: a `redis` module
    # first on the path that fails to import, as an absent package does.
    shim = here.parent / "without-redis"
    (shim / "redis").mkdir(parents=True)
    (shim / "redis" / "__init__.py").write_text(
        "raise ImportError(\"No module named 'redis' (simulated)\")\n"
    )
    return Mistake(
        "the redis package is not installed: pip install 'joblib-server[redis]'",
        env={"JOBLIB_REDIS_URL": "redis://127.0.0.1:6379", "PYTHONPATH": str(shim)},
    )


def _no_such_database(here: Path) -> Mistake:
    try:
        asyncio.run(pg_exec(PG_ADMIN_URL, "SELECT 1"))
    except (TimeoutError, OSError) as exc:
        service_missing(f"PostgreSQL at {PG_ADMIN_URL} ({exc})")
    return Mistake(
        'database "joblib_nowhere" does not exist',
        ["--database-url", PG_ADMIN_URL.rsplit("/", 1)[0] + "/joblib_nowhere"],
    )


_taken: list[socket.socket] = []


def _port_in_use(here: Path) -> Mistake:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    _taken.append(taken)
    port = taken.getsockname()[1]
    return Mistake(
        f"cannot listen on 127.0.0.1:{port}: address already in use",
        ["--port", str(port)],
    )


MISTAKES: dict[str, Callable[[Path], Mistake]] = {
    "sqlite in a missing folder": _in_a_missing_folder,
    "mysql url": lambda _: Mistake(
        "unsupported database URL 'mysql://db.example/joblib'",
        ["--database-url", "mysql://db.example/joblib"],
    ),
    "malformed url": lambda _: Mistake(
        "Could not parse the database URL 'not a url'",
        env={"JOBLIB_DATABASE_URL": "not a url"},
    ),
    "postgresql down": lambda _: Mistake(
        "cannot connect to the database at 127.0.0.1:1:",
        ["--database-url", "postgresql://postgres@127.0.0.1:1/joblib"],
    ),
    "postgresql without the database": _no_such_database,
    "categories not json": lambda _: Mistake(
        "JOBLIB_ALLOWED_CATEGORIES='a,b' is not JSON: expected a JSON list, e.g. "
        'JOBLIB_ALLOWED_CATEGORIES=\'["modifiers"',
        env={"JOBLIB_ALLOWED_CATEGORIES": "a,b"},
    ),
    "a number that is not": lambda _: Mistake(
        "JOBLIB_WORKER_TIMEOUT_SECONDS='soon': Input should be a valid number",
        env={"JOBLIB_WORKER_TIMEOUT_SECONDS": "soon"},
    ),
    "log level": lambda _: Mistake(
        "argument --log-level: invalid choice: 'nonsense'",
        ["--log-level", "nonsense"],
    ),
    "log format": lambda _: Mistake(
        "JOBLIB_LOG_FORMAT='xml': Input should be 'text' or 'json'",
        env={"JOBLIB_LOG_FORMAT": "xml"},
    ),
    "port out of range": lambda _: Mistake(
        "argument --port: '99999' is not a port (1-65535)", ["--port", "99999"]
    ),
    "port in use": _port_in_use,
    "tokens file not json": _tokens_not_json,
    "tokens file unreadable": _tokens_unreadable,
    "tokens file in a missing folder": _tokens_in_a_missing_folder,
    "JOBLIB_TOKENS not json": lambda _: Mistake(
        "JOBLIB_TOKENS: Expecting", env={"JOBLIB_TOKENS": "{x"}
    ),
    "redis not answering": lambda _: Mistake(
        "Redis at 127.0.0.1:1 (JOBLIB_REDIS_URL) does not answer:",
        env={"JOBLIB_REDIS_URL": "redis://127.0.0.1:1"},
    ),
    "redis not installed": _redis_not_installed,
    "internal job not importable": lambda _: Mistake(
        "JOBLIB_INTERNAL_EXTENSIONS: 'no_such_module_xyz:Job': cannot import "
        "'no_such_module_xyz'",
        env={"JOBLIB_INTERNAL_EXTENSIONS": '["no_such_module_xyz:Job"]'},
    ),
    "internal job missing": lambda _: Mistake(
        "JOBLIB_INTERNAL_EXTENSIONS: 'json:Rotate': 'json' has no 'Rotate'",
        env={"JOBLIB_INTERNAL_EXTENSIONS": '["json:Rotate"]'},
    ),
    "internal job not an extension": lambda _: Mistake(
        "JOBLIB_INTERNAL_EXTENSIONS: 'json:dumps': <function dumps",
        env={"JOBLIB_INTERNAL_EXTENSIONS": '["json:dumps"]'},
    ),
    "internal job without a colon": lambda _: Mistake(
        "JOBLIB_INTERNAL_EXTENSIONS: 'Rotate' is not of the form module:Class",
        env={"JOBLIB_INTERNAL_EXTENSIONS": '["Rotate"]'},
    ),
    "internal jobs not json": lambda _: Mistake(
        "JOBLIB_INTERNAL_EXTENSIONS='pkg:Rotate' is not JSON",
        env={"JOBLIB_INTERNAL_EXTENSIONS": "pkg:Rotate"},
    ),
    "internal job without a category": lambda _: Mistake(
        "'joblib_client.extension:Extension': Extension must set `category",
        env={"JOBLIB_INTERNAL_EXTENSIONS": '["joblib_client.extension:Extension"]'},
    ),
    "taskiq without a broker": lambda _: Mistake(
        "JOBLIB_TASKIQ_BROKER is not set",
        env={
            "JOBLIB_INTERNAL_EXTENSIONS": '["tests.support.internal_jobs:Double"]',
            "JOBLIB_INTERNAL_EXECUTOR": "taskiq",
            "PYTHONPATH": str(ROOT),
        },
    ),
    "taskiq broker not a broker": lambda _: Mistake(
        "JOBLIB_TASKIQ_BROKER: <function dumps",
        env={
            "JOBLIB_INTERNAL_EXTENSIONS": '["tests.support.internal_jobs:Double"]',
            "JOBLIB_INTERNAL_EXECUTOR": "taskiq",
            "JOBLIB_TASKIQ_BROKER": "json:dumps",
            "PYTHONPATH": str(ROOT),
        },
    ),
    "redis wake bus without redis": lambda _: Mistake(
        "JOBLIB_WAKE_BUS=redis needs JOBLIB_REDIS_URL",
        env={"JOBLIB_WAKE_BUS": "redis"},
    ),
    "notify wake bus on sqlite": lambda _: Mistake(
        "JOBLIB_WAKE_BUS=postgresql needs a PostgreSQL database",
        env={"JOBLIB_WAKE_BUS": "postgresql"},
    ),
}


@pytest.fixture
def here(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "work"
    folder.mkdir()
    yield folder
    while _taken:
        _taken.pop().close()


@pytest.mark.parametrize("case", list(MISTAKES))
def test_a_startup_mistake_is_one_line_and_writes_nothing(
    case: str, here: Path
) -> None:
    mistake = MISTAKES[case](here)
    before = sorted(path.name for path in here.iterdir())
    done = run_command(
        "serve",
        "--port",
        str(free_port()),
        *mistake.args,
        env=command_env(**mistake.env),
        cwd=here,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("joblib-server"), line
    assert ": error: " in line
    assert mistake.says in line
    assert "Traceback" not in done.stderr
    assert sorted(path.name for path in here.iterdir()) == before
    assert not (here / "joblib-tokens.json").exists() or "tokens" in case
    assert not (here / "joblib.db").exists()
