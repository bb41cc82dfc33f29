"""The JSON Schemas of the protocol are frozen in a snapshot.

A renamed or retyped field breaks every other implementation, so it must show up
here as a failing test. When a change is meant, regenerate the snapshot with
`python -m joblib_protocol schema > tests/protocol/snapshots/schemas.json`.
"""

import json
import subprocess
import sys
from pathlib import Path

from joblib_protocol import json_schemas

SNAPSHOT = Path(__file__).parent / "snapshots" / "schemas.json"


def test_json_schemas_match_the_snapshot() -> None:
    expected = json.loads(SNAPSHOT.read_text())
    assert json_schemas() == expected


def test_event_names_in_the_snapshot() -> None:
    assert sorted(json_schemas()["events"]) == [
        "jobs_invalidate",
        "join_job_room",
        "join_provider_room",
        "join_room",
        "leave_job_room",
        "leave_provider_room",
        "leave_room",
        "provider_request",
        "provider_result_ready",
        "providers_invalidate",
        "task_available",
        "task_cancelled",
        "task_progress_event",
        "task_status_event",
    ]


def test_wire_field_names_in_the_snapshot() -> None:
    rest = json_schemas()["rest"]
    assert "schema" in rest["JobRegisterRequest"]["properties"]
    assert "schema_" not in rest["JobResponse"]["properties"]
    assert "schema" in rest["ProviderRegisterRequest"]["properties"]
    assert "schema_" not in rest["ProviderResponse"]["properties"]
    assert rest["TaskClaimRequest"]["required"] == ["worker_id"]
    assert set(json_schemas()["events"]["join_job_room"]["required"]) == {
        "job_name",
        "worker_id",
    }


def test_join_acks_in_the_snapshot() -> None:
    acks = json_schemas()["acks"]
    assert set(acks) == {"join_job_room", "join_provider_room"}
    assert set(acks["join_job_room"]["properties"]) == {"ok", "heartbeat_seconds"}


def test_schema_command_prints_the_snapshot() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "joblib_protocol", "schema"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout) == json.loads(SNAPSHOT.read_text())
