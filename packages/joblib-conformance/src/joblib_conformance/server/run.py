"""Run the server checks against a target."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial

from joblib_conformance.runner import Report, Result, run_checks
from joblib_conformance.server.registry import SERVER_CHECKS
from joblib_conformance.target import ServerTarget, server_context


def run_server_checks(
    target: ServerTarget,
    *,
    groups: Iterable[str] | None = None,
    only: Iterable[str] | None = None,
    on_result: Callable[[Result], None] | None = None,
) -> Report:
    """Run the server checks of `groups` (default: all), or those `only` names.

    `only` takes check ids or dotted prefixes (`core.events`). Raises
    `ValueError` for an unknown group or an id that matches nothing.
    """
    checks = SERVER_CHECKS.select(groups, only)
    return run_checks(
        checks,
        partial(server_context, target),
        target=target.url,
        on_result=on_result,
    )
