"""Moved to `tests.support` (sockets, processes, rest); kept while imports move."""

from tests.support.processes import (
    WorkerProcess,
    python_process,
    server_process,
    stop_process,
    worker_process,
)
from tests.support.rest import rest
from tests.support.sockets import Event, Peer, connect_peer

__all__ = [
    "Event",
    "Peer",
    "WorkerProcess",
    "connect_peer",
    "python_process",
    "rest",
    "server_process",
    "stop_process",
    "worker_process",
]
