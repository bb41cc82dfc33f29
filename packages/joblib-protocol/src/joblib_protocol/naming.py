"""Names on the wire: the API prefix, room ids, reserved rooms and job full names."""

from __future__ import annotations

from typing import NamedTuple

API_PREFIX = "/v1/joblib"
"""Where the REST routes live, relative to the server's root."""

GLOBAL_ROOM = "@global"
"""Jobs registered here are visible from every room."""

INTERNAL_ROOM = "@internal"
"""Jobs the server runs itself."""

RESERVED_ROOMS: frozenset[str] = frozenset({GLOBAL_ROOM, INTERNAL_ROOM})

DEFAULT_CATEGORIES: tuple[str, ...] = ("modifiers", "selections", "analysis")

MAX_PART_LENGTH = 255
"""Longest room id, category or job name accepted (ours: keeps keys indexable)."""

_SEPARATOR = ":"


def _has_control_chars(text: str) -> bool:
    return any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in text)


def validate_room_id(room_id: str) -> str:
    """Return `room_id` unchanged if it is a valid room id, else raise `ValueError`."""
    if room_id in RESERVED_ROOMS:
        return room_id
    if not room_id:
        raise ValueError("room id must not be empty")
    if len(room_id) > MAX_PART_LENGTH:
        raise ValueError(f"room id is longer than {MAX_PART_LENGTH} characters")
    if "@" in room_id or _SEPARATOR in room_id or "/" in room_id:
        raise ValueError(
            f"room id {room_id!r} must not contain '@', ':' or '/' "
            f"(only the reserved rooms {sorted(RESERVED_ROOMS)} start with '@')"
        )
    if _has_control_chars(room_id):
        raise ValueError("room id must not contain control characters")
    return room_id


def is_valid_room_id(room_id: str) -> bool:
    """Tell whether `room_id` is a valid room id."""
    try:
        validate_room_id(room_id)
    except ValueError:
        return False
    return True


def validate_job_name(name: str) -> str:
    """Return `name` unchanged if it is a valid job or category name, else raise."""
    if not name:
        raise ValueError("name must not be empty")
    if len(name) > MAX_PART_LENGTH:
        raise ValueError(f"name is longer than {MAX_PART_LENGTH} characters")
    if _SEPARATOR in name or "/" in name:
        # A '/' could never be reached: names travel in URL path segments.
        raise ValueError(f"name {name!r} must not contain ':' or '/'")
    if _has_control_chars(name):
        raise ValueError("name must not contain control characters")
    return name


def join_job_name(room_id: str, category: str, name: str) -> str:
    """Return `<room_id>:<category>:<name>` without checking the parts (hot paths)."""
    return f"{room_id}{_SEPARATOR}{category}{_SEPARATOR}{name}"


class JobFullName(NamedTuple):
    """The three parts of a job's full name; `str()` gives the wire form."""

    room_id: str
    category: str
    name: str

    def __str__(self) -> str:
        return join_job_name(*self)

    @classmethod
    def parse(cls, full_name: str) -> JobFullName:
        """Split `<room_id>:<category>:<name>`, raising `ValueError` when malformed."""
        parts = full_name.split(_SEPARATOR)
        if len(parts) != 3:
            raise ValueError(
                f"job name {full_name!r} is not of the form <room_id>:<category>:<name>"
            )
        room_id, category, name = parts
        return cls.build(room_id, category, name)

    @classmethod
    def build(cls, room_id: str, category: str, name: str) -> JobFullName:
        """Validate each part and return the full name."""
        validate_room_id(room_id)
        validate_job_name(category)
        validate_job_name(name)
        return cls(room_id, category, name)


def format_job_name(room_id: str, category: str, name: str) -> str:
    """Return the wire form `<room_id>:<category>:<name>` of a job's name."""
    return str(JobFullName.build(room_id, category, name))


def parse_job_name(full_name: str) -> JobFullName:
    """Split a job's full name into its parts, raising `ValueError` when malformed."""
    return JobFullName.parse(full_name)
