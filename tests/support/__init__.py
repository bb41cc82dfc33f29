"""Helpers shared by the test suite; `tests/conftest.py` holds only fixtures.

- `waiting`: `eventually()` / `aeventually()`, to wait on a condition, never a sleep
- `tokens`: the test identities (ADMIN, ALICE, BOB) and their tokens
- `services`: where PostgreSQL and Redis are, and what to do without them
- `servers`: test settings, free ports, uvicorn in a thread (`LiveServer`)
- `rest`: REST calls that read as a test's story, and a live-server client
- `rows`: what the database holds, read past the API
- `sockets`: recording Socket.IO peers, and when the server handled a disconnect
- `processes`: scripts and `joblib-server` in processes of their own; a server
  that stops and starts again, and `JobManager` workers (manager_worker.py)
- `proxy`: a TCP forwarder that cuts its connections, a network blip on demand
- `load`: load for the reliability suite: `JobManager` workers that write down
  every task they ran (ledger_worker.py), a paced submitter, the rows afterwards
"""

from tests.support.waiting import aeventually, eventually

__all__ = ["aeventually", "eventually"]
