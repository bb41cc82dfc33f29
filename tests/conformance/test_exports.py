"""The kit's public surface: what third parties import, and its check ids."""

from __future__ import annotations

import re
import subprocess
import sys

import joblib_conformance
import joblib_conformance.fake
from joblib_conformance.fake import WORKER_CHECKS

EXPECTED = {
    "__version__",
    # checks and running them
    "Check", "CheckFailed", "CheckSkipped", "Registry", "Report", "Result",
    "Status", "run_checks",
    # servers
    "SERVER_CHECKS", "ServerContext", "ServerTarget", "run_server_checks",
}  # fmt: skip

EXPECTED_FAKE = {
    "DRIVER", "WORKER", "WORKER_CHECKS", "FakeApp", "FakeServer", "Recording",
    "RestCall", "SocketCall", "WorkerScenario", "WorkerSession", "check_worker",
    "check_worker_command", "drive_worker",
}  # fmt: skip


def test_export_lists_are_what_we_mean() -> None:
    assert joblib_conformance.__version__ == "0.1.0"
    for module, expected in (
        (joblib_conformance, EXPECTED),
        (joblib_conformance.fake, EXPECTED_FAKE),
    ):
        assert set(module.__all__) == expected
        assert len(module.__all__) == len(expected), "duplicate in __all__"
        for name in module.__all__:
            assert hasattr(module, name), name


def test_check_ids_name_their_group() -> None:
    pattern = re.compile(r"^[a-z-]+(\.[a-z0-9-]+)+$")
    for registry in (joblib_conformance.SERVER_CHECKS, WORKER_CHECKS):
        for check in registry:
            assert pattern.match(check.id), check.id
    assert joblib_conformance.SERVER_CHECKS.groups == [
        "core",
        "ours",
        "results",
        "progress",
        "providers",
    ]
    assert WORKER_CHECKS.groups == ["worker", "worker-ours"]
    # Results and progress are part of the protocol: their checks count.
    for group in ("results", "progress"):
        checks = [c for c in joblib_conformance.SERVER_CHECKS if c.group == group]
        assert checks
        assert all(c.required for c in checks), group
    later = [c for c in joblib_conformance.SERVER_CHECKS if c.group == "providers"]
    assert later
    assert not any(c.required for c in later)


def test_the_server_kit_imports_without_the_fake_server_extra() -> None:
    code = (
        "import sys, joblib_conformance; "
        "assert not {'starlette', 'uvicorn'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
