"""`listen()` while the server is away: it keeps trying, at the polling pace."""

from __future__ import annotations

import time

from joblib_client import JobManager
from joblib_server import Settings, StandaloneSettings, TokenAuth, create_app
from tests.client.conftest import Listener, RequestCounter
from tests.client.extensions import Rotate
from tests.support.servers import serve_in_thread
from tests.support.tokens import ADMIN, TOKENS


def test_listen_pauses_between_claims_while_the_server_is_down(
    database_url: str, settings: Settings
) -> None:
    app = create_app(
        StandaloneSettings(database_url=database_url, joblib=settings),
        TokenAuth(TOKENS),
        realtime=False,
    )
    claims = RequestCounter()
    with serve_in_thread(app) as server:
        manager = JobManager.connect(
            server.url, token=ADMIN, socket=False, heartbeat_interval=None
        )
        manager.register(Rotate)
        manager.api.http.event_hooks["request"].append(claims)
        listener = Listener(manager, polling_interval=0.3)
        listener.__enter__()
        time.sleep(0.2)  # its claim is held by the server
    # The server is gone: every claim now fails to connect.
    claims.requests.clear()
    time.sleep(1.5)
    attempts = len(claims.requests)
    listener.__exit__(None, None, None)
    manager.close()
    # About one attempt per polling interval, not a loop without pauses.
    assert 2 <= attempts <= 8
