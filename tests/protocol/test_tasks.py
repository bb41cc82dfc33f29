import itertools

import pytest

from joblib_protocol import (
    TERMINAL_STATUSES,
    VALID_TRANSITIONS,
    TaskStatus,
    is_terminal,
    is_valid_transition,
)

S = TaskStatus
ALLOWED = {
    (S.PENDING, S.CLAIMED),
    (S.PENDING, S.CANCELLED),
    (S.CLAIMED, S.RUNNING),
    (S.CLAIMED, S.FAILED),
    (S.CLAIMED, S.CANCELLED),
    (S.RUNNING, S.COMPLETED),
    (S.RUNNING, S.FAILED),
    (S.RUNNING, S.CANCELLED),
}


@pytest.mark.parametrize(("old", "new"), list(itertools.product(S, S)))
def test_transition_table(old: TaskStatus, new: TaskStatus) -> None:
    assert is_valid_transition(old, new) is ((old, new) in ALLOWED)
    assert is_valid_transition(old.value, new.value) is ((old, new) in ALLOWED)


def test_terminal_states_have_no_way_out() -> None:
    assert {S.COMPLETED, S.FAILED, S.CANCELLED} == TERMINAL_STATUSES
    for status in TERMINAL_STATUSES:
        assert VALID_TRANSITIONS[status] == frozenset()
        assert is_terminal(status)
    assert not is_terminal(S.RUNNING)


def test_unknown_states_are_never_valid() -> None:
    assert not is_valid_transition("pending", "exploded")
    assert not is_valid_transition("exploded", "pending")


def test_status_values_are_the_wire_strings() -> None:
    assert [s.value for s in S] == [
        "pending",
        "claimed",
        "running",
        "completed",
        "failed",
        "cancelled",
    ]
