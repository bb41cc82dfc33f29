"""The server checks, by group: `core` (the zndraw-joblib-compatible wire API and
events), `ours` (what joblib adds), `results` and `progress` (tasks as calls),
and placeholders for later additions (`providers`).

Importing this package registers every check in `SERVER_CHECKS`; the modules are
imported in the order their checks run (within each group).
"""

import importlib

from joblib_conformance.server.registry import SERVER_CHECKS
from joblib_conformance.server.run import run_server_checks

MODULES = (
    "workers",
    "jobs",
    "tasks",
    "idempotency",
    "claims",
    "longpoll",
    "events",
    "sockets",
    "disconnect",
    "grace",
    "errors",
    "payloads",
    "limits",
    "cancel",
    "results",
    "progress",
    "later",
)

for _module in MODULES:
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["MODULES", "SERVER_CHECKS", "run_server_checks"]
