"""Run checks one after the other and report: one line each, then a summary."""

from __future__ import annotations

import asyncio
import inspect
import time
import traceback
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from joblib_conformance.checks import Check, CheckFailed, CheckSkipped

ContextFactory = Callable[[Check], AbstractContextManager[Any]]
"""Builds the context a check runs in (clients, names, cleanup) for one check."""


class Status(StrEnum):
    """How a check ended."""

    PASS = "pass"
    FAIL = "fail"
    """The check saw something the protocol does not allow."""
    ERROR = "error"
    """The check could not finish (no answer, an exception): a failure too."""
    SKIP = "skip"


@dataclass(frozen=True)
class Result:
    """What one check found."""

    id: str
    group: str
    required: bool
    description: str
    status: Status
    seconds: float
    expected: str | None = None
    got: str | None = None

    @property
    def passed(self) -> bool:
        """Whether the check passed."""
        return self.status == Status.PASS

    @property
    def failed(self) -> bool:
        """Whether the check failed or could not finish."""
        return self.status in (Status.FAIL, Status.ERROR)

    def line(self) -> str:
        """The report's line for this check."""
        mark = self.status.value.upper()
        text = f"{mark} {self.id} — {self.description}"
        if self.failed:
            text += f": expected {self.expected}; got {self.got}"
        elif self.status == Status.SKIP:
            text += f" ({self.got})"
        if self.failed and not self.required:
            text += " [not required]"
        return text

    def as_json(self) -> dict[str, Any]:
        """The result as a JSON object."""
        return {
            "id": self.id,
            "group": self.group,
            "required": self.required,
            "description": self.description,
            "status": self.status.value,
            "seconds": round(self.seconds, 3),
            "expected": self.expected,
            "got": self.got,
        }


@dataclass
class Report:
    """The results of a run, in the order the checks ran."""

    target: str
    results: list[Result] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no required check failed (the exit code is 0 then).

        A skipped check did not apply (an option the operator did not give, a
        feature the server does not have): it fails nothing.
        """
        return not any(r.failed for r in self.results if r.required)

    def ids(self, *statuses: Status) -> list[str]:
        """The ids of the checks that ended in one of `statuses`."""
        return [r.id for r in self.results if r.status in statuses]

    @property
    def failed(self) -> list[str]:
        """The ids of the checks that failed or could not finish."""
        return self.ids(Status.FAIL, Status.ERROR)

    def summary(self) -> str:
        """Counts per group and in all, and whether the required checks pass."""
        groups: dict[str, list[Result]] = {}
        for result in self.results:
            groups.setdefault(result.group, []).append(result)
        parts = []
        for group, results in groups.items():
            passed = sum(r.passed for r in results)
            skipped = sum(r.status == Status.SKIP for r in results)
            part = f"{group} {passed}/{len(results) - skipped}"
            if skipped:
                part += f" ({skipped} skipped)"
            parts.append(part)
        counts = {status: len(self.ids(status)) for status in Status}
        verdict = (
            "every required check passed"
            if self.ok
            else "required checks failed: "
            + ", ".join(r.id for r in self.results if r.required and r.failed)
        )
        return (
            f"{self.target}: {', '.join(parts)} — {counts[Status.PASS]} passed, "
            f"{counts[Status.FAIL] + counts[Status.ERROR]} failed, "
            f"{counts[Status.SKIP]} skipped; {verdict}"
        )

    def as_json(self) -> dict[str, Any]:
        """The report as a JSON object (`--json`)."""
        return {
            "target": self.target,
            "ok": self.ok,
            "results": [r.as_json() for r in self.results],
            "summary": {
                "passed": len(self.ids(Status.PASS)),
                "failed": len(self.failed),
                "skipped": len(self.ids(Status.SKIP)),
                "required_failed": [
                    r.id for r in self.results if r.required and r.failed
                ],
            },
        }


def run_check(check: Check, context: ContextFactory) -> Result:
    """Run one check in a fresh context and turn how it ended into a `Result`."""
    started = time.monotonic()
    status, expected, got = Status.PASS, None, None
    try:
        with context(check) as ctx:
            outcome = check.run(ctx)
            if inspect.isawaitable(outcome):
                asyncio.run(_finish(outcome))
    except CheckFailed as exc:
        status, expected, got = Status.FAIL, exc.expected, exc.got
    except CheckSkipped as exc:
        status, got = Status.SKIP, exc.reason
    except Exception as exc:
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        status, expected = Status.ERROR, "the check to run to its end"
        got = f"{type(exc).__name__}: {exc} (at {frame.name}, line {frame.lineno})"
    return Result(
        id=check.id,
        group=check.group,
        required=check.required,
        description=check.description,
        status=status,
        seconds=time.monotonic() - started,
        expected=expected,
        got=got,
    )


async def _finish(awaitable: Any) -> None:
    await awaitable


def run_checks(
    checks: Iterable[Check],
    context: ContextFactory,
    *,
    target: str,
    on_result: Callable[[Result], None] | None = None,
) -> Report:
    """Run `checks` one after the other; call `on_result` as each one ends."""
    report = Report(target)
    for check in checks:
        result = run_check(check, context)
        report.results.append(result)
        if on_result is not None:
            on_result(result)
    return report
