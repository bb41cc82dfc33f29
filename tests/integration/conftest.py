"""Fixtures of the integration tests: a restartable server process and a room."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import ServerProcess, restartable_server, server_env


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    """`joblib-server serve` on the test database; a module may define its own."""
    with restartable_server(server_env(database_url), tmp_path / "server.log") as s:
        yield s


@pytest.fixture
def room() -> str:
    """A room of the test's own."""
    return f"room-{uuid.uuid4().hex[:8]}"
