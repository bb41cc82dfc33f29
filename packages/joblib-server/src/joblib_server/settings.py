"""The server's settings: one object handed to every part; only the CLI reads env."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from joblib_protocol import DEFAULT_CATEGORIES

DEFAULT_DATABASE_URL = "sqlite:///./joblib.db"


class Settings(BaseModel):
    """Tunables of a joblib server; library code takes an instance, never the env."""

    allowed_categories: list[str] = Field(default_factory=lambda: [*DEFAULT_CATEGORIES])
    worker_timeout_seconds: float = Field(default=60, gt=0)
    sweeper_interval_seconds: float = Field(default=30, gt=0)
    long_poll_max_wait_seconds: float = Field(default=120, ge=0)
    long_poll_recheck_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How often a waiting long-poll re-reads the task, to see changes "
        "made by other server processes.",
    )
    internal_task_timeout_seconds: float = Field(default=3600, gt=0)
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    socketio_ping_interval_seconds: float = Field(default=8, gt=0)
    socketio_ping_timeout_seconds: float = Field(default=8, gt=0)

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """Read `JOBLIB_*` environment variables (for the CLI and standalone app)."""
        values = _EnvSettings().model_dump(exclude_unset=True)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


class _EnvSettings(BaseSettings, Settings):
    model_config = SettingsConfigDict(env_prefix="JOBLIB_", extra="ignore")
