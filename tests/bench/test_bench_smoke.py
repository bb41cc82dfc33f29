"""`python -m bench --quick` runs end to end on SQLite and reports no errors.

A smoke test only: it checks that the benchmark works and emits its JSON line, never
how fast anything is. The full benchmark stays out of the test suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SECTIONS = {
    "throughput",
    "latency",
    "disconnect",
    "backlog",
    "calls",
    "providers",
    "crossprocess",
    "batch",
    "connections",
    "idle",
}
DISCONNECT_METRICS = (
    "kill_to_failed_ms",
    "kill_to_requeued_ms",
    "kill_to_reclaimed_ms",
    "restart_to_ready_ms",
    "restart_to_rejoined_ms",
)
CALLS_METRICS = (
    ("cancel", "to_seen_ms"),
    ("validation", "schema_submit_ms"),
    ("validation", "empty_submit_ms"),
)


@pytest.mark.slow  # about 80 s: every section of the benchmark, briefly
@pytest.mark.timeout(300)
def test_quick_run_on_sqlite_reports_no_errors() -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--db", "sqlite", "--json-only"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    lines = finished.stdout.strip().splitlines()
    assert lines, f"no output; stderr:\n{finished.stderr[-3000:]}"
    result = json.loads(lines[-1])
    assert result["errors"] == 0, json.dumps(result, indent=1)[-3000:]
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert set(result["databases"]) == {"sqlite"}
    assert set(result["databases"]["sqlite"]) == SECTIONS
    assert result["floor"]["errors"] == 0
    assert result["targets"], "no target was evaluated"
    disconnect = result["databases"]["sqlite"]["disconnect"]
    for metric in DISCONNECT_METRICS:
        assert disconnect[metric]["n"] >= 1, (metric, disconnect[metric])
    calls = result["databases"]["sqlite"]["calls"]
    for part, metric in CALLS_METRICS:
        assert calls[part][metric]["n"] >= 1, (part, metric, calls[part])
    assert calls["validation"]["check_payload"]["schema_us"]["p50"] > 0
    providers = result["databases"]["sqlite"]["providers"]
    for metric in ("hit_ms", "miss_ms"):
        assert providers[metric]["n"] >= 1, (metric, providers[metric])
    assert providers["hot_key"]["reads_per_s"] > 0
    crossprocess = result["databases"]["sqlite"]["crossprocess"]
    if "skipped" not in crossprocess["redis"]:  # no Redis here: nothing to cross
        assert crossprocess["redis"]["dispatch"]["to_claim_ms"]["n"] >= 1
    batch = result["databases"]["sqlite"]["batch"]
    assert batch["tasks"] == 200, batch
    assert batch["single"]["tasks"] == 20, batch
    connections = result["databases"]["sqlite"]["connections"]
    assert [c["connections"] for c in connections["counts"]] == [50, 100]
    for count in connections["counts"]:
        assert count["workers"] + count["observers"] == count["connections"], count
        assert count["fanout"]["rounds"] == 3, count
        assert count["kib_per_connection"] is not None, count
    idle = result["databases"]["sqlite"]["idle"]
    assert [level["workers"] for level in idle["levels"]] == [20, 50], idle
    for level in idle["levels"]:
        assert level["statements_per_s"] is not None, level
