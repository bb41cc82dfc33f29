import httpx
import pytest

pytestmark = pytest.mark.anyio


async def test_register_submit_claim_complete(
    alice: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    r = await admin.put(
        "/rooms/@global/jobs",
        json={"category": "modifiers", "name": "Rotate", "schema": {"type": "object"}},
    )
    assert r.status_code == 201, r.text
    job = r.json()
    worker_id = job["worker_id"]
    assert job["full_name"] == "@global:modifiers:Rotate"
    r = await alice.post(
        "/rooms/room1/tasks/@global:modifiers:Rotate", json={"payload": {"a": 1}}
    )
    assert r.status_code == 202, r.text
    task = r.json()
    assert task["queue_position"] == 1
    assert r.headers["location"] == f"/v1/joblib/tasks/{task['id']}"
    r = await admin.post("/tasks/claim", json={"worker_id": worker_id})
    assert r.status_code == 200, r.text
    assert r.json()["task"]["id"] == task["id"]
    r = await admin.patch(f"/tasks/{task['id']}", json={"status": "running"})
    assert r.status_code == 200, r.text
    r = await admin.patch(f"/tasks/{task['id']}", json={"status": "completed"})
    assert r.status_code == 200, r.text
    assert r.json()["completed_at"]
    r = await admin.delete(f"/workers/{worker_id}")
    assert r.status_code == 204
    r = await alice.get("/rooms/room1/jobs")
    assert r.json()["total"] == 0
