"""Checks and their registries: what a check is, how it fails, how it is found."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

CheckFunction = Callable[[Any], "Awaitable[None] | None"]
"""A check's body: called with its context; sync, or async (run to completion)."""

F = TypeVar("F", bound=CheckFunction)


class CheckFailed(Exception):
    """A check saw something other than what the protocol says.

    `expected` says what the protocol wants, `got` what came back (a string, or
    anything else shown by its `repr`); both end up on the check's report line.
    """

    def __init__(self, expected: str, got: object) -> None:
        shown = got if isinstance(got, str) else repr(got)
        super().__init__(f"expected {expected}; got {shown}")
        self.expected = expected
        self.got = shown


class CheckSkipped(Exception):
    """A check that does not apply here (a placeholder, or a feature turned off)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Check:
    """One conformance check.

    `id` is `<group>.<area>.<name>`; its first part is the group, so a run can be
    narrowed to a group (`core`) or an area (`core.events`). A check that is not
    `required` is reported like the others but never fails a run.
    """

    id: str
    description: str
    run: CheckFunction
    required: bool = True

    @property
    def group(self) -> str:
        """The group the check belongs to: the first part of its id."""
        return self.id.split(".", 1)[0]


class Registry:
    """An ordered set of checks, registered with the `check` decorator."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._checks: dict[str, Check] = {}

    def check(
        self, check_id: str, description: str, *, required: bool = True
    ) -> Callable[[F], F]:
        """Register the decorated function as the check `check_id`."""

        def register(function: F) -> F:
            self.add(Check(check_id, description, function, required))
            return function

        return register

    def add(self, check: Check) -> None:
        """Add one check; ids are unique."""
        if check.id in self._checks:
            raise ValueError(f"check {check.id!r} is already registered")
        self._checks[check.id] = check

    def __iter__(self) -> Iterator[Check]:
        return iter(self._checks.values())

    def __len__(self) -> int:
        return len(self._checks)

    def __getitem__(self, check_id: str) -> Check:
        return self._checks[check_id]

    @property
    def groups(self) -> list[str]:
        """The group names, in the order their first check was registered."""
        return list(dict.fromkeys(check.group for check in self))

    def select(
        self,
        groups: Iterable[str] | None = None,
        only: Iterable[str] | None = None,
    ) -> list[Check]:
        """The checks of `groups` (default: all) whose ids match one of `only`.

        An entry of `only` matches a check's id exactly or as a dotted prefix
        (`core.events` matches `core.events.after-commit`). Unknown groups and
        entries that match nothing raise `ValueError`, so a typo never passes
        silently as an empty run.
        """
        wanted = list(groups) if groups is not None else self.groups
        unknown = [group for group in wanted if group not in self.groups]
        if unknown:
            raise ValueError(f"unknown groups {unknown}; there are {self.groups}")
        # Grouped in the registry's order of groups, each in registration order.
        order = {group: index for index, group in enumerate(self.groups)}
        chosen = sorted(
            (check for check in self if check.group in wanted),
            key=lambda check: order[check.group],
        )
        if only is None:
            return chosen
        patterns = list(only)
        unmatched = [
            p for p in patterns if not any(_matches(p, check.id) for check in chosen)
        ]
        if unmatched:
            raise ValueError(f"no check matches {unmatched}")
        return [
            check for check in chosen if any(_matches(p, check.id) for p in patterns)
        ]


def _matches(pattern: str, check_id: str) -> bool:
    return check_id == pattern or check_id.startswith(pattern + ".")
