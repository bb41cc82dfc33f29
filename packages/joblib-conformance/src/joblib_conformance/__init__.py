"""joblib's conformance kit: black-box checks that a server or a worker speaks
the joblib protocol.

Servers: `run_server_checks(ServerTarget(url, admin_token=…, user_token=…,
other_user_token=…))` or `joblib-conformance server URL …`. Workers: the fake
server in `joblib_conformance.fake` (extra `fake-server`) records what a worker
sends, and `WORKER_CHECKS` judge it.
"""

from joblib_conformance.checks import Check, CheckFailed, CheckSkipped, Registry
from joblib_conformance.runner import Report, Result, Status, run_checks
from joblib_conformance.server import SERVER_CHECKS, run_server_checks
from joblib_conformance.target import ServerContext, ServerTarget

__version__ = "0.1.0"

__all__ = [
    "SERVER_CHECKS",
    "Check",
    "CheckFailed",
    "CheckSkipped",
    "Registry",
    "Report",
    "Result",
    "ServerContext",
    "ServerTarget",
    "Status",
    "__version__",
    "run_checks",
    "run_server_checks",
]
