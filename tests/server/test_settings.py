"""Settings: the library's never read the environment; the standalone server's do."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from pydantic import SecretStr

from joblib_server import Settings, StandaloneSettings
from joblib_server.settings import DEFAULT_DATABASE_URL

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A clean slate of JOBLIB_* variables, then some of each kind."""
    for name in list(os.environ):
        if name.startswith("JOBLIB_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("JOBLIB_WORKER_TIMEOUT_SECONDS", "5")
    monkeypatch.setenv("JOBLIB_ALLOWED_CATEGORIES", '["analysis"]')
    monkeypatch.setenv("JOBLIB_UPGRADE_SCHEMA", "false")
    monkeypatch.setenv("JOBLIB_DATABASE_URL", "postgresql://db.example/joblib")
    monkeypatch.setenv("JOBLIB_REDIS_URL", "redis://cache.example:6379/0")
    monkeypatch.setenv("JOBLIB_SOCKETIO_PING_INTERVAL_SECONDS", "3")
    monkeypatch.setenv("JOBLIB_TOKENS", '{"t": {"id": "a"}}')
    monkeypatch.setenv("JOBLIB_TOKENS_FILE", "/etc/joblib/tokens.json")
    return monkeypatch


def test_library_settings_ignore_the_environment(
    environment: pytest.MonkeyPatch,
) -> None:
    settings = Settings()
    assert settings.worker_timeout_seconds == 60
    assert settings.upgrade_schema is True
    assert not hasattr(settings, "database_url")


def test_standalone_settings_read_every_joblib_variable(
    environment: pytest.MonkeyPatch,
) -> None:
    settings = StandaloneSettings.from_env()
    assert settings.database_url == "postgresql://db.example/joblib"
    assert settings.redis_url == "redis://cache.example:6379/0"
    assert settings.socketio_ping_interval_seconds == 3
    assert settings.socketio_ping_timeout_seconds == 10
    assert settings.tokens == SecretStr('{"t": {"id": "a"}}')
    assert settings.tokens_file == Path("/etc/joblib/tokens.json")
    assert settings.joblib.worker_timeout_seconds == 5
    assert settings.joblib.allowed_categories == ["analysis"]
    assert settings.joblib.upgrade_schema is False
    assert settings.joblib.sweeper_interval_seconds == 30


def test_given_values_win_over_the_environment(
    environment: pytest.MonkeyPatch,
) -> None:
    given = StandaloneSettings.from_env(database_url="sqlite:///given.db")
    assert given.database_url == "sqlite:///given.db"
    unset = StandaloneSettings.from_env(database_url=None)
    assert unset.database_url == "postgresql://db.example/joblib"


def test_standalone_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("JOBLIB_"):
            monkeypatch.delenv(name)
    settings = StandaloneSettings.from_env()
    assert settings == StandaloneSettings()
    assert settings.database_url == DEFAULT_DATABASE_URL == "sqlite:///./joblib.db"
    assert settings.redis_url is None
    assert settings.tokens is None
    assert settings.tokens_file is None
    assert settings.joblib == Settings()


def _readme_rows(heading: str) -> dict[str, str]:
    """The settings table after `heading` in README.md: name to default."""
    text = README.read_text()
    section = text[text.index(heading) :]
    table = section[: section.index("\n\n", section.index("|---|"))]
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", table, re.MULTILINE)
    return {name: default.strip() for name, default in rows}


def test_the_readme_lists_each_setting_in_its_table_with_its_default() -> None:
    library = _readme_rows("Library, `Settings(...)`")
    standalone = _readme_rows("Standalone only, `StandaloneSettings`")
    assert set(library) == set(Settings.model_fields)
    assert set(standalone) == set(StandaloneSettings.model_fields) - {"joblib"}
    for name, default in {**library, **standalone}.items():
        model = Settings if name in library else StandaloneSettings
        value = model().model_dump()[name]
        if isinstance(value, bool):
            assert default == str(value).lower(), name
        elif isinstance(value, int | float):
            assert float(default) == value, name
        elif value is None:
            assert default == "none" or name == "tokens_file", name
