"""Server of joblib: routes, tables, Socket.IO glue, worker cleanup and the sweeper."""

from joblib_server.app import API_PREFIX, JobLibServer, create_app
from joblib_server.auth import (
    AuthBackend,
    Identity,
    TokenAuth,
    TokenStore,
    TokenTable,
    bearer_token,
)
from joblib_server.backends import Backend, PostgresBackend, SqliteBackend
from joblib_server.database import Database, create_engine
from joblib_server.disconnects import (
    CleanupReceipt,
    cleanup_stale_workers,
    cleanup_worker,
    cleanup_worker_by_id,
)
from joblib_server.emitter import Emitter, NullEmitter, RecordingEmitter
from joblib_server.errors import JobLibError, ProblemError, SchemaNotCurrent
from joblib_server.executors import Executor, InProcessExecutor, Reports
from joblib_server.jobs import soft_delete_orphan_jobs
from joblib_server.outcome import Dispatch, Operation, Outcome
from joblib_server.policy import AccessPolicy, Action, OpenRooms, RoomPatterns
from joblib_server.realtime import (
    Realtime,
    SocketIOEmitter,
    attach_joblib,
    create_socketio_server,
)
from joblib_server.runtime import JobLib
from joblib_server.settings import Settings, StandaloneSettings
from joblib_server.sweeper import Sweep, run_sweeper, sweep_once
from joblib_server.tables import Job, Task, Worker, WorkerJobLink
from joblib_server.tasks import cleanup_stuck_internal_tasks
from joblib_server.wakebus import (
    NoWakeBus,
    PostgresWakeBus,
    RedisWakeBus,
    WakeBus,
    choose_wake_bus,
)

__version__ = "0.1.0"

__all__ = [
    "API_PREFIX",
    "AccessPolicy",
    "Action",
    "AuthBackend",
    "Backend",
    "CleanupReceipt",
    "Database",
    "Dispatch",
    "Emitter",
    "Executor",
    "Identity",
    "InProcessExecutor",
    "Job",
    "JobLib",
    "JobLibError",
    "JobLibServer",
    "NoWakeBus",
    "NullEmitter",
    "OpenRooms",
    "Operation",
    "Outcome",
    "PostgresBackend",
    "PostgresWakeBus",
    "ProblemError",
    "Realtime",
    "RecordingEmitter",
    "RedisWakeBus",
    "Reports",
    "RoomPatterns",
    "SchemaNotCurrent",
    "Settings",
    "SocketIOEmitter",
    "SqliteBackend",
    "StandaloneSettings",
    "Sweep",
    "Task",
    "TokenAuth",
    "TokenStore",
    "TokenTable",
    "WakeBus",
    "Worker",
    "WorkerJobLink",
    "__version__",
    "attach_joblib",
    "bearer_token",
    "choose_wake_bus",
    "cleanup_stale_workers",
    "cleanup_stuck_internal_tasks",
    "cleanup_worker",
    "cleanup_worker_by_id",
    "create_app",
    "create_engine",
    "create_socketio_server",
    "run_sweeper",
    "soft_delete_orphan_jobs",
    "sweep_once",
]
