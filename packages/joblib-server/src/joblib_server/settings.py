"""Settings: `Settings` for the library, `StandaloneSettings` for the standalone server.

A host builds `Settings(...)` itself; nothing in the library reads the environment.
Only the standalone server (`joblib-server`, `create_app`) reads `JOBLIB_*`
variables, through `StandaloneSettings.from_env()`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.ext.asyncio import AsyncSession

from joblib_protocol import (
    DEFAULT_CATEGORIES,
    MAX_BATCH_SIZE,
    DisconnectAction,
    DisconnectPolicy,
)

DEFAULT_DATABASE_URL = "sqlite:///./joblib.db"
_ENV_PREFIX = "JOBLIB_"


class Settings(BaseModel):
    """Tunables of joblib's routes, sweeper and lifespan; a host passes an instance."""

    allowed_categories: list[str] = Field(
        default_factory=lambda: [*DEFAULT_CATEGORIES],
        description="The job categories workers may register (a JSON list in the "
        "environment).",
    )
    worker_timeout_seconds: float = Field(
        default=60,
        gt=0,
        description="A worker silent for longer is removed by the sweeper.",
    )
    sweeper_interval_seconds: float = Field(
        default=30, gt=0, description="How often the sweeper runs."
    )
    long_poll_max_wait_seconds: float = Field(
        default=300,
        ge=0,
        description="The cap of `Prefer: wait=N` (long-polls and held claims); 0 "
        "turns held claims off.",
    )
    long_poll_recheck_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How often a waiting long-poll or held claim checks the "
        "database anyway: a safety net for a wake-up lost between processes.",
    )
    wake_bus: Literal["auto", "postgresql", "redis", "off"] = Field(
        default="auto",
        description="How a change committed in one server process wakes held claims "
        "and long-polls in the others: `postgresql` (LISTEN/NOTIFY), `redis` "
        "(pub/sub on the Redis URL), `off` (at the next re-check only); `auto`: "
        "Redis when configured, else PostgreSQL on PostgreSQL, else off.",
    )
    internal_task_timeout_seconds: float = Field(
        default=3600,
        gt=0,
        description="`@internal` tasks running longer than this are failed.",
    )
    max_body_bytes: int = Field(
        default=1024 * 1024,
        gt=0,
        description="Larger request bodies get 413 payload-too-large.",
    )
    max_batch_size: int = Field(
        default=MAX_BATCH_SIZE,
        ge=1,
        description="The most payloads one batch submit takes; more get 422 "
        "validation-error. A batch's body may be 16 times `max_body_bytes`.",
    )
    max_result_bytes: int = Field(
        default=1024 * 1024,
        gt=0,
        description="The largest task result, as JSON; a `PATCH /tasks/{id}` "
        "completing a task takes a body this much larger than `max_body_bytes`, "
        "and a larger result gets 413 payload-too-large.",
    )
    body_timeout_seconds: float = Field(
        default=30,
        gt=0,
        description="A request body not fully received this long after its headers "
        "gets 408 request-timeout (REST), or its connection closed (JobLibServer).",
    )
    header_timeout_seconds: float = Field(
        default=10,
        gt=0,
        description="JobLibServer closes a connection whose request line and headers "
        "have not all arrived this long after it opened or its last answer.",
    )
    handshake_timeout_seconds: float = Field(
        default=5,
        gt=0,
        description="An Engine.IO session with no Socket.IO connection (so no "
        "identity) this long after it opened, or after it left, is closed.",
    )
    max_sockets: int = Field(
        default=1000,
        ge=1,
        description="Engine.IO sessions one server process holds at most; one more "
        "is refused (HTTP 401 with the reason).",
    )
    max_sockets_per_identity: int = Field(
        default=100,
        ge=1,
        description="Socket.IO connections one identity holds at most in one server "
        "process; one more is refused with the reason.",
    )
    idempotency_key_ttl_seconds: float = Field(
        default=24 * 3600,
        gt=0,
        description="How long a submit's Idempotency-Key answers the task it made; "
        "the sweeper deletes older keys.",
    )
    task_retention_seconds: float = Field(
        default=7 * 24 * 3600,
        gt=0,
        description="How long a finished (completed, failed or cancelled) task is "
        "kept after it finished; the sweeper deletes older ones. Pending, claimed "
        "and running tasks are kept whatever their age.",
    )
    max_list_offset: int = Field(
        default=10_000,
        ge=0,
        description="The largest `offset` a list accepts (422 beyond); a list's "
        "`total` counts at most this plus 500, the items a client can page to.",
    )
    disconnect_action: DisconnectAction = Field(
        default="fail",
        description="What happens to a lost task when its job sets no policy: "
        "`fail` it, or `requeue` it at its place in the queue.",
    )
    disconnect_max_attempts: int = Field(
        default=3,
        ge=1,
        description="With `requeue`: how many runs a task gets before it fails.",
    )
    disconnect_grace_seconds: float = Field(
        default=0,
        ge=0,
        description="How long a worker whose socket dropped may take to come back "
        "before its tasks are failed or requeued (0: at once).",
    )
    claim_start_timeout_seconds: float = Field(
        default=60,
        gt=0,
        description="A claimed task its worker has not started (reported running) "
        "this long after the claim goes back to pending, at its place in the queue "
        "and with the same attempt; the sweeper checks at each interval.",
    )
    heartbeat_task_margin_seconds: float = Field(
        default=10,
        ge=0,
        description="A heartbeat that lists the worker's tasks releases only the "
        "unlisted ones claimed longer ago than this: a claim whose answer is still "
        "on its way to the worker is not lost.",
    )
    upgrade_schema: bool = Field(
        default=True,
        description="lifespan() upgrades joblib's tables to the newest revision; "
        "False refuses to start on an out-of-date database with a clear message.",
    )
    allowed_provider_categories: list[str] | None = Field(
        default=None,
        description="The provider categories workers may register (a JSON list in "
        "the environment); none: any.",
    )
    provider_result_ttl_seconds: float = Field(
        default=300,
        gt=0,
        description="How long a provider's result answers identical reads from "
        "the cache.",
    )
    provider_inflight_ttl_seconds: float = Field(
        default=30,
        gt=0,
        description="How long a dispatched read stays in flight without an answer: "
        "identical reads meanwhile wait for it instead of asking the worker again.",
    )
    provider_long_poll_default_seconds: float = Field(
        default=5,
        ge=0,
        description="How long a provider read waits for the worker without a "
        "`Prefer: wait=N` header, before 504 provider-timeout.",
    )
    provider_long_poll_max_seconds: float = Field(
        default=30,
        ge=0,
        description="The cap of `Prefer: wait=N` on a provider read.",
    )
    max_provider_result_bytes: int = Field(
        default=16 * 1024 * 1024,
        gt=0,
        description="The largest provider result a worker may upload; larger gets "
        "413 payload-too-large.",
    )
    metrics_public: bool = Field(
        default=False,
        description="GET /metrics answers without a token; by default it takes "
        "an admin's.",
    )


