"""The joblib wire calls the drivers make, each under a route label for the stats.

Plain REST over one `Session`, exactly as PROTOCOL.md describes it; nothing here
imports joblib_server. A failed call returns None and is counted as an error.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bench.client import Session

API = "/v1/joblib"
CATEGORY = "modifiers"
ROOM = "bench"

Task = dict[str, Any]


def server_time(stamp: str) -> float:
    """A server timestamp (ISO 8601, UTC) as seconds since the epoch."""
    return datetime.fromisoformat(stamp).timestamp()


class JoblibApi:
    """REST calls of one actor (a worker, a submitter or an observer)."""

    def __init__(self, session: Session, room: str = ROOM) -> None:
        self.session = session
        self.room = room

    async def create_worker(self) -> str | None:
        """`POST /workers`: a new worker id."""
        response = await self.session.call(
            "create_worker", "POST", f"{API}/workers", expect=(201,)
        )
        return None if response is None else str(response.json()["id"])

    async def register(
        self,
        name: str,
        worker_id: str,
        on_disconnect: dict[str, Any] | None = None,
        schema: dict[str, Any] | None = None,
    ) -> str | None:
        """`PUT /rooms/{room}/jobs`: link the worker to job `name`; its full name.

        `on_disconnect` sets the job's disconnect policy (ours); `schema` its JSON
        Schema (default `{"type": "object"}`).
        """
        body: dict[str, Any] = {
            "category": CATEGORY,
            "name": name,
            "schema": {"type": "object"} if schema is None else schema,
            "worker_id": worker_id,
        }
        if on_disconnect is not None:
            body["on_disconnect"] = on_disconnect
        response = await self.session.call(
            "register",
            "PUT",
            f"{API}/rooms/{self.room}/jobs",
            json=body,
            expect=(200, 201),
        )
        return None if response is None else str(response.json()["full_name"])

    async def submit(
        self, full_name: str, payload: dict[str, Any], route: str = "submit"
    ) -> Task | None:
        """`POST /rooms/{room}/tasks/{full_name}`: the pending task.

        `route` is the label its latency is recorded under.
        """
        response = await self.session.call(
            route,
            "POST",
            f"{API}/rooms/{self.room}/tasks/{full_name}",
            json={"payload": payload},
            expect=(202,),
        )
        return None if response is None else response.json()

    async def claim(self, worker_id: str, wait: float | None = None) -> Task | None:
        """`POST /tasks/claim` with `start`: the running task, or None when none.

        With `wait`, the claim is parked (`Prefer: wait=N`) until a task comes.
        """
        extra: dict[str, Any] = {}
        if wait is not None:
            extra = {"headers": {"Prefer": f"wait={wait:g}"}, "timeout": wait + 10}
        response = await self.session.call(
            "claim",
            "POST",
            f"{API}/tasks/claim",
            json={"worker_id": worker_id, "start": True},
            **extra,
        )
        if response is None:
            return None
        if wait is not None and "preference-applied" not in response.headers:
            self.session.error("claim: no Preference-Applied header")
        return response.json()["task"]

    async def complete(self, task_id: str) -> Task | None:
        """`PATCH /tasks/{id}` to completed: the finished task."""
        response = await self.session.call(
            "complete", "PATCH", f"{API}/tasks/{task_id}", json={"status": "completed"}
        )
        return None if response is None else response.json()

    async def cancel(self, task_id: str) -> Task | None:
        """`PATCH /tasks/{id}` to cancelled, as its submitter: the cancelled task."""
        response = await self.session.call(
            "cancel", "PATCH", f"{API}/tasks/{task_id}", json={"status": "cancelled"}
        )
        return None if response is None else response.json()

    async def wait_task(self, task_id: str, wait: float) -> Task | None:
        """`GET /tasks/{id}` with `Prefer: wait=N`: the task once terminal."""
        response = await self.session.call(
            "long_poll",
            "GET",
            f"{API}/tasks/{task_id}",
            headers={"Prefer": f"wait={wait:g}"},
            timeout=wait + 10,
        )
        if response is None:
            return None
        if "preference-applied" not in response.headers:
            self.session.error("long_poll: no Preference-Applied header")
        return response.json()

    async def delete_worker(self, worker_id: str) -> bool:
        """`DELETE /workers/{id}`: whether the server removed it."""
        response = await self.session.call(
            "delete_worker", "DELETE", f"{API}/workers/{worker_id}", expect=(204,)
        )
        return response is not None

    async def worker_exists(self, worker_id: str) -> bool | None:
        """`PATCH /workers/{id}` (a heartbeat): False once the worker is gone."""
        response = await self.session.call(
            "heartbeat", "PATCH", f"{API}/workers/{worker_id}", expect=(200, 404)
        )
        return None if response is None else response.status_code == 200
