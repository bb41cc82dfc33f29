"""`listen()` while the server is away: it keeps trying, at the polling pace."""

from __future__ import annotations

from joblib_client import JobManager
from joblib_server import Settings
from tests.client.conftest import Listener, RequestCounter, standalone_app
from tests.client.extensions import Rotate
from tests.support import eventually
from tests.support.servers import serve_in_thread
from tests.support.tokens import ADMIN

POLLING_INTERVAL = 0.3


def test_listen_pauses_between_claims_while_the_server_is_down(
    database_url: str, settings: Settings
) -> None:
    claims = RequestCounter("/tasks/claim")
    with serve_in_thread(standalone_app(database_url, settings)) as server:
        manager = JobManager.connect(
            server.url, token=ADMIN, socket=False, heartbeat_interval=None
        )
        manager.register(Rotate)
        manager.api.http.event_hooks["request"].append(claims)
        listener = Listener(manager, polling_interval=POLLING_INTERVAL)
        listener.__enter__()
        eventually(lambda: len(claims), what="the first claim")
    # The server is gone: every claim now fails to connect.
    claims.clear()
    try:
        eventually(lambda: len(claims) >= 3, what="three claims without a server")
    finally:
        listener.__exit__(None, None, None)
        manager.close()
    # It keeps trying, about once per polling interval, not in a loop without pauses.
    assert min(claims.gaps()[:2]) >= POLLING_INTERVAL * 0.95