_SETTINGS_KEY = "joblib_settings"


def settings_of(session: AsyncSession) -> Settings:
    """The settings of the `JobLib` whose `execute` opened `session`.

    A session a host opened itself gets the defaults.
    """
    settings = session.info.get(_SETTINGS_KEY)
    return settings if isinstance(settings, Settings) else Settings()


def bind_settings(session: AsyncSession, settings: Settings) -> None:
    """Let the operations run in `session` read `settings` (see `settings_of`)."""
    session.info[_SETTINGS_KEY] = settings


def default_policy(settings: Settings) -> DisconnectPolicy:
    """The disconnect policy of a job whose registration set none."""
    return DisconnectPolicy(
        action=settings.disconnect_action,
        max_attempts=settings.disconnect_max_attempts,
        grace_seconds=settings.disconnect_grace_seconds,
    )


class _StandaloneFields(BaseModel):
    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        description="sqlite:///path/to/joblib.db or postgresql://user@host/db "
        "(--database-url).",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis for Socket.IO between several server processes; needs "
        "the redis extra (pip install 'joblib-server[redis]').",
    )
    # 125 pings a second to 1,000 idle sockets were a third of their server's
    # CPU; a killed worker is noticed at once either way, only a frozen one or a
    # pulled cable waits for interval + timeout (35 s).
    socketio_ping_interval_seconds: float = Field(
        default=25, gt=0, description="The Socket.IO ping interval."
    )
    socketio_ping_timeout_seconds: float = Field(
        default=10,
        gt=0,
        description="A connection that misses a ping this long is dead.",
    )
    keep_alive_seconds: int = Field(
        default=5,
        gt=0,
        description="uvicorn's timeout_keep_alive: an idle keep-alive connection "
        "is closed after this long.",
    )
    graceful_shutdown_seconds: int = Field(
        default=10,
        gt=0,
        description="uvicorn's timeout_graceful_shutdown: connections still open "
        "this long after SIGTERM are closed anyway.",
    )
    tokens: SecretStr | None = Field(
        default=None,
        description='The whole token table as JSON: {"<token>": {"id": …, '
        '"admin": true}}. Takes the place of the tokens file.',
    )
    tokens_file: Path | None = Field(
        default=None,
        description="The tokens file; by default joblib-tokens.json next to an "
        "SQLite database, else in the working directory (--tokens-file).",
    )
    internal_extensions: list[str] = Field(
        default_factory=list,
        description="`Extension` classes the server runs as `@internal` jobs, as "
        "`module:Class` names (a JSON list in the environment).",
    )
    internal_executor: Literal["inprocess", "taskiq"] = Field(
        default="inprocess",
        description="What runs them: `inprocess`, on threads of the server, or "
        "`taskiq`, taskiq workers (needs the taskiq extra and `taskiq_broker`).",
    )
    internal_concurrency: int = Field(
        default=4,
        ge=1,
        description="With `inprocess`: how many internal tasks run at once.",
    )
    taskiq_broker: str | None = Field(
        default=None,
        description="With `taskiq`: the broker, as a `module:attribute` name.",
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="How serve writes its log: text lines, or one JSON object per "
        "line (--log-format).",
    )


class StandaloneSettings(_StandaloneFields):
    """The standalone server's own settings, and the library `Settings` it runs with."""

    joblib: Settings = Field(default_factory=Settings)

    @classmethod
    def from_env(cls, **overrides: Any) -> StandaloneSettings:
        """Read `JOBLIB_<NAME>` variables for both; given `overrides` win over them."""
        own = _StandaloneEnv().model_dump(exclude_unset=True)
        own.update({name: v for name, v in overrides.items() if v is not None})
        library = _LibraryEnv().model_dump(exclude_unset=True)
        return cls(**own, joblib=Settings(**library))


class _LibraryEnv(BaseSettings, Settings):
    model_config = SettingsConfigDict(env_prefix=_ENV_PREFIX, extra="ignore")


class _StandaloneEnv(BaseSettings, _StandaloneFields):
    model_config = SettingsConfigDict(env_prefix=_ENV_PREFIX, extra="ignore")
