import pytest

from joblib_protocol import (
    API_PREFIX,
    GLOBAL_ROOM,
    INTERNAL_ROOM,
    JobFullName,
    format_job_name,
    is_valid_room_id,
    join_job_name,
    parse_job_name,
    validate_room_id,
)


@pytest.mark.parametrize(
    "full_name",
    [
        "@global:modifiers:Rotate",
        "@internal:analysis:Energy",
        "room_1:selections:All Atoms",
        "ümlaut-room:modifiers:Ünïcode",
    ],
)
def test_parse_format_round_trip(full_name: str) -> None:
    parsed = parse_job_name(full_name)
    assert str(parsed) == full_name
    assert format_job_name(*parsed) == full_name
    assert join_job_name(*parsed) == full_name


def test_parse_gives_the_parts() -> None:
    assert parse_job_name("room_1:modifiers:Rotate") == JobFullName(
        "room_1", "modifiers", "Rotate"
    )


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "Rotate",
        "@global:Rotate",
        "a:b:c:d",
        "::",
        "room:modifiers:",
        ":modifiers:Rotate",
        "room:modifiers:Ro\ntate",
        "@other:modifiers:Rotate",
        "ro@om:modifiers:Rotate",
        "room:modifiers:Ro/tate",
        "ro/om:modifiers:Rotate",
    ],
)
def test_malformed_full_names_raise_value_error(bad: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - any ValueError, not IndexError
        parse_job_name(bad)


@pytest.mark.parametrize("room", [GLOBAL_ROOM, INTERNAL_ROOM, "room_1", "a b", "ü"])
def test_valid_room_ids(room: str) -> None:
    assert validate_room_id(room) == room
    assert is_valid_room_id(room)


@pytest.mark.parametrize(
    "room", ["", "@", "@globals", "a@b", "a:b", "room:1", "tab\there", "x" * 256]
)
def test_invalid_room_ids(room: str) -> None:
    assert not is_valid_room_id(room)
    with pytest.raises(ValueError, match="room id"):
        validate_room_id(room)


def test_join_job_name_does_not_check_its_parts() -> None:
    # For names read back from storage: the hot paths skip the validation.
    assert join_job_name("a:b", "", "c") == "a:b::c"
    with pytest.raises(ValueError, match="room id"):
        format_job_name("a:b", "modifiers", "c")


def test_api_prefix() -> None:
    assert API_PREFIX == "/v1/joblib"
