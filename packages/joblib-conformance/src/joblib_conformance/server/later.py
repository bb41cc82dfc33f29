"""Placeholders for the 0.2.0 additions the kit does not check yet.

Each is reported as skipped and is not required: a server can claim `core` and
`ours` today, and these groups get real checks when results, progress and
providers are part of the protocol.
"""

from __future__ import annotations

from joblib_conformance.checks import CheckSkipped
from joblib_conformance.server.registry import SERVER_CHECKS
from joblib_conformance.target import ServerContext

LATER = {
    "results.task-result": "a task's result stored with its completion and read back",
    "progress.task-progress": "progress reports of a running task and their events",
    "providers.provider-routes": "providers: data a worker serves to the host",
}


def _placeholder(feature: str) -> None:
    def run(ctx: ServerContext) -> None:
        raise CheckSkipped(f"not in the kit yet: {feature} is a later addition")

    SERVER_CHECKS.check(feature, LATER[feature], required=False)(run)


for _feature in LATER:
    _placeholder(_feature)
